import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of, toArray } from 'rxjs';
import { dedupExact } from '../../src/operators/dedup-exact';
import { StateRegistry } from '../../src/operators/state';
import { partitionKey } from '../../src/operators/sample';
import { batchOf, keptSample } from '../helpers/samples';

const run = async (op: ReturnType<typeof dedupExact>, batches: ReturnType<typeof batchOf>[]) =>
  firstValueFrom(of(...batches).pipe(op, toArray()));

test('keeps the first of identical pixel hashes, within and across batches', async () => {
  const out = await run(dedupExact({ memory: 10 }), [
    batchOf([keptSample(0, { hash: 'a'.repeat(64) }), keptSample(1, { hash: 'a'.repeat(64) })]),
    batchOf([keptSample(2, { hash: 'b'.repeat(64) }), keptSample(3, { hash: 'a'.repeat(64) })]),
  ]);
  const kinds = out.flatMap((b) => b.samples.map((s) => (s.outcome.kind === 'filtered' ? s.outcome.reason : s.outcome.kind)));
  assert.deepEqual(kinds, ['keep', 'duplicate_exact', 'keep', 'duplicate_exact']);
});

test('partitions do not share memory', async () => {
  const h = 'c'.repeat(64);
  const out = await run(dedupExact({ memory: 10 }), [
    batchOf([keptSample(0, { hash: h, partition: 0 })], 't', 0),
    batchOf([keptSample(0, { hash: h, partition: 1 })], 't', 1),
  ]);
  assert.deepEqual(out.map((b) => b.samples[0].outcome.kind), ['keep', 'keep']);
});

test('memory is bounded: the least recently seen hash is evicted', async () => {
  const state = new StateRegistry();
  const hashes = ['1', '2', '3', '1'].map((c) => c.repeat(64));
  const out = await run(dedupExact({ memory: 2, state }), [batchOf(hashes.map((h, i) => keptSample(i, { hash: h })))]);
  // '1' was evicted by '3', so its second appearance is kept
  assert.deepEqual(out[0].samples.map((s) => s.outcome.kind), ['keep', 'keep', 'keep', 'keep']);
  const snap = state.snapshot(partitionKey('t', 0)) as { dedup_exact: { hashes: string[] } };
  assert.equal(snap.dedup_exact.hashes.length, 2);
});

test('state snapshot restores the same decisions (restart and replay)', async () => {
  const state = new StateRegistry();
  const h = 'd'.repeat(64);
  await run(dedupExact({ memory: 10, state }), [batchOf([keptSample(0, { hash: h })])]);
  const snap = state.snapshot(partitionKey('t', 0));
  const fresh = new StateRegistry();
  const op = dedupExact({ memory: 10, state: fresh });
  fresh.restore(partitionKey('t', 0), JSON.parse(JSON.stringify(snap)));
  const out = await run(op, [batchOf([keptSample(5, { hash: h })])]);
  assert.equal(out[0].samples[0].outcome.kind, 'filtered');
  fresh.drop(partitionKey('t', 0));
  const again = await run(op, [batchOf([keptSample(6, { hash: h })])]);
  assert.equal(again[0].samples[0].outcome.kind, 'keep');
});

test('samples already dropped upstream are left alone', async () => {
  const s = keptSample(0);
  s.outcome = { kind: 'dead', reason: 'decode_error', message: 'x' };
  const out = await run(dedupExact({ memory: 10 }), [batchOf([s, keptSample(1, { hash: s.image!.contentHash })])]);
  assert.deepEqual(out[0].samples.map((x) => x.outcome.kind), ['dead', 'keep']);
});
