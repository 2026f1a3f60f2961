import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ShardChunk } from '../../../src/operators/roll-shards';
import { type CommitRecord, FencedError, partitionPaths, readCommits, readState, recoverPartition } from '../../../src/streams/shards/shard-log';
import { ShardSink } from '../../../src/streams/shards/shard-sink';
import { duckQuery, sqlQuote } from '../../helpers/duckdb';
import { keptSample } from '../../helpers/samples';
import { LocalShardStore } from '../../../src/streams/shards/shard-store';
import { RACING_WRITERS } from '../../helpers/racing-writers';

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
  // attempt-unique names (shard-log.ts rangeFile), one attempt for the shard, the dead letters and the state
  const attempt = /^topic=crawl\/partition=0\/00000000000000000000-00000000000000000004\.([0-9a-z]+)\.parquet$/.exec(r.shard!)?.[1];
  assert.ok(attempt, r.shard!);
  assert.equal(r.dead_letters, `_dlq/topic=crawl/partition=0/00000000000000000000-00000000000000000004.${attempt}.jsonl`);
  assert.equal(r.state, `_state/topic=crawl/partition=0/00000000000000000000-00000000000000000004.${attempt}.json.gz`);
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
  writeFileSync(join(p.shards, '00000000000000000005-00000000000000000007.zombie.parquet'), 'orphan');
  writeFileSync(join(p.shards, '.tmp-00000000000000000005-x.parquet'), 'partial');
  writeFileSync(join(p.dlq, '00000000000000000005-00000000000000000007.zombie.jsonl'), '{}');
  writeFileSync(join(p.state, '00000000000000000005-00000000000000000007.zombie.json.gz'), 'state');
  writeFileSync(join(p.commits, '.tmp-00000000000000000005'), '{}');
  // unnamed files inside the committed range (a dead attempt; a name an earlier version wrote): nobody can still commit them
  writeFileSync(join(p.shards, '00000000000000000002-00000000000000000004.deadattempt.parquet'), 'stale');
  writeFileSync(join(p.state, '00000000000000000000.json.gz'), 'stale');
  const rec = await recoverPartition(out, 'crawl', 0);
  assert.equal(rec.nextOffset, 5);
  assert.equal(rec.removed.length, 4, rec.removed.join(', '));
  const name = (rel: string | null) => rel!.split('/').pop()!;
  const [first] = await readCommits(out, 'crawl', 0);
  assert.deepEqual(readdirSync(p.shards).sort(), [name(first.shard), '00000000000000000005-00000000000000000007.zombie.parquet']);
  assert.deepEqual(readdirSync(p.state).sort(), [name(first.state), '00000000000000000005-00000000000000000007.zombie.json.gz']);
  assert.equal(readdirSync(p.commits).length, 1);
  // the next commit (offsets 5-9) names its own files and removes what it does not name in its range
  const { record: next } = await sink.commit(chunk(5, 5));
  assert.match(name(next.shard), /^00000000000000000005-00000000000000000009\.[0-9a-z]+\.parquet$/);
  assert.deepEqual(readdirSync(p.shards).sort(), [name(first.shard), name(next.shard)]);
  assert.deepEqual(readdirSync(p.dlq).sort(), [name(first.dead_letters), name(next.dead_letters)]);
  assert.deepEqual(readdirSync(p.state).sort(), [name(first.state), name(next.state)]);
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

/** A promise with its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Stops each writer, by tag, at the step that creates its commit record until the test lets it go. */
class Holds {
  private readonly at = new Map<string, { reached: ReturnType<typeof deferred>; go: ReturnType<typeof deferred> }>();
  private of(tag: string) {
    if (!this.at.has(tag)) this.at.set(tag, { reached: deferred(), go: deferred() });
    return this.at.get(tag)!;
  }
  /** called by the writer: all its files are placed, its record is next */
  async hold(tag: string): Promise<void> {
    this.of(tag).reached.resolve();
    await this.of(tag).go.promise;
  }
  reached(tag: string): Promise<void> {
    return this.of(tag).reached.promise;
  }
  release(tag: string): void {
    this.of(tag).go.resolve();
  }
}

/**
 * The kill campaign's interleaving: the winner places all its files and stops before its record; the loser
 * places all its files (with shared names these replaced the winner's) and stops too; the winner creates
 * its record, then the loser tries and is fenced. `commit(tag)` starts a writer's commit.
 */
async function raceFor<T>(holds: Holds, commit: (tag: string) => Promise<T>, winner: string, loser: string): Promise<T> {
  const w = commit(winner);
  await Promise.race([holds.reached(winner), w]);
  const l = commit(loser);
  await Promise.race([holds.reached(loser), l]);
  holds.release(winner);
  const won = await w;
  holds.release(loser);
  await assert.rejects(l, FencedError);
  return won;
}

