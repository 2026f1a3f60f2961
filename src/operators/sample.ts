/**
 * What flows between operators: batches of samples of one partition, in offset order.
 * Every input offset stays in the stream as a sample with an outcome, so the sink can account
 * for each one exactly once (a row, a dead letter or a counted filter decision).
 */
import type { Span } from '@opentelemetry/api';
import type { Detection, ImagePreprocess, PatchGrid, PreparedImage } from '../models/types';
import type { Coord, CrawlEvent, DeadReason, FilterReason, Tag } from '../records';
import { InterruptedError, TransientError } from '../util/retry';

export type Outcome =
  | { kind: 'keep' }
  | { kind: 'dead'; reason: DeadReason; message: string; stage?: string }
  | { kind: 'filtered'; reason: FilterReason; stage?: string };

/** The decoded image, shared by every later stage (decode once). */
export interface DecodedImage {
  format: string;
  width: number;
  height: number;
  /** sha256, hex, of the decoded pixels (images decoded at full size) or of the encoded bytes (decodeImage) */
  contentHash: string;
  /** 64-bit difference hash (dHash) of the decoded pixels, 16 hex chars: near duplicates differ in few bits */
  dhash: string;
  /** 16x16 RGB thumbnail (row-major, 768 bytes) for near-duplicate search, when decodeImage made one */
  thumb?: Uint8Array;
  /** the bytes to store and their mime type */
  bytes: Buffer;
  mime: string;
  /** the bundle's model inputs, prepared from the stored bytes (decodeImage); null once the model stages are done */
  inputs: ModelInputs | null;
}

/** Each model's input for one image, made by that model's own preprocessing (models/preprocess `prepareImage`). */
export interface ModelInputs {
  vision: PreparedImage;
  detector: PreparedImage | null;
}

/** What the chain's models need prepared: the bundle's image encoder's and detector's preprocessing. */
export interface ModelNeeds {
  vision: ImagePreprocess;
  detector: ImagePreprocess | null;
}

/** An edge's verdict on a record it could not turn into an event, and what of it could be read. */
export interface Rejection {
  reason: DeadReason;
  message: string;
  id?: string | null;
  url?: string | null;
  image_url?: string | null;
}

export interface Sample {
  coord: Coord;
  /** the record as it arrived (for dead letters) */
  raw: Buffer | null;
  /** set when an edge already knows the record is unreadable, with the fields it could read */
  rejected: Rejection | null;
  event: CrawlEvent | null;
  image: DecodedImage | null;
  /** caption after validation and enrichment; the raw one stays in event.caption */
  caption: string;
  /** what the one model pass (embed) found; reused by every later stage */
  model: {
    imageEmbedding: Float32Array;
    textEmbedding: Float32Array;
    saliency: Float32Array;
    grid: PatchGrid;
  } | null;
  detections: Detection[] | null;
  /** the patches kept (choosePatches, once, after embed): tag encodes them, condense records them */
  patches: { kept: number[]; grid: PatchGrid } | null;
  /** the bundle version that produced `model`, recorded on the row */
  modelVersion: string | null;
  tags: Tag[] | null;
  /** the patches condense kept, and what blanking the rest saved */
  condensed: { kept: number[]; grid: PatchGrid; keepRatio: number; bytesBefore: number; bytesAfter: number } | null;
  flags: string[];
  /** per-sample scores by name (clip_score, ...), each written to the row */
  scores: Record<string, number>;
  /** the mixed score sampling uses, and which weights produced it */
  mixed: { score: number; weightsVersion: string } | null;
  copies: number;
  outcome: Outcome;
  /** the event's `process` span, when tracing is on and the event is sampled (telemetry/event-trace.ts) */
  trace: Span | null;
}

/** Samples of one partition, contiguous in offset order. */
export interface Batch {
  topic: string;
  partition: number;
  samples: Sample[];
  /** set by the curator: the partition's assignment generation the batch belongs to */
  epoch?: number;
  /** the model bundle version the batch is processed with (set before embed; hot reloads switch between batches) */
  modelVersion?: string;
}

export function newSample(coord: Coord, raw: Buffer | null, rejected: Sample['rejected'] = null, trace: Span | null = null): Sample {
  return {
    coord,
    raw,
    rejected,
    event: null,
    image: null,
    caption: '',
    model: null,
    detections: null,
    patches: null,
    modelVersion: null,
    tags: null,
    condensed: null,
    flags: [],
    scores: {},
    mixed: null,
    copies: 1,
    outcome: { kind: 'keep' },
    trace,
  };
}

export const isKept = (s: Sample): boolean => s.outcome.kind === 'keep';

/** The sample becomes a dead letter (records.ts DEAD_REASONS) with a one-line message. */
export function deadLetter(s: Sample, reason: DeadReason, message: string): void {
  s.outcome = { kind: 'dead', reason, message };
}

/** The sample is left out on purpose (records.ts FILTER_REASONS), counted in the commit record. */
export function filterOut(s: Sample, reason: FilterReason): void {
  s.outcome = { kind: 'filtered', reason };
}

export const partitionKey = (topic: string, partition: number): string => `${topic}\u0000${partition}`;

/**
 * Runs `fn` on the kept samples of a batch with bounded concurrency, in place.
 * An exception from `fn` dead-letters that sample with `reason` instead of failing the batch, unless it is a
 * service's failure (TransientError) or a stop (InterruptedError): the record is not at fault, so the batch
 * fails and its offsets stay uncommitted. Between samples the event loop gets a turn every few milliseconds,
 * so signals and heartbeats are heard while a large batch is worked on.
 */
export async function forEachKept(
  batch: Batch,
  concurrency: number,
  reason: DeadReason,
  fn: (s: Sample) => Promise<void> | void,
): Promise<Batch> {
  const todo = batch.samples.filter(isKept);
  let next = 0;
  let turn = performance.now();
  const worker = async (): Promise<void> => {
    while (next < todo.length) {
      const s = todo[next++];
      try {
        await fn(s);
      } catch (e) {
        if (e instanceof TransientError || e instanceof InterruptedError) throw e;
        deadLetter(s, reason, oneLine(e));
      }
      if (performance.now() - turn > 20) {
        await new Promise<void>((r) => setImmediate(r));
        turn = performance.now();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, todo.length) }, worker));
  return batch;
}

export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/\s+/g, ' ').trim().slice(0, 500);
}

/**
 * Releases what the sink will not read once a sample has been through the chain: an open shard holds
 * its samples until it commits (up to shard.maxRows rows, with every filtered and dead sample between),
 * so without this memory would grow with the shard. Rows keep their stored bytes, fields and scores;
 * dead letters keep the original record; filtered samples keep only their offset and reason.
 */
export function releaseForSink(s: Sample): void {
  if (s.event) s.event.image = null;
  if (s.image) s.image.thumb = undefined;
  s.detections = null;
  if (s.outcome.kind === 'keep') {
    s.raw = null;
    return;
  }
  s.image = null;
  s.model = null;
  s.tags = null;
  s.condensed = null;
  s.patches = null;
  if (s.outcome.kind === 'filtered') s.raw = null;
}
