/**
 * `squeeze export --format uids`: the committed rows as the `.npy` of 128-bit uids that DataComp's
 * resharder takes to build training shards from its pool: a structured array of dtype `u8,u8` (the
 * uid's first and last 16 hex digits), shape (n,), sorted, a row's uid repeated once per soft-cap copy.
 *
 * A row's uid is its `attrs.uid` (Parquet metadata with a `key` column keeps `uid` there) or its id (a
 * DataComp pool's metadata uses `uid` as the id), when it is 32 hex digits. Rows without one make the
 * export fail with a line saying how many and which: a subset with silent holes would train on less
 * than the curator kept.
 */
import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { committedAfter } from '../streams/shards/committed';
import type { ShardStore } from '../streams/shards/store';

const UID = /^[0-9a-f]{32}$/i;

/** The DataComp uid of a row, or null. */
export function uidOf(row: Record<string, unknown>): string | null {
  const fromAttrs = (row.attrs as Record<string, string> | undefined)?.uid;
  if (typeof fromAttrs === 'string' && UID.test(fromAttrs)) return fromAttrs.toLowerCase();
  const id = String(row.id ?? '');
  return UID.test(id) ? id.toLowerCase() : null;
}

export async function exportUids(store: ShardStore, file: string): Promise<{ uids: number; rows: number }> {
  const uids: [bigint, bigint][] = [];
  let rows = 0;
  const missing: string[] = [];
  for (const { record } of await committedAfter(store)) {
    if (!record.shard) continue;
    for (const row of await store.readRows(record.shard)) {
      rows++;
      const uid = uidOf(row);
      if (!uid) {
        missing.push(String(row.id));
        continue;
      }
      const pair: [bigint, bigint] = [BigInt(`0x${uid.slice(0, 16)}`), BigInt(`0x${uid.slice(16)}`)];
      const copies = Number.isInteger(row.copies) && (row.copies as number) > 0 ? (row.copies as number) : 1;
      for (let c = 0; c < copies; c++) uids.push(pair);
    }
  }
  if (missing.length > 0) {
    throw new Error(`${missing.length} of ${rows} committed rows carry no DataComp uid (32 hex digits in the id or attrs.uid), e.g. ${JSON.stringify(missing[0])}: --format uids needs the input's uid column`);
  }
  uids.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const tmp = join(dirname(file), `.tmp-${basename(file)}`);
  await fs.writeFile(tmp, npyPairs(uids));
  await fs.rename(tmp, file);
  return { uids: uids.length, rows };
}

/** An .npy (format 1.0) of a structured array of two little-endian uint64 fields, f0 and f1. */
function npyPairs(pairs: [bigint, bigint][]): Buffer {
  let header = `{'descr': [('f0', '<u8'), ('f1', '<u8')], 'fortran_order': False, 'shape': (${pairs.length},), }`;
  // magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, ending in \n
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.alloc(pairs.length * 16);
  pairs.forEach(([a, b], i) => {
    body.writeBigUInt64LE(a, i * 16);
    body.writeBigUInt64LE(b, i * 16 + 8);
  });
  return Buffer.concat([head, Buffer.from(header, 'latin1'), body]);
}
