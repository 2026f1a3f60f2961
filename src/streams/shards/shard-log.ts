/**
 * The on-disk layout of an output directory and its commit records (docs/ARCHITECTURE.md, The commit protocol).
 * Commit records are the source of truth: a shard, dead-letter file or state file that no commit
 * record names does not exist, and is deleted on recovery.
 *
 *   <out>/topic=<t>/partition=<p>/<start>-<end>.<attempt>.parquet           curated rows
 *   <out>/_dlq/topic=<t>/partition=<p>/<start>-<end>.<attempt>.jsonl        dead letters
 *   <out>/_state/topic=<t>/partition=<p>/<start>-<end>.<attempt>.json.gz    operator state after <end>
 *   <out>/_commits/topic=<t>/partition=<p>/<start>.json                     commit record, created exclusively
 *
 * Offsets are zero-padded to 20 digits. <attempt> is new for every commit attempt (rangeFile), in a
 * directory as on an object store: two curators racing for a start offset (a fenced zombie and the new
 * owner) never replace each other's files, not even for the same range, so the record that wins names
 * only its own writer's shard, dead letters and state.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc, promises as fs } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';

export const COMMIT_VERSION = 1;

export interface CommitRecord {
  version: number;
  topic: string;
  partition: number;
  start_offset: number;
  end_offset: number;
  /** input records in [start, end] (offsets may have gaps, e.g. transaction markers) */
  records: number;
  rows: number;
  dead: number;
  filtered: number;
  dead_by_reason: Record<string, number>;
  filtered_by_reason: Record<string, number>;
  /** every filtered offset, so audits can account for each input exactly once */
  filtered_offsets: Record<string, number[]>;
  /** paths relative to the output directory; null when the shard had none */
  shard: string | null;
  shard_bytes: number;
  dead_letters: string | null;
  state: string | null;
  close_reason: string;
  config_hash: string;
  model_version: string;
  schema_version: number;
  created_at: number;
  /** the commit span's W3C trace context, when tracing was on */
  traceparent?: string;
  /** W3C trace context of each sampled event in the range, by offset, when tracing was on */
  traces?: Record<string, string>;
}

export class FencedError extends Error {
  constructor(readonly topic: string, readonly partition: number, readonly start: number) {
    super(`another curator already committed ${topic}[${partition}] from offset ${start}`);
  }
}

export const pad = (n: number): string => String(n).padStart(20, '0');
export const topicDir = (topic: string): string => `topic=${topic.replace(/[^A-Za-z0-9._-]/g, '_')}`;

/** A name for one commit attempt: time-ordered, random, and free of `.`, `-` and `/` (see rangeFile). */
export const newAttempt = (): string => `${Date.now().toString(36)}${randomBytes(5).toString('hex')}`;

/**
 * The name of one attempt's shard, dead-letter or state file of [start, end]: `<start>-<end>.<attempt>.<ext>`.
 * The one naming rule of both stores: a name unique to the attempt cannot be replaced by a racing writer's
 * rename or put, and it begins with the start offset, which startOf reads back for recovery.
 */
export const rangeFile = (start: number, end: number, attempt: string, ext: 'parquet' | 'jsonl' | 'json.gz'): string =>
  `${pad(start)}-${pad(end)}.${attempt}.${ext}`;

export function partitionPaths(out: string, topic: string, partition: number) {
  const rel = join(topicDir(topic), `partition=${partition}`);
  return {
    rel,
    shards: join(out, rel),
    dlq: join(out, '_dlq', rel),
    state: join(out, '_state', rel),
    commits: join(out, '_commits', rel),
  };
}

export const isTemp = (name: string): boolean => name.startsWith('.tmp-');

/** All commit records of a partition, in offset order. */
export async function readCommits(out: string, topic: string, partition: number): Promise<CommitRecord[]> {
  const dir = partitionPaths(out, topic, partition).commits;
  const names = await listDir(dir);
  const records: CommitRecord[] = [];
  for (const name of names.filter((n) => n.endsWith('.json') && !isTemp(n)).sort()) {
    records.push(JSON.parse(await fs.readFile(join(dir, name), 'utf8')) as CommitRecord);
  }
  return records;
}