for (const [what, ends] of Object.entries(RACING_WRITERS)) {
  for (const winner of ['A', 'B'] as const) {
    const loser = winner === 'A' ? 'B' : 'A';
    test(`a zombie and the new owner commit one start with ${what}: ${winner}'s record names ${winner}'s shard and state, ${loser}'s files go`, async () => {
      const out = mkdtempSync(join(tmpdir(), 'sink-'));
      const holds = new Holds();
      const writerChunk = (tag: 'A' | 'B') => {
        const [from, to] = ends[tag];
        return { ...chunk(from, to - from + 1), state: { writer: tag, end: to } };
      };
      const commit = (tag: string) =>
        new ShardSink({ store: new LocalShardStore(out), configHash: 'cfg1', modelVersion: tag, deadLetterBytes: 8, compression: 'SNAPPY' }).commit(writerChunk(tag as 'A' | 'B'));
      const link = fsp.link;
      fsp.link = async (from, to) => {
        if (String(to).includes('_commits')) await holds.hold((JSON.parse(readFileSync(from, 'utf8')) as CommitRecord).model_version);
        return link(from, to);
      };
      let won;
      try {
        won = (await raceFor(holds, commit, winner, loser)).record;
      } finally {
        fsp.link = link;
      }
      const [from, to] = ends[winner];
      assert.deepEqual(await readCommits(out, 'crawl', 0), [won]);
      assert.equal(won.end_offset, to);
      // the record's state, shard and dead letters are the winner's
      assert.deepEqual(await readState(out, won.state!), { writer: winner, end: to });
      const rows = await duckQuery(`SELECT source_offset, model_version FROM read_parquet(${sqlQuote(join(out, won.shard!))}) ORDER BY 1`);
      const kept = Array.from({ length: to - from + 1 }, (_, i) => from + i).filter((o) => o !== from + 1 && o !== from + 2);
      assert.deepEqual(rows.map((r) => [Number(r.source_offset), r.model_version]), kept.map((o) => [o, winner]));
      assert.equal(rows.length, won.rows);
      assert.equal(JSON.parse(readFileSync(join(out, won.dead_letters!), 'utf8')).source_offset, from + 1);
      // the fenced loser removed its files: only what the record names is left, and recovery finds nothing more
      const p = partitionPaths(out, 'crawl', 0);
      const name = (rel: string | null) => rel!.split('/').pop()!;
      assert.deepEqual([readdirSync(p.shards), readdirSync(p.dlq), readdirSync(p.state)], [[name(won.shard)], [name(won.dead_letters)], [name(won.state)]]);
      const rec = await recoverPartition(out, 'crawl', 0);
      assert.deepEqual(rec.removed, []);
      assert.deepEqual([rec.nextOffset, rec.state], [to + 1, { writer: winner, end: to }]);
    });
  }
}

test('a zombie that places its files after the new owner\'s record and dies: the record stays the owner\'s, recovery removes the zombie\'s files', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sink-'));
  const p = partitionPaths(out, 'crawl', 0);
  const zombieRange = `${'10'.padStart(20, '0')}-${'30'.padStart(20, '0')}`;
  const { rename, link } = fsp;
  let owner: CommitRecord | undefined;
  // the zombie (10-30) passed its fence check; the new owner commits 10-20 before the zombie's first rename
  fsp.rename = async (from, to) => {
    if (String(from).includes(zombieRange) && !owner) owner = (await sinkAt(out).commit({ ...chunk(10, 11), state: { writer: 'B', end: 20 } })).record;
    return rename(from, to);
  };
  // and the zombie is killed just before its record
  fsp.link = async (from, to) => {
    if (String(from).includes(zombieRange)) throw Object.assign(new Error('killed'), { code: 'EKILLED' });
    return link(from, to);
  };
  try {
    await assert.rejects(sinkAt(out).commit({ ...chunk(10, 21), state: { writer: 'A', end: 30 } }), /killed/);
  } finally {
    Object.assign(fsp, { rename, link });
  }
  assert.ok(owner);
  for (const dir of [p.shards, p.dlq, p.state]) assert.equal(readdirSync(dir).filter((n) => n.includes(zombieRange)).length, 1, 'the zombie left a file');
  assert.deepEqual(await readCommits(out, 'crawl', 0), [owner]);
  const rec = await recoverPartition(out, 'crawl', 0);
  assert.deepEqual([rec.nextOffset, rec.state], [21, { writer: 'B', end: 20 }]);
  assert.equal(rec.removed.length, 3, rec.removed.join(', '));
  const name = (rel: string | null) => rel!.split('/').pop()!;
  assert.deepEqual([readdirSync(p.shards), readdirSync(p.dlq), readdirSync(p.state)], [[name(owner.shard)], [name(owner.dead_letters)], [name(owner.state)]]);
});
