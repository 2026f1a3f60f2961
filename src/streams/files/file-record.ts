/**
 * What every file reader hands out and the helpers they share: one `FileRecord` per input record (an event,
 * or the reason it is a dead letter, with the original bytes), contiguous offsets from `RecordFactory`, and
 * the field rules common to JSONL, WebDataset and Parquet inputs.
 */
import type { Coord, CrawlEvent, DeadReason } from '../../records';

export interface FileRecord {
  coord: Coord;
  /** exactly one of `event` and `error` is non-null */
  event: CrawlEvent | null;
  /** the fields of the input that could be read (`id`, `url`, `image_url`) are kept for the dead letter */
  error: ({ reason: DeadReason; message: string } & ReadableFields) | null;
  /** the original record bytes (a JSONL line; a tar sample's .json or .txt part; a Parquet row as JSON), truncated to maxRecordBytes */
  raw: Buffer;
  /** size of the original record before truncation */
  rawBytes?: number;
}

/** What a dead letter keeps of a record it could partly read. */
export interface ReadableFields {
  id?: string | null;
  url?: string | null;
  image_url?: string | null;
}

export interface FileSourceLimits {
  /** largest JSONL line, tar .json/.txt member, or serialized Parquet row; larger records are `record_too_large` */
  maxRecordBytes: number;
  /** largest image (decoded base64, image_path file, tar image member); larger ones are `image_too_large` */
  maxImageBytes: number;
}

export interface FileSourceOptions {
  /** where JSONL `image_path` values are resolved and must stay (default: the JSONL file's directory) */
  imageRoot?: string | null;
  /** filled in as the input is read, for progress lines */
  meter?: InputMeter;
}

/** How much of the input has been read: bytes of JSONL and tar files, rows of Parquet metadata. */
export interface InputMeter {
  done: number;
  /** 0 until the reader knows */
  total: number;
  unit: 'bytes' | 'rows' | 'events';
}

/** Hands out contiguous offsets and builds records; one per input. */
export class RecordFactory {
  private nextOffset = 0;

  constructor(
    private readonly topic: string,
    private readonly limits: FileSourceLimits,
  ) {}

  ok(event: CrawlEvent, raw: Buffer): FileRecord {
    return { coord: this.coord(), event, error: null, ...this.rawFields(raw) };
  }

  dead(reason: DeadReason, message: string, raw: Buffer, id: string | null = null, rawBytes?: number, more: Omit<ReadableFields, 'id'> = {}): FileRecord {
    const error = { reason, message: oneLine(message), id, url: readable(more.url), image_url: readable(more.image_url) };
    return { coord: this.coord(), event: null, error, ...this.rawFields(raw, rawBytes) };
  }

  private coord(): Coord {
    return { topic: this.topic, partition: 0, offset: this.nextOffset++ };
  }

  private rawFields(raw: Buffer, rawBytes?: number): { raw: Buffer; rawBytes: number } {
    const max = this.limits.maxRecordBytes;
    return { raw: raw.length > max ? raw.subarray(0, max) : raw, rawBytes: rawBytes ?? raw.length };
  }
}

/** Longest URL a dead letter keeps as a field (the original bytes hold the rest). */
const MAX_READABLE_CHARS = 4096;

/** A string field worth keeping in a dead letter: non-empty and not absurdly long; else null. */
export function readable(v: unknown): string | null {
  return typeof v === 'string' && v !== '' && v.length <= MAX_READABLE_CHARS ? v : null;
}

export function oneLine(s: string, max = 500): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}...` : t;
}

export function errorMessage(err: unknown): string {
  return oneLine(err instanceof Error ? err.message : String(err));
}

export const MAX_ID_CHARS = 256;

/** Null when `id` is acceptable (1..256 characters, counted as code points), else why not. */
export function idProblem(id: string): string | null {
  if (id.length === 0) return 'id is empty';
  const chars = [...id].length;
  return chars > MAX_ID_CHARS ? `id has ${chars} characters, more than ${MAX_ID_CHARS}` : null;
}

/** An attrs value as a string; undefined for null/undefined (left out). */
export function attrString(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v.toISOString();
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Accepted image formats (docs/FORMATS.md, Limits), by file extension. */
export const IMAGE_EXTENSIONS = new Set(['jpg', 'jpeg', 'png', 'webp', 'gif', 'avif', 'tif', 'tiff']);
/** Image formats not accepted, recognised so they are `unsupported_format` rather than `missing_image`. */
export const OTHER_IMAGE_EXTENSIONS = new Set(['svg', 'svgz', 'bmp', 'ico', 'heic', 'heif', 'jxl', 'jp2', 'psd']);
