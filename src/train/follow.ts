/**
 * The committed shard sequence the trainer follows (docs/TRAINER.md; python/squeeze_reader reads the same):
 * commit records are the source of truth (docs/ARCHITECTURE.md, The commit protocol), so the trainer lists them rather than the shard files,
 * and never sees a temporary or an orphan shard.
 *
 * A cursor maps "<topic>/<partition>" to the next start offset not yet consumed (missing: 0). One poll lists
 * every commit record at or after the cursor of its partition, ordered by (created_at, topic, partition,
 * start_offset); records without a shard (every row of the range was dropped) still move the cursor on.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readParquetRows } from '../streams/parquet-rows';
import { type CommitRecord, isTemp } from '../streams/shard-log';

export type Cursor = Record<string, number>;

export const cursorKey = (topic: string, partition: number): string => `${topic}/${partition}`;

export interface CommittedShard {
  record: CommitRecord;
  /** where the shard is (an absolute path or an s3:// URL), null when the range kept no rows */
  path: string | null;
}

/** Where the trainer's shards come from: a directory (dirSource) or an object store (object-store-source.ts). */
export interface ShardSource {
  /** the output as the user named it */
  readonly root: string;
  /** commit records after the cursor, in the sequence's order */
  poll(cursor: Cursor, onSkip?: (path: string, reason: string) => void): Promise<CommittedShard[]>;
  /** the rows of a shard a commit record names (its path relative to the output) */
  readRows(rel: string): Promise<Record<string, unknown>[]>;
}

export function dirSource(out: string): ShardSource {
  return {
    root: out,
    poll: (cursor, onSkip) => pollCommitted(out, cursor, onSkip),
    readRows: (rel) => readParquetRows(join(out, rel)),
  };
}

/** The committed sequence's order over records gathered from any store. */
export function sequence(found: CommittedShard[]): CommittedShard[] {
  return found.sort((a, b) => compare(a.record, b.record));
}

/** false (with the reason given to onSkip) when a parsed record lacks what the sequence needs */
export function wellFormed(rec: CommitRecord, where: string, onSkip: (path: string, reason: string) => void): boolean {
  if (typeof rec.topic !== 'string' || !Number.isInteger(rec.partition) || !Number.isInteger(rec.start_offset) || !Number.isInteger(rec.end_offset)) {
    onSkip(where, 'commit record without topic, partition and offsets');
    return false;
  }
  return true;
}

async function list(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Commit records after the cursor, in the sequence's order. Unreadable records are skipped with `onSkip`. */
export async function pollCommitted(out: string, cursor: Cursor, onSkip: (path: string, reason: string) => void = () => undefined): Promise<CommittedShard[]> {
  const root = join(out, '_commits');
  const found: CommittedShard[] = [];
  for (const t of await list(root)) {
    for (const p of await list(join(root, t))) {
      for (const name of await list(join(root, t, p))) {
        if (isTemp(name) || !name.endsWith('.json')) continue;
        const path = join(root, t, p, name);
        let rec: CommitRecord;
        try {
          rec = JSON.parse(await fs.readFile(path, 'utf8')) as CommitRecord;
        } catch (e) {
          onSkip(path, `unreadable commit record: ${(e as Error).message.split('\n')[0]}`);
          continue;
        }
        if (!wellFormed(rec, path, onSkip)) continue;
        if (rec.start_offset < (cursor[cursorKey(rec.topic, rec.partition)] ?? 0)) continue;
        found.push({ record: rec, path: rec.shard ? join(out, rec.shard) : null });
      }
    }
  }
  return sequence(found);
}

function compare(a: CommitRecord, b: CommitRecord): number {
  return (a.created_at - b.created_at) || (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0) || a.partition - b.partition || a.start_offset - b.start_offset;
}

/** Moves the cursor past a record. */
export function advance(cursor: Cursor, rec: CommitRecord): void {
  const k = cursorKey(rec.topic, rec.partition);
  cursor[k] = Math.max(cursor[k] ?? 0, rec.end_offset + 1);
}
