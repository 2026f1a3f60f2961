/**
 * What a shard store is: where shards, dead letters, operator state and commit records live, behind one
 * interface with two implementations, a local directory (shard-store.ts) and an S3-compatible object
 * store (s3-shard-store.ts). Both keep the layout of shard-log.ts.
 */
import type { CuratedRow } from '../../records';
import type { CommitRecord, Recovered } from './shard-log';

/** One range's contents, ready to place; the store fills in the file names of the record. */
export interface RangeFiles {
  topic: string;
  partition: number;
  start: number;
  end: number;
  /** curated rows; none means no shard */
  rows: CuratedRow[];
  compression: 'UNCOMPRESSED' | 'GZIP' | 'SNAPPY';
  /** dead letters as JSON lines; null when there are none */
  deadLines: string | null;
  /** gzipped operator state after `end` */
  state: Buffer;
  record: Omit<CommitRecord, 'shard' | 'shard_bytes' | 'dead_letters' | 'state'>;
}

export interface ShardStore {
  /** the output as the user named it (a directory or s3://bucket/prefix) */
  readonly root: string;
  /** where a reader finds a file a commit record names (an absolute path or an s3:// URL) */
  uri(rel: string): string;
  /** every partition that has commit records */
  partitions(): Promise<{ topic: string; partition: number }[]>;
  /** all commit records of a partition, in offset order */
  readCommits(topic: string, partition: number): Promise<CommitRecord[]>;
  /** whether no commit record exists at all */
  isEmpty(): Promise<boolean>;
  /** the rows of a shard a commit record names (its path relative to the output) */
  readRows(rel: string): Promise<Record<string, unknown>[]>;
  /** the latest commit and its state; removes what no commit record names (see shard-log.ts) */
  recover(topic: string, partition: number): Promise<Recovered>;
  readState(rel: string): Promise<Record<string, unknown>>;
  /** places the range and creates its commit record exclusively; FencedError when another curator did first */
  commit(files: RangeFiles): Promise<CommitRecord>;
}

