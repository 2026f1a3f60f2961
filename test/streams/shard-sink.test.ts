import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ShardChunk } from '../../src/operators/roll-shards';
import { FencedError, partitionPaths, readCommits, recoverPartition } from '../../src/streams/shard-log';
import { ShardSink } from '../../src/streams/shard-sink';
import { duckQuery } from '../helpers/duckdb';
import { keptSample } from '../helpers/samples';
import { LocalShardStore } from '../../src/streams/shard-store';

const sinkAt = (out: string) =>
  new ShardSink({ store: new LocalShardStore(out), configHash: 'cfg1', modelVersion: 'm1', deadLetterBytes: 8, compression: 'SNAPPY', now: () => 1_700_000_000_000 });

function chunk(from: number, n: number, partition = 0): ShardChunk {
  const samples = Array.from({ length: n }, (_, i) => keptSample(from + i, { partition }));
  samples[1].outcome = { kind: 'dead', reason: 'decode_error', message: 'broken' };
  samples[1].raw = Buffer.from('0123456789abcdef');
  samples[2].outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  return { topic: 'crawl', partition, samples, reason: 'rows', state: { op: { n: from + n } } };
}

test('commit writes the shard, the dead letters, the state and then the commit record', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const res = await sinkAt(out).commit(chunk(0, 5));
  const r = res.record;
  assert.equal(r.start_offset, 0);
  assert.equal(r.end_offset, 4);
  assert.deepEqual([r.rows, r.dead, r.filtered, r.records], [3, 1, 1, 5]);
  assert.deepEqual(r.filtered_offsets, { duplicate_exact: [2] });
  assert.equal(r.shard, 'topic=crawl/partition=0/00000000000000000000-00000000000000000004.parquet');
  const rows = await duckQuery(`SELECT source_offset, id, copies, config_hash FROM read_parquet('${join(out, r.shard!)}') ORDER BY 1`);
  assert.deepEqual(rows.map((x) => x.source_offset), [0, 3, 4]);
  assert.equal(rows[0].config_hash, 'cfg1');
  const dlq = readFileSync(join(out, r.dead_letters!), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(dlq.length, 1);
  assert.equal(dlq[0].reason, 'decode_error');
  assert.equal(dlq[0].source_offset, 1);
  assert.equal(dlq[0].truncated, true, 'original bytes are truncated above the limit');
  assert.equal(Buffer.from(dlq[0].original_b64, 'base64').toString(), '01234567');
  assert.equal(res.manifest?.rows, 3);
  assert.equal(res.manifest?.shard_uri, r.shard);
  const rec = await recoverPartition(out, 'crawl', 0);
  assert.equal(rec.nextOffset, 5);
  assert.deepEqual(rec.state, { op: { n: 5 } });
});

test('recovery deletes temporaries and unnamed files before the next offset; the commit at the next offset clears the rest', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const sink = sinkAt(out);
  await sink.commit(chunk(0, 5));
  const p = partitionPaths(out, 'crawl', 0);
  // what a crash between rename and commit record leaves behind (or a zombie's commit still in flight)
  writeFileSync(join(p.shards, '00000000000000000005-00000000000000000007.parquet'), 'orphan');
  writeFileSync(join(p.shards, '.tmp-00000000000000000005-x.parquet'), 'partial');
  writeFileSync(join(p.dlq, '00000000000000000005-00000000000000000007.jsonl'), '{}');
  writeFileSync(join(p.commits, '.tmp-00000000000000000005'), '{}');
  // an unnamed file inside the committed range: nobody can still commit it
  writeFileSync(join(p.shards, '00000000000000000002-00000000000000000004.parquet'), 'stale');
  const rec = await recoverPartition(out, 'crawl', 0);
  assert.equal(rec.nextOffset, 5);
  assert.equal(rec.removed.length, 3, rec.removed.join(', '));
  assert.deepEqual(readdirSync(p.shards).sort(), ['00000000000000000000-00000000000000000004.parquet', '00000000000000000005-00000000000000000007.parquet']);
  assert.equal(readdirSync(p.commits).length, 1);
  // the next commit (offsets 5-9) names its own files and removes what it does not name in its range
  await sink.commit(chunk(5, 5));
  assert.deepEqual(readdirSync(p.shards).sort(), ['00000000000000000000-00000000000000000004.parquet', '00000000000000000005-00000000000000000009.parquet']);
  assert.deepEqual(readdirSync(p.dlq).sort(), ['00000000000000000000-00000000000000000004.jsonl', '00000000000000000005-00000000000000000009.jsonl']);
});

