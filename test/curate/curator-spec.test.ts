/**
 * The curator's concurrency rules, with a fake shard store (in memory, its commits can be held) and virtual
 * time for the roller's timers:
 *  - records of a partition are processed and committed in offset order, one batch at a time in the
 *    stateful section, so each commit's operator-state snapshot covers exactly the offsets up to its end;
 *  - push waits while too many batches are in flight or too many shards wait to commit (backpressure);
 *  - a revoked partition's batches in flight are dropped, and its open shard with them;
 *  - a failing store fails the run and every caller waiting on it;
 *  - idle closes follow the scheduler's clock, not the wall clock.
 */
import assert from 'node:assert/strict';
import { gunzipSync } from 'node:zlib';
import { test } from 'node:test';
import { VirtualTimeScheduler } from 'rxjs';
import sharp from 'sharp';
import { loadConfig } from '../../src/config/config';
import { type Inbound, Curator } from '../../src/curate/curator';
import { MixWeightsStore } from '../../src/curate/mix-weights';
import type { CrawlEvent } from '../../src/records';
import type { CommitRecord, Recovered } from '../../src/streams/shards/shard-log';
import type { RangeFiles, ShardStore } from '../../src/streams/shards/store';
import { event } from '../helpers/samples';

/** Keeps committed ranges in memory; `hold()` makes commits wait until `release()`. */
class FakeStore implements ShardStore {
  readonly root = 'mem://';
  readonly ranges: { files: RangeFiles; state: Record<string, unknown> }[] = [];
  fail: Error | null = null;
  private gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  waiting = 0;

  uri(rel: string): string {
    return `mem://${rel}`;
  }
  async partitions(): Promise<{ topic: string; partition: number }[]> {
    return [];
  }
  async readCommits(): Promise<CommitRecord[]> {
    return [];
  }
  async isEmpty(): Promise<boolean> {
    return this.ranges.length === 0;
  }
  async readRows(): Promise<Record<string, unknown>[]> {
    return [];
  }
  async recover(): Promise<Recovered> {
    return { nextOffset: null, state: undefined, commits: [], removed: [] };
  }
  async readState(): Promise<Record<string, unknown>> {
    return {};
  }
  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }
  release(): void {
    this.open?.();
    this.gate = null;
  }
  async commit(files: RangeFiles): Promise<CommitRecord> {
    this.waiting++;
    await this.gate;
    this.waiting--;
    if (this.fail) throw this.fail;
    this.ranges.push({ files, state: JSON.parse(gunzipSync(files.state).toString('utf8')) as Record<string, unknown> });
    return { ...files.record, shard: files.rows.length ? `${files.start}.parquet` : null, shard_bytes: 0, dead_letters: null, state: null };
  }
  of(partition: number): { files: RangeFiles; state: Record<string, unknown> }[] {
    return this.ranges.filter((r) => r.files.partition === partition);
  }
}

/** Six distinct solid-colour PNGs: image k of a partition repeats every six records (exact duplicates). */
const COLOURS = ['#ff0000', '#00ff00', '#0000ff', '#ffff00', '#00ffff', '#ff00ff'];
const images = Promise.all(COLOURS.map((c) => sharp({ create: { width: 40, height: 40, channels: 3, background: c } }).png().toBuffer()));

function curator(flags: Record<string, string>, store: FakeStore, scheduler?: VirtualTimeScheduler): { cur: Curator; events: Map<string, CrawlEvent> } {
  const events = new Map<string, CrawlEvent>();
  const cfg = loadConfig({ flags: { out: '/nonexistent', models: 'none', 'softCap.enabled': false, 'dedup.near': false, 'enrich.enabled': false, ...flags } });
  const cur = new Curator(cfg, { decode: async (raw) => events.get(raw.toString())!, fetch: null, bundle: null, weights: new MixWeightsStore(), store, scheduler });
  return { cur, events };
}

async function records(events: Map<string, CrawlEvent>, partition: number, from: number, n: number): Promise<Inbound[]> {
  const imgs = await images;
  return Array.from({ length: n }, (_, k) => {
    const offset = from + k;
    const id = `p${partition}-${offset}`;
    events.set(id, event(id, { image: imgs[offset % imgs.length] }));
    return { coord: { topic: 't', partition, offset }, value: Buffer.from(id) };
  });
}

