/**
 * `squeeze train`: the trainer subscriber (docs/TRAINER.md). It follows the committed shards of a curated
 * output directory (follow.ts), and continues contrastive (InfoNCE) training of the built-in CLIP with the
 * project's own trainer pieces (tiny-clip.ts: forward, backward, clipLoss, Adam; train.ts: tokenizer and
 * preprocessing). Per step:
 *
 * - a batch of `batch` samples: fresh copies from the shards in the sequence's order, plus a share drawn from
 *   a bounded replay buffer of older samples (reservoir sampling), so the model does not forget;
 * - soft-cap copies never share a batch: a sample with 3 copies is seen in 3 different batches (a copy whose
 *   sample is already in the batch waits for the next one);
 * - FLIP: only the patches the curator kept (`kept_patches`) go through the image tower, so a step at keep
 *   0.5 costs about half of one at keep 1;
 * - all randomness comes from (seed, step), and the checkpoint holds the weights, Adam's state, the shard
 *   cursor, the pending copies and the replay buffer: a run killed at any moment and restarted reaches
 *   byte-identical weights at the same step.
 *
 * Every `evalEvery` steps it evaluates on a held-out set (evaluate.ts); every `publishEvery` steps it writes
 * a new bundle version and announces it (the CLI puts it on the control topic); with feedback on it fits
 * mixing weights from per-sample gradient alignment (feedback.ts) and announces those too.
 */
import { hashSeed, Rng } from '../gen/rng';
import { sleep } from '../util/sleep';
import {
  Adam,
  clipLoss,
  gatherPatches,
  initParams,
  imageBackward,
  imageForwardStem,
  imageStem,
  patchCount,
  patchDim,
  type StemOutput,
  textBackward,
  textForward,
  type TinyClipParams,
  view,
} from './clip/tiny-clip';
import { MAX_LOGIT_SCALE, preprocessBuiltin, tokenizeAll } from './clip/train';
import { BundleError, type TrainableBundle, loadTrainable, publishBundle } from './builtin-model';
import { latestCheckpoint, writeCheckpoint } from './checkpoint';
import { type EvalResult, evaluate, type HeldOut, heldOutSet } from './evaluate';
import { type FeedbackState, fitWeights, initialFeedback, observe } from './feedback';
import { type CommittedShard, type Cursor, type ShardSource, advance, dirSource } from './follow';
import { posix } from 'node:path';
import { SpanKind, type SpanContext } from '@opentelemetry/api';
import { contextOf, eventChild, eventTracingOn, linksTo, nowMs, startLinkedSpan, traceparentOf } from '../telemetry/event-trace';

