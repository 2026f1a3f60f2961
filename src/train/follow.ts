/**
 * The committed shard sequence the trainer follows (docs/TRAINER.md): the commit records of a curated
 * output, through the one reader of commit records (streams/shards/committed.ts), on a directory or an
 * object store alike.
 */
import { LocalShardStore } from '../streams/shards/shard-store';
import { advance, type CommittedShard, committedAfter, type Cursor, cursorKey } from '../streams/shards/committed';
import type { ShardStore } from '../streams/shards/store';

export { advance, type CommittedShard, type Cursor, cursorKey };

/** Where the trainer's shards come from. */
export interface ShardSource {
  /** the output as the user named it */
  readonly root: string;
  /** commit records after the cursor, in the sequence's order */
  poll(cursor: Cursor, onSkip?: (path: string, reason: string) => void): Promise<CommittedShard[]>;
  /** the rows of a shard a commit record names (its path relative to the output) */
  readRows(rel: string): Promise<Record<string, unknown>[]>;
}

/** The trainer's source on any shard store. */
export function storeSource(store: ShardStore): ShardSource {
  return {
    root: store.root,
    poll: (cursor, onSkip) => committedAfter(store, cursor, onSkip),
    readRows: (rel) => store.readRows(rel),
  };
}

/** The trainer's source on a curated output directory. */
export const dirSource = (out: string): ShardSource => storeSource(new LocalShardStore(out));

/** Commit records of a directory after the cursor, in the sequence's order. */
export const pollCommitted = (out: string, cursor: Cursor, onSkip?: (path: string, reason: string) => void): Promise<CommittedShard[]> =>
  committedAfter(new LocalShardStore(out), cursor, onSkip);