/** Every partition that has commit records under `out`. */
export async function listCommittedPartitions(out: string): Promise<{ topic: string; partition: number }[]> {
  const found: { topic: string; partition: number }[] = [];
  for (const t of await listDir(join(out, '_commits'))) {
    for (const p of await listDir(join(out, '_commits', t))) {
      const recs = await listDir(join(out, '_commits', t, p));
      const first = recs.find((n) => n.endsWith('.json') && !isTemp(n));
      if (!first) continue;
      const rec = JSON.parse(await fs.readFile(join(out, '_commits', t, p, first), 'utf8')) as CommitRecord;
      found.push({ topic: rec.topic, partition: rec.partition });
    }
  }
  return found;
}

export interface Recovered {
  /** first offset not yet reflected in a commit record; null when nothing was committed */
  nextOffset: number | null;
  state: Record<string, unknown> | undefined;
  commits: CommitRecord[];
  removed: string[];
}

/** Loads the latest commit, its state, and deletes temporaries and files no commit record names. */
export async function recoverPartition(out: string, topic: string, partition: number): Promise<Recovered> {
  const paths = partitionPaths(out, topic, partition);
  const commits = await readCommits(out, topic, partition);
  const named = new Set<string>();
  for (const c of commits) for (const f of [c.shard, c.dead_letters, c.state]) if (f) named.add(join(out, f));
  const removed: string[] = [];
  const latest = commits[commits.length - 1];
  const next = latest ? latest.end_offset + 1 : 0;
  for (const dir of [paths.shards, paths.dlq, paths.state, paths.commits]) {
    for (const name of await listDir(dir)) {
      const p = join(dir, name);
      if (isTemp(name)) {
        await fs.rm(p, { force: true });
        removed.push(p);
      } else if (dir !== paths.commits && !named.has(p) && startOf(name) < next) {
        // Only before the next offset, where every start already has a record, so no zombie can still
        // commit there. A file at or after it may be a zombie's commit in flight (renamed into place,
        // record not yet linked): it is left for the commit at that offset, which removes whatever its
        // record does not name (ShardSink.commit, clearOrphans).
        await fs.rm(p, { force: true });
        removed.push(p);
      }
    }
  }
  const state = latest?.state ? await readState(out, latest.state) : undefined;
  return { nextOffset: latest ? latest.end_offset + 1 : null, state, commits, removed };
}

/**
 * The start offset a shard, dead-letter or state file name begins with (Infinity for other names): the
 * `<start>-<end>.<attempt>.<ext>` of rangeFile, and the `<start>-<end>.<ext>` and `<start>.<ext>` names
 * earlier versions wrote, so their outputs still recover.
 */
export function startOf(name: string): number {
  const m = /^(\d{20})[-.]/.exec(name);
  return m ? Number(m[1]) : Infinity;
}

/**
 * After a commit record for [start, end] exists, removes the non-temporary files of that range that it
 * does not name: what a crashed or fenced writer (a zombie) left there, which recovery leaves alone.
 */
export async function clearOrphans(out: string, rec: CommitRecord): Promise<string[]> {
  const paths = partitionPaths(out, rec.topic, rec.partition);
  const named = new Set([rec.shard, rec.dead_letters, rec.state].filter((f): f is string => !!f).map((f) => join(out, f)));
  const removed: string[] = [];
  for (const dir of [paths.shards, paths.dlq, paths.state]) {
    for (const name of await listDir(dir)) {
      const p = join(dir, name);
      const s = startOf(name);
      if (isTemp(name) || named.has(p) || s < rec.start_offset || s > rec.end_offset) continue;
      await fs.rm(p, { force: true });
      removed.push(p);
    }
  }
  return removed;
}

export async function readState(out: string, rel: string): Promise<Record<string, unknown>> {
  return JSON.parse(gunzipSync(await fs.readFile(join(out, rel))).toString('utf8')) as Record<string, unknown>;
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Writes a file durably under a temporary name in the same directory and returns that name. */
export async function writeTemp(dir: string, stem: string, data: Buffer | string): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const tmp = join(dir, `.tmp-${stem}-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const fh = await fs.open(tmp, fsc.O_CREAT | fsc.O_WRONLY | fsc.O_TRUNC, 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
