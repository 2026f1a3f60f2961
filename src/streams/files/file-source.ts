/**
 * File inputs (docs/FORMATS.md): JSON Lines, WebDataset tar shards, Parquet metadata. Each yields one
 * `FileRecord` per input record, in input order, with coordinates `{ topic: <input base name>, partition: 0,
 * offset: <record index> }`: every record gets exactly one offset, bad ones included (as a dead letter), so the
 * exactly-once bookkeeping (docs/ARCHITECTURE.md, The commit protocol) works on files as it does on Kafka.
 *
 * A problem with the input as a whole (missing, unreadable, not the format its name says) is the user's mistake
 * and throws an Error with a one-line message; a problem with one record is a dead letter.
 *
 * @example
 * for await (const r of openFileSource('crawl.jsonl', { maxRecordBytes: 32 << 20, maxImageBytes: 20 << 20 })) {
 *   if (r.event) curate(r.coord, r.event); else deadLetter(r.coord, r.error!, r.raw);
 * }
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FileRecord, FileSourceLimits, FileSourceOptions } from './file-record';
import { readJsonl } from './jsonl-source';
import { readParquetMeta } from './parquet-meta-source';
import { readWebDataset } from './webdataset-source';

export type FileInputKind = 'jsonl' | 'webdataset' | 'parquet';

const JSONL_EXTS = ['.jsonl', '.json', '.ndjson'];

/** Which reader an input path goes to, and the tar shards of a WebDataset directory (sorted by name). */
export function detectFileInput(input: string): { kind: FileInputKind; files: string[] } {
  let st: fs.Stats;
  try {
    st = fs.statSync(input);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `input not found: ${input}` : `cannot read input ${input}: ${code ?? String(err)}`);
  }
  if (st.isDirectory()) {
    let names: string[];
    try {
      names = fs.readdirSync(input);
    } catch (err) {
      throw new Error(`cannot list input directory ${input}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const shards = names
      .filter((n) => n.toLowerCase().endsWith('.tar'))
      .sort()
      .map((n) => path.join(input, n))
      .filter((p) => fs.statSync(p, { throwIfNoEntry: false })?.isFile() === true);
    if (shards.length === 0) throw new Error(`input directory ${input} holds no .tar shards`);
    return { kind: 'webdataset', files: shards };
  }
  if (!st.isFile()) throw new Error(`input ${input} is not a regular file or directory`);
  const ext = path.extname(input).toLowerCase();
  if (JSONL_EXTS.includes(ext)) return { kind: 'jsonl', files: [input] };
  if (ext === '.tar') return { kind: 'webdataset', files: [input] };
  if (ext === '.parquet') return { kind: 'parquet', files: [input] };
  throw new Error(
    `unsupported input ${input}: expected .jsonl/.json/.ndjson, .tar, a directory of .tar shards, or .parquet`,
  );
}

/**
 * Opens a file input. Throws at once when the path is missing or of an unknown kind; the returned iterable reads
 * lazily and with bounded memory (one JSONL line, one tar sample, one Parquet row group at a time).
 */
export function openFileSource(input: string, limits: FileSourceLimits, options: FileSourceOptions = {}): AsyncIterable<FileRecord> {
  checkLimits(limits);
  const { kind, files } = detectFileInput(input);
  const topic = path.basename(path.resolve(input));
  const imageRoot = options.imageRoot ? checkImageRoot(options.imageRoot) : null;
  switch (kind) {
    case 'jsonl':
      return readJsonl(files[0], topic, limits, imageRoot, options.meter);
    case 'webdataset':
      return readWebDataset(files, topic, limits, options.meter);
    case 'parquet':
      return readParquetMeta(files[0], topic, limits, options.meter);
  }
}

/** The real path of an image root directory; a missing or non-directory root is the user's mistake. */
function checkImageRoot(dir: string): string {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `image root not found: ${dir}` : `cannot read image root ${dir}: ${code ?? String(err)}`);
  }
  if (!fs.statSync(real).isDirectory()) throw new Error(`image root ${dir} is not a directory`);
  return real;
}

function checkLimits(limits: FileSourceLimits): void {
  for (const k of ['maxRecordBytes', 'maxImageBytes'] as const) {
    const v = limits[k];
    if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${k} must be a positive integer, got ${String(v)}`);
  }
}