export interface TrainerOptions {
  /** the curated output directory whose committed shards are followed */
  from: string;
  /** where the shards come from instead of the directory `from` (an object store: object-store-source.ts) */
  source?: ShardSource;
  /** checkpoint directory (created) */
  checkpoints: string;
  /** the bundle training starts from when there is no checkpoint */
  bundle: string;
  seed: number;
  batch: number;
  lr: number;
  /** share of each batch drawn from the replay buffer once it holds enough (default 0.25) */
  replayShare: number;
  /** samples the replay buffer holds (default 2048) */
  replayCapacity: number;
  checkpointEvery: number;
  evalEvery: number;
  /** 0: never */
  publishEvery: number;
  publishDir: string;
  /** stop after this many steps in total (null: at the end of the committed shards, or never with follow) */
  until: number | null;
  follow: boolean;
  pollMs: number;
  /** feed only the kept patches (default true) */
  flip: boolean;
  heldOut: number;
  /** fit and announce mixing weights every this many steps (0: off) */
  feedbackEvery: number;
  /** mixing weights the feedback starts from */
  mixWeights: Record<string, number>;
  /** passes over the committed sequence before the end of input (default 1; with --follow only the first ends) */
  passes?: number;
  /** start from the bundle's weights (default) or from a fresh initialisation with the bundle's input standardisation */
  init?: 'bundle' | 'scratch';
  /** every this many steps one step feeds every patch (FLIP's unmasked tuning, spread out); 0: never */
  fullEvery?: number;
  /** rows to train on (default all): e.g. a CLIP-score threshold for a sieving baseline */
  rowFilter?: (row: Record<string, unknown>) => boolean;
  onPublish?: (p: { version: string; dir: string; step: number }) => Promise<void> | void;
  onMixWeights?: (w: { weights: Record<string, number>; bias: number; step: number; correlation: Record<string, number> }) => Promise<void> | void;
  onEval?: (r: EvalResult) => void;
  onStep?: (s: StepInfo) => void;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export const TRAINER_DEFAULTS = {
  seed: 7,
  batch: 32,
  lr: 0.0005,
  replayShare: 0.25,
  replayCapacity: 2048,
  checkpointEvery: 10,
  evalEvery: 50,
  publishEvery: 0,
  until: null as number | null,
  follow: false,
  pollMs: 2000,
  flip: true,
  fullEvery: 5,
  heldOut: 256,
  feedbackEvery: 0,
  mixWeights: { clip_score: 1 } as Record<string, number>,
};

export interface StepInfo {
  step: number;
  loss: number;
  top1: number;
  /** image tokens (patches) through the tower in this step */
  tokens: number;
  fresh: number;
  replayed: number;
  ms: number;
  /** sample ids of the batch: the fresh ones first */
  ids: string[];
}

/** A copy of one curated row, by where it lives: what pending lists and the replay buffer hold. */
interface Ref {
  shard: string;
  row: number;
  copy: number;
}

interface RowData {
  id: string;
  stem: StemOutput;
  keep: number[];
  ids: Int32Array;
  mask: Float32Array;
  features: Record<string, number>;
  copies: number;
  /** the event's trace context from the commit record, when the curator traced it */
  trace: SpanContext | null;
}

/**
 * Tracing (docs/TRACING.md): a step span that links to the sampled events among the batch's fresh samples,
 * and in each of those events' traces a `squeeze.train` span that links back to the step.
 */
let lastStep: string | null = null;

/** The traceparent of the last traced step span (control events the trainer publishes carry it). */
export const lastStepTrace = (): string | null => lastStep;

function traceStep(batch: RowData[], freshN: number, step: number, loss: number, t0: number): void {
  if (!eventTracingOn()) return;
  const traced = batch.slice(0, freshN).filter((d) => d.trace);
  if (traced.length === 0) return;
  const start = performance.timeOrigin + t0;
  const attrs = { 'squeeze.train.step': step, 'squeeze.train.loss': loss, 'squeeze.train.batch': batch.length };
  const span = startLinkedSpan('train step', linksTo(traced.map((d) => d.trace)), attrs, SpanKind.CONSUMER, start);
  const end = nowMs();
  const back = span.isRecording() ? [{ context: span.spanContext() }] : undefined;
  if (span.isRecording()) lastStep = traceparentOf(span.spanContext());
  for (const d of traced) eventChild(d.trace!, 'squeeze.train', start, end, { ...attrs, 'squeeze.event.id': d.id }, back);
  span.end(end);
}

interface TrainerState {
  base: string;
  paramCount: number;
  seed: number;
  cursor: Cursor;
  pending: Ref[];
  replay: Ref[];
  replaySeen: number;
  tokens: number;
  samples: number;
  evals: EvalResult[];
  losses: { step: number; loss: number }[];
  published: { step: number; version: string }[];
  feedback: FeedbackState | null;
  skipped: { shard: string; reason: string }[];
  /** passes completed over the committed sequence */
  pass?: number;
}

export interface TrainSummary {
  step: number;
  steps: number;
  state: TrainerState;
  params: TinyClipParams;
  stopped: 'until' | 'end' | 'signal';
}

export async function runTrainer(opts: TrainerOptions): Promise<TrainSummary> {
  const log = opts.log ?? (() => undefined);
  const base: TrainableBundle = await loadTrainable(opts.bundle);
  const params = base.params;
  if (opts.init === 'scratch') {
    const fresh = initParams(params.config, hashSeed(opts.seed, 0x5c7a));
    for (const g of ['img.in_shift', 'img.in_scale'] as const) view(fresh, g).set(view(params, g));
    params.data.set(fresh.data);
  }
  const c = params.config;
  const P = patchCount(c);
  const K = patchDim(c);
  const adam = new Adam(params.data.length);
  const decayMask = new Uint8Array(params.data.length);
  for (const g of ['img.patch_w', 'img.w2', 'img.proj', 'txt.tok', 'txt.proj'] as const) decayMask.fill(1, params.layout[g].offset, params.layout[g].offset + params.layout[g].size);
  let step = 0;
  let state: TrainerState = {
    base: base.json.version,
    paramCount: params.data.length,
    seed: opts.seed,
    cursor: {},
    pending: [],
    replay: [],
    replaySeen: 0,
    tokens: 0,
    samples: 0,
    evals: [],
    losses: [],
    published: [],
    feedback: opts.feedbackEvery > 0 ? initialFeedback(opts.mixWeights) : null,
    skipped: [],
  };
  const ckpt = await latestCheckpoint<TrainerState>(opts.checkpoints, (f, why) => log(`skipping checkpoint ${f}: ${why}`));
  if (ckpt) {
    if (ckpt.state.paramCount !== params.data.length || ckpt.blobs.params.length !== params.data.length) {
      throw new BundleError(`checkpoint ${ckpt.file} holds ${ckpt.blobs.params.length} parameters of ${ckpt.state.base}; bundle ${base.json.version} has ${params.data.length}: use another --checkpoints directory`);
    }
    params.data.set(ckpt.blobs.params);
    adam.restore({ t: ckpt.step, m: ckpt.blobs.adamM, v: ckpt.blobs.adamV });
    step = ckpt.step;
    state = ckpt.state;
    if (state.feedback === null && opts.feedbackEvery > 0) state.feedback = initialFeedback(opts.mixWeights);
    log(`resumed from ${ckpt.file} at step ${step}`);
  }
  const startStep = step;

  // rows of the shards that pending copies or the replay buffer refer to
  const rows = new Map<string, (RowData | null)[]>();
  /** sampled events' trace contexts by shard and source offset (commit records' `traces`) */
  const traces = new Map<string, Record<string, string>>();
  const warned = new Set<string>();
  const source = opts.source ?? dirSource(opts.from);
  const loadShard = async (rel: string): Promise<(RowData | null)[]> => {
    const have = rows.get(rel);
    if (have) return have;
    const data = await readShard(rel);
    rows.set(rel, data);
    return data;
  };
  const readShard = async (rel: string): Promise<(RowData | null)[]> => {
    let raw: Record<string, unknown>[];
    try {
      raw = await source.readRows(rel);
    } catch (e) {
      throw new ShardError(rel, `unreadable shard: ${firstLine(e)}`);
    }
    const first = raw[0];
    if (first && (!('image' in first) || !('caption' in first) || !('copies' in first) || !('id' in first))) {
      throw new ShardError(rel, 'not a curated shard (needs id, image, caption, copies)');
    }
    const out: (RowData | null)[] = [];
    for (const r of raw) {
      if (opts.rowFilter && !opts.rowFilter(r)) {
        out.push(null);
        continue;
      }
      try {
        const pixels = await preprocessBuiltin(r.image as Buffer);
        const stem = imageStem(c, pixels, 1);
        const tok = tokenizeAll([String(r.caption ?? '')], base.vocab, c.context);
        const kept = r.kept_patches as number[] | null;
        const sameGrid = r.grid_rows === Math.sqrt(P) && r.grid_cols === Math.sqrt(P);
        if (kept && !sameGrid && !warned.has('grid')) {
          warned.add('grid');
          log(`shard ${rel}: kept_patches are on a ${r.grid_rows}x${r.grid_cols} grid, the model's is ${Math.sqrt(P)}x${Math.sqrt(P)}: feeding every patch`);
        }
        const keep = opts.flip && kept && sameGrid && kept.length > 0 ? [...kept] : Array.from({ length: P }, (_, j) => j);
        const scores = (r.scores ?? {}) as Record<string, unknown>;
        const features: Record<string, number> = {};
        for (const [k, v] of Object.entries(scores)) if (typeof v === 'number' && Number.isFinite(v)) features[k] = v;
        const copies = Math.max(0, Math.floor(Number(r.copies ?? 1)) || 0);
        const tp = traces.get(rel)?.[String(r.source_offset)];
        out.push({ id: String(r.id), stem, keep, ids: tok.ids, mask: tok.mask, features, copies, trace: tp ? contextOf(tp) : null });
      } catch (e) {
        if (!warned.has(rel)) log(`shard ${rel}: skipping a row that does not decode (${firstLine(e)})`);
        warned.add(rel);
        out.push(null);
      }
    }
    return out;
  };
  // copies of a shard in pass order: copy 0 of every row, then copy 1 of rows with 2 or more, ...
  const copiesOf = (rel: string): Ref[] => {
    const copies = (rows.get(rel) ?? []).map((d) => d?.copies ?? 0);
    const refs: Ref[] = [];
    for (let pass = 0; pass < Math.max(0, ...copies); pass++) copies.forEach((k, row) => k > pass && refs.push({ shard: rel, row, copy: pass }));
    return refs;
  };
  // re-read what a restored checkpoint refers to
  for (const ref of [...state.pending, ...state.replay]) {
    try {
      await loadShard(ref.shard);
    } catch (e) {
      log(`${(e as Error).message}: its copies are dropped`);
      rows.set(ref.shard, []);
    }
  }
  const dataOf = (ref: Ref): RowData | null => rows.get(ref.shard)?.[ref.row] ?? null;

  const held: HeldOut | null = opts.evalEvery > 0 ? await heldOutSet(params, base.vocab, opts.heldOut, opts.seed) : null;
  if (held && opts.evalEvery > 0 && step === 0 && state.evals.length === 0) {
    const r = evaluate(params, base.vocab, held, 0);
    state.evals.push(r);
    opts.onEval?.(r);
  }
  let queue: CommittedShard[] = [];
  let ended = false;
  /** ingests the next committed shard into pending; false when there is none now */
  const ingest = async (): Promise<boolean> => {
    if (queue.length === 0) queue = await source.poll(state.cursor, (f, why) => log(`skipping ${f}: ${why}`));
    if (queue.length === 0 && (state.pass ?? 0) + 1 < (opts.passes ?? 1)) {
      // the next pass over the same committed sequence
      state.pass = (state.pass ?? 0) + 1;
      state.cursor = {};
      queue = await source.poll(state.cursor);
      log(`pass ${state.pass + 1} of ${opts.passes}`);
    }
    const next = queue.shift();
    if (!next) return false;
    advance(state.cursor, next.record);
    if (!next.path || !next.record.shard) return true;
    const rel = posix.normalize(next.record.shard);
    if (next.record.traces) traces.set(rel, next.record.traces);
    try {
      await loadShard(rel);
      state.pending.push(...copiesOf(rel));
    } catch (e) {
      const reason = e instanceof ShardError ? e.reason : firstLine(e);
      log(`skipping shard ${rel}: ${reason}`);
      state.skipped.push({ shard: rel, reason });
      if (state.skipped.length > 100) state.skipped.shift();
    }
    return true;
  };

  const B = opts.batch;
  const replayWanted = Math.floor(B * opts.replayShare);
  const save = async () => {
    const s = adam.snapshot();
    await writeCheckpoint(opts.checkpoints, step, state, { params: Float32Array.from(params.data), adamM: s.m, adamV: s.v });
  };
  const gc = () => {
    const used = new Set([...state.pending, ...state.replay].map((r) => r.shard));
    for (const k of rows.keys()) if (!used.has(k)) rows.delete(k);
    for (const k of traces.keys()) if (!used.has(k)) traces.delete(k);
  };

  let stopped: TrainSummary['stopped'] = 'end';
  while (true) {
    if (opts.until !== null && step >= opts.until) {
      stopped = 'until';
      break;
    }
    if (opts.signal?.aborted) {
      stopped = 'signal';
      break;
    }
    const replayN = Math.min(replayWanted, Math.floor(state.replay.length / 2));
    const freshN = B - replayN;
    // enough distinct fresh samples for a batch?
    while (distinctIds(state.pending, dataOf) < freshN && !ended) {
      if (!(await ingest())) {
        if (!opts.follow) ended = true;
        else {
          await sleep(opts.pollMs, opts.signal).catch(() => undefined);
          if (opts.signal?.aborted) break;
        }
      }
    }
    if (opts.signal?.aborted) {
      stopped = 'signal';
      break;
    }
    if (distinctIds(state.pending, dataOf) < freshN) break;

    const t0 = performance.now();
    const rng = new Rng(hashSeed(opts.seed, step, 0x7a1e));
    const inBatch = new Set<string>();
    const batch: RowData[] = [];
    const fresh: number[] = [];
    for (let i = 0; i < state.pending.length && batch.length < freshN; i++) {
      const d = dataOf(state.pending[i]!);
      if (!d || inBatch.has(d.id)) continue;
      inBatch.add(d.id);
      batch.push(d);
      fresh.push(i);
    }
    const usedRefs = fresh.map((i) => state.pending[i]!);
    const freshSet = new Set(fresh);
    state.pending = state.pending.filter((_, i) => !freshSet.has(i));
    let replayed = 0;
    for (let tries = 0; replayed < replayN && tries < replayN * 4; tries++) {
      const d = dataOf(state.replay[rng.int(0, state.replay.length - 1)]!);
      if (!d || inBatch.has(d.id)) continue;
      inBatch.add(d.id);
      batch.push(d);
      replayed++;
    }
    const n = batch.length;
    // the stems, gathered to the kept patches (FLIP)
    const full: StemOutput = { X: new Float32Array(n * P * K), prior: new Float32Array(n * P) };
    batch.forEach((d, i) => {
      full.X.set(d.stem.X, i * P * K);
      full.prior.set(d.stem.prior, i * P);
    });
    // FLIP with unmasked steps: every fullEvery-th step sees every patch, so attention pooling also learns to
    // weigh the patches condensation drops, which held-out and curation-time images contain
    const unmasked = (opts.fullEvery ?? 0) > 0 && (step + 1) % opts.fullEvery! === 0;
    const allPatches = Array.from({ length: P }, (_, j) => j);
    const keeps = batch.map((d) => (unmasked ? allPatches : d.keep));
    const g = gatherPatches(c, full, n, keeps);
    const ids = new Int32Array(n * c.context);
    const mask = new Float32Array(n * c.context);
    batch.forEach((d, i) => {
      ids.set(d.ids, i * c.context);
      mask.set(d.mask, i * c.context);
    });
    const img = imageForwardStem(params, g.stem, n, g.mask);
    const txt = textForward(params, ids, mask, n);
    const l = clipLoss(img.embeds, txt.embeds, n, c.embed, view(params, 'logit_scale')[0]!);
    const grad = new Float32Array(params.data.length);
    imageBackward(params, img, l.dImage, grad);
    textBackward(params, txt, l.dText, grad);
    view(params, 'logit_scale', grad)[0] += l.dLogitScale;

    if (state.feedback) {
      const help = pairHelp(img.embeds, txt.embeds, n, c.embed);
      for (let i = 0; i < fresh.length; i++) observe(state.feedback, { features: batch[i]!.features, help: help[i]! });
    }

    adam.step(params.data, grad, opts.lr, 1e-4, decayMask);
    const ls = view(params, 'logit_scale');
    if (ls[0]! > MAX_LOGIT_SCALE) ls[0] = MAX_LOGIT_SCALE;
    step++;
    const tokens = keeps.reduce((a, k) => a + k.length, 0);
    state.tokens += tokens;
    state.samples += n;
    // the fresh copies join the replay buffer (reservoir sampling over every fresh copy seen)
    for (const ref of usedRefs) {
      state.replaySeen++;
      if (state.replay.length < opts.replayCapacity) state.replay.push(ref);
      else {
        const j = rng.int(0, state.replaySeen - 1);
        if (j < opts.replayCapacity) state.replay[j] = ref;
      }
    }
    state.losses.push({ step, loss: round(l.loss) });
    if (state.losses.length > 2000) state.losses.splice(0, state.losses.length - 2000);
    traceStep(batch, fresh.length, step, l.loss, t0);
    opts.onStep?.({ step, loss: l.loss, top1: l.top1, tokens, fresh: fresh.length, replayed, ms: performance.now() - t0, ids: batch.map((d) => d.id) });

    if (held && opts.evalEvery > 0 && step % opts.evalEvery === 0) {
      const r = evaluate(params, base.vocab, held, step);
      state.evals.push(r);
      opts.onEval?.(r);
    }
    if (state.feedback && step % opts.feedbackEvery === 0) {
      const fit = fitWeights(state.feedback);
      if (fit) await opts.onMixWeights?.({ weights: fit.weights, bias: state.feedback.bias, step, correlation: fit.correlation });
    }
    if (opts.publishEvery > 0 && step % opts.publishEvery === 0) {
      const p = await publishBundle(opts.publishDir, base, params, step, { samples: state.samples, tokens: state.tokens, eval: state.evals[state.evals.length - 1] ?? null });
      state.published.push({ step, version: p.version });
      await opts.onPublish?.({ ...p, step });
    }
    if (step % opts.checkpointEvery === 0) {
      gc();
      await save();
    }
  }
  if (step !== startStep && step % opts.checkpointEvery !== 0) await save();
  return { step, steps: step - startStep, state, params, stopped };
}

class ShardError extends Error {
  constructor(readonly shard: string, readonly reason: string) {
    super(`shard ${shard}: ${reason}`);
  }
}

function distinctIds(pending: Ref[], dataOf: (r: Ref) => RowData | null): number {
  const ids = new Set<string>();
  for (const r of pending) {
    const d = dataOf(r);
    if (d) ids.add(d.id);
  }
  return ids.size;
}

/**
 * The feedback scores pairs at a tempered logit scale (ln 10, CLIP's initial one) rather than the trained one
 * (ln 100), where one wrong pair's loss saturates and dwarfs every other difference.
 */
const FEEDBACK_LOGIT_SCALE = Math.log(10);

const firstLine = (e: unknown): string => String((e as Error)?.message ?? e).split('\n')[0]!;

const round = (x: number) => Math.round(x * 1e6) / 1e6;


/**
 * How much each pair of a batch helps: minus its own symmetric contrastive loss under the current model at a
 * tempered logit scale (the batch as negatives). A pair the model, trained on the held-out-validated stream,
 * cannot explain (a wrong caption, a blank image) teaches it little but noise: the reference-model idea of
 * RHO-LOSS and JEST. (Per-sample gradient alignment with a held-out batch, restricted to the projection
 * matrices, was tried first: on the planted test its correlation with the planted feature was -0.01 to
 * -0.02, no signal.)
 */
export function pairHelp(img: ArrayLike<number>, txt: ArrayLike<number>, n: number, E: number, scale = FEEDBACK_LOGIT_SCALE): Float64Array {
  const k = Math.exp(scale);
  const sim = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let d = 0;
    for (let e = 0; e < E; e++) d += img[i * E + e]! * txt[j * E + e]!;
    sim[i * n + j] = k * d;
  }
  const lse = (get: (j: number) => number) => {
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, get(j));
    let z = 0;
    for (let j = 0; j < n; j++) z += Math.exp(get(j) - m);
    return m + Math.log(z);
  };
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const row = lse((j) => sim[i * n + j]!) - sim[i * n + i]!;
    const col = lse((j) => sim[j * n + i]!) - sim[i * n + i]!;
    out[i] = -(row + col) / 2;
  }
  return out;
}
