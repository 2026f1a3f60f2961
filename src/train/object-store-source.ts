/**
 * The trainer's committed sequence on an S3-compatible store (docs/OBJECT-STORE.md): the same records in
 * the same order as on a directory (follow.ts), listed under `_commits/` and read once each (they are
 * immutable); a shard is downloaded to a temporary file, read and deleted. Objects no record names are never
 * listed, so the trainer cannot see a shard whose commit lost its race.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readParquetRows } from '../streams/parquet-rows';
import type { S3ShardStore } from '../streams/s3-shard-store';
import { type CommittedShard, type ShardSource, cursorKey, sequence, wellFormed } from './follow';

export function objectStoreSource(store: S3ShardStore): ShardSource {
  return {
    root: store.root,
    async poll(cursor, onSkip = () => undefined) {
      const found: CommittedShard[] = [];
      for (const t of await store.listDirs('_commits')) {
        for (const p of await store.listDirs(posix.join('_commits', t))) {
          const dir = posix.join('_commits', t, p);
          let records;
          try {
            records = await store.readCommitDir(dir);
          } catch (e) {
            onSkip(store.uri(dir), `unreadable commit record: ${(e as Error).message.split('\n')[0]}`);
            continue;
          }
          for (const rec of records) {
            if (!wellFormed(rec, store.uri(dir), onSkip)) continue;
            if (rec.start_offset < (cursor[cursorKey(rec.topic, rec.partition)] ?? 0)) continue;
            found.push({ record: rec, path: rec.shard ? store.uri(rec.shard) : null });
          }
        }
      }
      return sequence(found);
    },
    async readRows(rel) {
      const body = await store.get(rel);
      if (!body) throw new Error(`${store.uri(rel)}: a committed shard is missing`);
      const tmp = join(tmpdir(), `squeeze-train-${process.pid}-${randomBytes(6).toString('hex')}.parquet`);
      try {
        await fs.writeFile(tmp, body);
        return await readParquetRows(tmp);
      } finally {
        await fs.rm(tmp, { force: true });
      }
    },
  };
}