test('a second commit of the same start offset is fenced and leaves the winner intact', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const a = sinkAt(out);
  const b = sinkAt(out);
  const first = await a.commit(chunk(10, 5));
  await assert.rejects(b.commit(chunk(10, 8)), FencedError);
  assert.ok(existsSync(join(out, first.record.shard!)), 'the winner keeps its shard');
  const commits = await readCommits(out, 'crawl', 0);
  assert.equal(commits.length, 1);
  assert.equal(commits[0].end_offset, 14);
  const rec = await recoverPartition(out, 'crawl', 0);
  assert.equal(rec.removed.length, 0);
});

test('a chunk with no kept rows still commits its range with no shard file', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const c = chunk(0, 3);
  c.samples[0].outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  const res = await sinkAt(out).commit(c);
  assert.equal(res.record.shard, null);
  assert.equal(res.manifest, null);
  assert.equal(res.record.rows + res.record.dead + res.record.filtered, 3);
  assert.equal((await recoverPartition(out, 'crawl', 0)).nextOffset, 3);
});

test('a temporary removed by the new owner\'s recovery fences the commit instead of failing the curator', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  // a second curator assigned the partition recovers it between our write and our rename of the dead letters
  const rename = fsp.rename;
  fsp.rename = async (from, to) => {
    if (String(from).includes(`${join('_dlq', 'topic=crawl')}`)) await recoverPartition(out, 'crawl', 0);
    return rename(from, to);
  };
  try {
    await assert.rejects(sinkAt(out).commit(chunk(0, 5)), (e: Error) => e instanceof FencedError);
  } finally {
    fsp.rename = rename;
  }
  assert.deepEqual(await readCommits(out, 'crawl', 0), [], 'no commit record for the lost range');
  // the partition's next owner commits the range as if nothing had happened
  const res = await sinkAt(out).commit(chunk(0, 5));
  assert.equal(res.record.end_offset, 4);
  assert.equal((await recoverPartition(out, 'crawl', 0)).nextOffset, 5);
});

test('a recovery racing our commit at the next offset leaves our placed files, and the record\'s files exist', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  // the CI race: a second curator recovers the partition after our renames and before our link
  const open = fsp.open;
  let removed: string[] = [];
  (fsp as { open: unknown }).open = async (p: string, ...rest: unknown[]) => {
    if (String(p).includes('_commits') && removed.length === 0) removed = (await recoverPartition(out, 'crawl', 0)).removed;
    return (open as (...a: unknown[]) => unknown)(p, ...rest);
  };
  let res;
  try {
    res = await sinkAt(out).commit(chunk(0, 5));
  } finally {
    (fsp as { open: unknown }).open = open;
  }
  assert.ok(!removed.some((p) => p.endsWith('.parquet')), 'the racing recovery leaves a file at the next offset alone');
  for (const f of [res.record.shard, res.record.dead_letters, res.record.state]) {
    assert.ok(f && existsSync(join(out, f)), `${f} exists after the commit`);
  }
  const again = await recoverPartition(out, 'crawl', 0);
  assert.deepEqual(again.removed, []);
  assert.equal(again.nextOffset, 5);
});

test('recovery with a stale view of the commit records keeps the files a record names by now', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const res = await sinkAt(out).commit(chunk(0, 5));
  // the records were listed before the zombie's link: recovery sees no record, but one exists when it deletes
  const readdir = fsp.readdir;
  (fsp as { readdir: unknown }).readdir = async (dir: string) =>
    String(dir).includes('_commits') ? [] : readdir(dir);
  let rec;
  try {
    rec = await recoverPartition(out, 'crawl', 0);
  } finally {
    (fsp as { readdir: unknown }).readdir = readdir;
  }
  assert.deepEqual(rec.removed, []);
  for (const f of [res.record.shard, res.record.dead_letters, res.record.state]) {
    assert.ok(f && existsSync(join(out, f)), `${f} kept`);
  }
  assert.equal((await recoverPartition(out, 'crawl', 0)).nextOffset, 5);
});

test('a recovery that deletes our temporary commit record fences the commit', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const link = fsp.link;
  fsp.link = async (from, to) => {
    await recoverPartition(out, 'crawl', 0);
    return link(from, to);
  };
  try {
    await assert.rejects(sinkAt(out).commit(chunk(0, 5)), (e: Error) => e instanceof FencedError);
  } finally {
    fsp.link = link;
  }
  assert.deepEqual(await readCommits(out, 'crawl', 0), []);
  const res = await sinkAt(out).commit(chunk(0, 5));
  assert.equal(res.record.end_offset, 4);
});