test('per partition: commits in offset order, every offset once, and each snapshot covers exactly the offsets up to its end', async () => {
  const store = new FakeStore();
  const { cur, events } = curator({ batchSize: '4', 'shard.maxRows': '2', 'shard.idleMs': '3600000', 'shard.maxAgeMs': '3600000' }, store);
  // two edges push their partitions at the same time, in uneven slices
  const edge = async (partition: number, sizes: number[]) => {
    let at = 0;
    for (const n of sizes) {
      await cur.push('t', partition, await records(events, partition, at, n));
      at += n;
    }
    return at;
  };
  const [n0, n1] = await Promise.all([edge(0, [3, 9, 1, 7, 4]), edge(1, [10, 2, 8, 5])]);
  await cur.flush();
  await cur.close();
  for (const [p, n] of [[0, n0], [1, n1]]) {
    const ranges = store.of(p);
    assert.ok(ranges.length >= 3, `partition ${p}: ${ranges.length} commits`);
    let next = 0;
    for (const { files, state } of ranges) {
      assert.equal(files.start, next, `partition ${p}: ranges are contiguous and in order`);
      assert.equal(files.record.records, files.end - files.start + 1);
      assert.equal(files.record.rows + files.record.dead + files.record.filtered, files.record.records, 'every offset accounted for once');
      // the first six offsets bring six new images, every later one is an exact duplicate: the snapshot
      // taken at the close holds the hashes of exactly the images up to `end`
      const hashes = (state.dedup_exact as { hashes: string[] }).hashes;
      assert.equal(hashes.length, Math.min(6, files.end + 1), `partition ${p}: snapshot at ${files.end}`);
      next = files.end + 1;
    }
    assert.equal(next, n, `partition ${p}: all ${n} offsets committed`);
    const rows = ranges.reduce((a, r) => a + r.files.rows.length, 0);
    assert.equal(rows, 6, `partition ${p}: the six distinct images are the rows, the repeats are filtered`);
  }
});

test('backpressure: push waits while shards wait to commit, and goes on when they do', async () => {
  const store = new FakeStore();
  store.hold();
  const { cur, events } = curator({ batchSize: '2', 'shard.maxRows': '2', 'shard.idleMs': '3600000', 'shard.maxAgeMs': '3600000' }, store);
  let taken = 0;
  const pushing = (async () => {
    for (let at = 0; at < 40; at += 2) {
      await cur.push('t', 0, await records(events, 0, at, 2));
      taken++;
    }
  })();
  // wait until the pipeline is stuck on the held store
  for (let i = 0; i < 200 && !cur.backlogged; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cur.backlogged, 'shards waiting to commit make the curator backlogged');
  const stuckAt = taken;
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(taken, stuckAt, 'push does not take more batches while the store holds the commits');
  assert.ok(stuckAt < 20, `${stuckAt} of 20 batches taken`);
  store.release();
  await pushing;
  await cur.flush();
  await cur.close();
  assert.equal(taken, 20);
  assert.equal(store.of(0).at(-1)!.files.end, 39);
});

test('a revoked partition: its batches in flight and its open shard are dropped, other partitions go on', async () => {
  const store = new FakeStore();
  const { cur, events } = curator({ batchSize: '4', 'shard.maxRows': '1000', 'shard.idleMs': '3600000', 'shard.maxAgeMs': '3600000' }, store);
  await cur.push('t', 0, await records(events, 0, 0, 8));
  await cur.push('t', 1, await records(events, 1, 0, 8));
  await cur.revoke('t', 0);
  await cur.flush();
  await cur.close();
  assert.deepEqual(store.of(0), [], 'nothing of the revoked partition is committed');
  assert.equal(store.of(1).length, 1);
  assert.equal(store.of(1)[0].files.end, 7);
});

test('a store that fails fails the run and whoever waits on it', async () => {
  const store = new FakeStore();
  store.fail = new Error('disk full');
  const { cur, events } = curator({ batchSize: '4', 'shard.maxRows': '4', 'shard.idleMs': '3600000', 'shard.maxAgeMs': '3600000' }, store);
  await cur.push('t', 0, await records(events, 0, 0, 4));
  await assert.rejects(cur.finished, /disk full/);
  await assert.rejects(cur.flush(), /disk full/);
  await assert.rejects(cur.push('t', 0, await records(events, 0, 4, 4)), /disk full/);
});

test('an idle partition closes its shard on the scheduler\'s clock (virtual time: no waiting an hour)', async () => {
  const store = new FakeStore();
  const scheduler = new VirtualTimeScheduler();
  const { cur, events } = curator({ batchSize: '4', 'shard.maxRows': '1000', 'shard.idleMs': '3600000', 'shard.maxAgeMs': '36000000' }, store, scheduler);
  await cur.push('t', 0, await records(events, 0, 0, 3));
  // the batch reaches the roller, which schedules the idle close an hour ahead on the virtual clock
  for (let i = 0; i < 500 && scheduler.actions.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(store.ranges.length, 0, 'nothing closes before the hour passes');
  scheduler.flush();
  for (let i = 0; i < 500 && store.ranges.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(store.ranges.length, 1);
  assert.equal(store.ranges[0].files.record.close_reason, 'idle');
  assert.equal(store.ranges[0].files.end, 2);
  await cur.close();
});
