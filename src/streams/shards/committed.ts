/**
 * The one reader of commit records (docs/ARCHITECTURE.md, The commit protocol): what exists is what a
 * commit record names, so readers list commit records, never shard files, and never see a temporary, an
 * orphan, or a shard whose commit lost its race. Used by the trainer (its cursor), `squeeze report`,
 * replays and lag; the Python reader (python/squeeze_reader) follows the same rule.
 *
 * A cursor maps "<topic>/<partition>" to the next start offset not yet consumed (missing: 0). The
 * committed sequence orders records by (created_at, topic, partition, start_offset); a record without a
 * shard (every row of the range was dropped) still moves the cursor on.
 */
import type { CommitRecord } from './shard-log';
import type { ShardStore } from './store';

export type Cursor = Record<string, number>;

export const cursorKey = (topic: string, partition: number): string => `${topic}/${partition}`;

export interface CommittedShard {
  record: CommitRecord;
  /** where the shard is (an absolute path or an s3:// URL), null when the range kept no rows */
  path: string | null;
}

/**
 * The commit records at or after the cursor, in the committed sequence's order. A partition whose records
 * cannot be read, and a record without topic, partition and offsets, are passed over with `onSkip`.
 */
export async function committedAfter(store: ShardStore, cursor: Cursor = {}, onSkip: (where: string, reason: string) => void = () => undefined): Promise<CommittedShard[]> {
  const found: CommittedShard[] = [];
  for (const { topic, partition } of await store.partitions()) {
    let records: CommitRecord[];
    try {
      records = await store.readCommits(topic, partition);
    } catch (e) {
      onSkip(`${store.root} ${topic}[${partition}]`, `unreadable commit record: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    for (const rec of records) {
      if (typeof rec.topic !== 'string' || !Number.isInteger(rec.partition) || !Number.isInteger(rec.start_offset) || !Number.isInteger(rec.end_offset)) {
        onSkip(`${store.root} ${topic}[${partition}]`, 'commit record without topic, partition and offsets');
        continue;
      }
      if (rec.start_offset < (cursor[cursorKey(rec.topic, rec.partition)] ?? 0)) continue;
      found.push({ record: rec, path: rec.shard ? store.uri(rec.shard) : null });
    }
  }
  return found.sort((a, b) => compare(a.record, b.record));
}

function compare(a: CommitRecord, b: CommitRecord): number {
  return (a.created_at - b.created_at) || (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0) || a.partition - b.partition || a.start_offset - b.start_offset;
}

/** Moves the cursor past a record. */
export function advance(cursor: Cursor, rec: CommitRecord): void {
  const k = cursorKey(rec.topic, rec.partition);
  cursor[k] = Math.max(cursor[k] ?? 0, rec.end_offset + 1);
}
