/**
 * Where shards, dead letters, operator state and commit records live: a local directory or an
 * S3-compatible object store (src/streams/shards/s3-shard-store.ts). Both keep the layout of shard-log.ts and
 * the rule that only commit records say what exists; they differ in how a range is placed:
 *  - a directory: temporaries renamed to attempt-unique names, the record created with link();
 *  - an object store: attempt-unique keys, the record created with a conditional put (If-None-Match).
 * Both name a range's files with shard-log.ts's rangeFile, `<start>-<end>.<attempt>.<ext>`: a zombie and the
 * new owner committing the same start (same end or not) never replace each other's files, so whichever
 * record wins, the shard, dead letters and state it names are its own writer's.
 */
import { promises as fs } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { RangeFiles, ShardStore } from './store';
import { checkBucket, checkObjectStore, parseS3Url } from './object-store';
import { readParquetRows, writeRowsParquet } from './parquet-rows';
import {
  type CommitRecord,
  clearOrphans,
  FencedError,
  fsyncDir,
  newAttempt,
  pad,
  partitionPaths,
  rangeFile,
  listCommittedPartitions,
  readCommits,
  readState,
  recoverPartition,
  type Recovered,
  writeTemp,
} from './shard-log';

/**
 * The store for `--out`: s3://bucket/prefix or a directory. An object store that will be written to is
 * checked first (bucket, credentials, conditional puts); `readOnly` skips that for a store only read from.
 */
export async function openShardStore(out: string, opts: { readOnly?: boolean } = {}): Promise<ShardStore> {
  const loc = parseS3Url(out);
  if (!loc) return new LocalShardStore(out);
  const { S3ShardStore } = await import('./s3-shard-store');
  const store = new S3ShardStore(loc);
  if (opts.readOnly) await checkBucket(store.client, loc);
  else await checkObjectStore(store.client, loc);
  return store;
}

export class LocalShardStore implements ShardStore {
  constructor(readonly root: string) {}

  uri(rel: string): string {
    return resolve(this.root, rel);
  }

  partitions(): Promise<{ topic: string; partition: number }[]> {
    return listCommittedPartitions(this.root);
  }

  readCommits(topic: string, partition: number): Promise<CommitRecord[]> {
    return readCommits(this.root, topic, partition);
  }

  async isEmpty(): Promise<boolean> {
    return (await this.partitions()).length === 0;
  }

  readRows(rel: string): Promise<Record<string, unknown>[]> {
    return readParquetRows(join(this.root, rel));
  }

  recover(topic: string, partition: number): Promise<Recovered> {
    return recoverPartition(this.root, topic, partition);
  }

  readState(rel: string): Promise<Record<string, unknown>> {
    return readState(this.root, rel);
  }

  async commit(f: RangeFiles): Promise<CommitRecord> {
    const { topic, partition, start, end } = f;
    const out = this.root;
    const paths = partitionPaths(out, topic, partition);
    const commitPath = join(paths.commits, `${pad(start)}.json`);
    if (await exists(commitPath)) throw new FencedError(topic, partition, start);
    const range = `${pad(start)}-${pad(end)}`;
    // Final names unique to this attempt: a rename replaces its target, so a shared name (as <start>.json.gz
    // once was) let a racing writer swap its file in under the record the other one links.
    const attempt = newAttempt();
    // A temporary (or its directory) that vanishes while we write or place it was removed by a curator that
    // was assigned this partition and recovered it: this one is a zombie for it and re-syncs, as when it
    // loses the commit race. Files it placed already are named by no record; the next recovery or the
    // commit of the range removes them.
    const owned = async <T>(step: () => Promise<T>): Promise<T> => {
      try {
        return await step();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FencedError(topic, partition, start);
        throw e;
      }
    };
    const placed: string[] = [];
    const place = async (write: () => Promise<string>, dir: string, name: string): Promise<string> => {
      const final = join(dir, name);
      const tmp = await owned(write);
      await owned(() => fs.rename(tmp, final));
      placed.push(final);
      return relative(out, final);
    };

    let shard: string | null = null;
    let shardBytes = 0;
    if (f.rows.length > 0) {
      await fs.mkdir(paths.shards, { recursive: true });
      const writeShard = async (): Promise<string> => {
        const tmp = join(paths.shards, `.tmp-${range}-${process.pid}-${Math.random().toString(36).slice(2)}.parquet`);
        shardBytes = (await writeRowsParquet(tmp, f.rows, { compression: f.compression })).bytes;
        return tmp;
      };
      shard = await place(writeShard, paths.shards, rangeFile(start, end, attempt, 'parquet'));
    }
    const deadLetters = f.deadLines !== null ? await place(() => writeTemp(paths.dlq, range, f.deadLines!), paths.dlq, rangeFile(start, end, attempt, 'jsonl')) : null;
    const state = await place(() => writeTemp(paths.state, range, f.state), paths.state, rangeFile(start, end, attempt, 'json.gz'));

    const record: CommitRecord = { ...f.record, shard, shard_bytes: shardBytes, dead_letters: deadLetters, state };
    const tmp = await owned(() => writeTemp(paths.commits, range, JSON.stringify(record, null, 1)));
    try {
      await fs.link(tmp, commitPath);
    } catch (e) {
      // our temporary record was removed by the new owner's recovery: as above, a zombie, fenced
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FencedError(topic, partition, start);
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // Lost the race to a curator that now owns this partition: leave its files, remove ours.
      const winner = JSON.parse(await fs.readFile(commitPath, 'utf8')) as CommitRecord;
      const theirs = new Set([winner.shard, winner.dead_letters, winner.state].filter(Boolean).map((x) => join(out, x as string)));
      for (const final of placed) if (!theirs.has(final)) await fs.rm(final, { force: true });
      await clearOrphans(out, winner);
      throw new FencedError(topic, partition, start);
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await fsyncDir(paths.commits);
    await clearOrphans(out, record);
    return record;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}
