import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of, toArray } from 'rxjs';
import { z } from 'zod';
import { balance } from '../../src/operators/balance';
import { dedupExact } from '../../src/operators/dedup-exact';
import { dedupNear } from '../../src/operators/dedup-near';
import { partitionKey } from '../../src/operators/sample';
import { softCap } from '../../src/operators/soft-cap';
import { partitionState, StateRegistry } from '../../src/operators/state';
import { batchOf, keptSample } from '../helpers/samples';

test('partitionState: one state per partition, created empty, snapshotted, restored through its schema, dropped', () => {
  const reg = new StateRegistry();
  const of = partitionState(reg, 'counter', {
    empty: (key) => ({ key, n: 0 }),
    schema: z.object({ n: z.number().int().nonnegative() }),
    fromJson: (json, key) => ({ key, n: json.n }),
    toJson: (s) => ({ n: s.n }),
  });
  const a = partitionKey('t', 0);
  const b = partitionKey('t', 1);
  of(a).n += 3;
  assert.equal(of(a).n, 3, 'the same object per partition');
  assert.equal(of(b).n, 0, 'another partition starts empty');
  assert.deepEqual(reg.snapshot(a), { counter: { n: 3 } });
  reg.restore(b, { counter: { n: 7 } });
  assert.deepEqual(of(b), { key: b, n: 7 });
  reg.restore(b, undefined);
  assert.equal(of(b).n, 0, 'no snapshot (a fresh partition): empty');
  reg.drop(a);
  assert.equal(of(a).n, 0, 'a dropped partition starts over');
  assert.throws(() => reg.restore(a, { counter: { n: -1 } }), /^Error: counter: malformed state snapshot for t\u00000: n: Number must be greater than or equal to 0$/);
  assert.throws(() => partitionState(reg, 'counter', { empty: () => 0, schema: z.number(), fromJson: (n) => n, toJson: (n) => n }), /registered twice/);
});

test('every stateful operator refuses a malformed snapshot with one line naming it, and restores its own', async () => {
  const reg = new StateRegistry();
  const ops = [
    dedupExact({ memory: 10, state: reg }),
    dedupNear({ state: reg }),
    balance({ vocabulary: ['star'], state: reg }),
    softCap({ alpha: 1, rate: 1, mode: 'systematic', seed: 1, state: reg }),
  ];
  const key = partitionKey('t', 0);
  const samples = Array.from({ length: 6 }, (_, i) => {
    const s = keptSample(i, { hash: `${i % 3}`.padStart(64, '0') });
    s.scores.clip_score = i / 6;
    return s;
  });
  for (const op of ops) await firstValueFrom(of(batchOf(samples)).pipe(op, toArray()));
  const snap = reg.snapshot(key);
  assert.deepEqual(Object.keys(snap).sort(), ['balance', 'dedup_exact', 'dedup_near', 'soft_cap']);
  const again = JSON.parse(JSON.stringify(snap)) as Record<string, unknown>;
  reg.restore(key, again);
  assert.deepEqual(reg.snapshot(key), snap, 'a restore gives back the same snapshot');
  for (const name of Object.keys(snap)) {
    const bad = { ...again, [name]: { v: 2 } };
    assert.throws(() => reg.restore(key, bad), new RegExp(`^Error: ${name}: malformed state snapshot for t\\u00000: `), name);
  }
});
