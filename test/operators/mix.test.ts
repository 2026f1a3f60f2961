import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, from, of, tap, toArray } from 'rxjs';
import { DEFAULT_MIX_WEIGHTS as FROM_STORE, MixWeightsStore } from '../../src/curate/mix-weights';
import { DEFAULT_MIX_WEIGHTS, mix, mixScore, type MixWeights, newMixStats } from '../../src/operators/mix';
import type { Batch } from '../../src/operators/sample';
import type { ControlEvent } from '../../src/records';
import { batchOf, keptSample } from '../helpers/samples';

const close = (a: number, b: number, msg?: string): void => assert.ok(Math.abs(a - b) < 1e-9, msg ?? `${a} vs ${b}`);

const W: MixWeights = {
  version: 'w1',
  weights: { clip_score: 2, caption_quality: -0.5, novelty: 1 },
  bias: 0.25,
  stats: { clip_score: { mean: 0.3, std: 0.05 }, caption_quality: { mean: 4, std: 2 }, novelty: { mean: 0, std: 1 } },
};

function scored(offset: number, scores: Record<string, number>) {
  const s = keptSample(offset);
  s.scores = { ...scores };
  return s;
}

test('standardise with the frozen statistics, weighted sum plus bias', () => {
  // 0.25 + 2·(0.4 − 0.3)/0.05 − 0.5·(7 − 4)/2 + 1·(−1.5 − 0)/1 = 0.25 + 4 − 0.75 − 1.5
  close(mixScore({ clip_score: 0.4, caption_quality: 7, novelty: -1.5, unrelated: 100 }, W), 2);
  // the default weights: the standardised CLIP score
  close(mixScore({ clip_score: 0.35, caption_quality: 0.6, image_quality: 0.5 }, DEFAULT_MIX_WEIGHTS), 1);
  assert.equal(FROM_STORE, DEFAULT_MIX_WEIGHTS);
  assert.deepEqual(DEFAULT_MIX_WEIGHTS.weights, { clip_score: 1, caption_quality: 0.5, image_quality: 0.25 });
  assert.equal(DEFAULT_MIX_WEIGHTS.version, 'default-2');
});

test('a missing score counts as its mean (0 after standardisation) and is counted; names without stats are used raw', async () => {
  const missing: string[] = [];
  close(mixScore({ clip_score: 0.4, novelty: Number.NaN }, W, (n) => missing.push(n)), 0.25 + 4);
  assert.deepEqual(missing.sort(), ['caption_quality', 'novelty']);
  close(mixScore({ tag_confidence: 0.5 }, { version: 'x', weights: { tag_confidence: 3 }, bias: 0, stats: {} }), 1.5);
  close(mixScore({ q: 0.5 }, { version: 'x', weights: { q: 3 }, bias: 0, stats: { q: { mean: 0, std: 0 } } }), 1.5);

  const stats = newMixStats();
  const dead = scored(2, { clip_score: 0.4 });
  dead.outcome = { kind: 'dead', reason: 'decode_error', message: 'x' };
  const [out] = await firstValueFrom(
    of(batchOf([scored(0, { clip_score: 0.4, caption_quality: 4, novelty: 0 }), scored(1, { clip_score: 0.3 }), dead])).pipe(
      mix({ weights: () => W, stats }),
      toArray(),
    ),
  );
  const [a, b, d] = out.samples;
  close(a.mixed!.score, 4.25);
  assert.equal(a.mixed!.weightsVersion, 'w1');
  assert.deepEqual(a.flags, []);
  close(b.mixed!.score, 0.25);
  assert.deepEqual(b.flags, ['mix_missing:caption_quality', 'mix_missing:novelty']);
  assert.equal(d.mixed, null, 'dropped samples are not scored');
  assert.deepEqual(stats, { batches: 1, samples: 2, missing: { caption_quality: 1, novelty: 1 }, lastVersion: 'w1' });
});

const W2: MixWeights = { ...W, version: 'w2', weights: { clip_score: 1 }, bias: -1 };

test('hot reload: weights changed between batch 1 and batch 2 change only batch 2', async () => {
  const store = new MixWeightsStore(W);
  const b1 = batchOf([scored(0, { clip_score: 0.4 }), scored(1, { clip_score: 0.2 })]);
  const b2 = batchOf([scored(2, { clip_score: 0.4 }), scored(3, { clip_score: 0.2 })]);
  let reads = 0;
  const op = mix({ weights: () => (reads++, store.current()) });
  // the change lands after batch 1 left the operator and before batch 2 enters it
  const out = await firstValueFrom(
    from([b1, b2]).pipe(
      op,
      tap((b: Batch) => {
        if (b === b1) assert.equal(store.apply(event({ clip_score: 1 }, -1, 1000)), true);
      }),
      toArray(),
    ),
  );
  assert.equal(reads, 2, 'read once per batch');
  const [o1, o2] = out;
  close(o1.samples[0].mixed!.score, 0.25 + 2 * 2); // the missing caption_quality and novelty count 0
  close(o1.samples[1].mixed!.score, 0.25 + 2 * -2);
  assert.equal(o1.samples[0].mixed!.weightsVersion, 'w1');
  close(o2.samples[0].mixed!.score, -1 + 2);
  close(o2.samples[1].mixed!.score, -1 - 2);
  assert.match(o2.samples[0].mixed!.weightsVersion, /^mix-1000-[0-9a-f]{8}$/);
  assert.equal(o2.samples[1].mixed!.weightsVersion, o2.samples[0].mixed!.weightsVersion);
});

test('a change during a batch does not affect that batch', async () => {
  let current: MixWeights = W;
  const samples = Array.from({ length: 6 }, (_, i) => scored(i, { clip_score: 0.4 }));
  // every score lookup of sample 2 swaps the weights in the middle of the batch
  Object.defineProperty(samples[2], 'scores', {
    get() {
      current = W2;
      return { clip_score: 0.4 };
    },
  });
  const out = await firstValueFrom(of(batchOf(samples), batchOf([scored(6, { clip_score: 0.4 })])).pipe(mix({ weights: () => current }), toArray()));
  assert.deepEqual(
    out[0].samples.map((s) => s.mixed!.weightsVersion),
    Array(6).fill('w1'),
  );
  for (const s of out[0].samples) close(s.mixed!.score, 4.25);
  assert.equal(out[1].samples[0].mixed!.weightsVersion, 'w2');
  close(out[1].samples[0].mixed!.score, -1 + 2);

  // the weights object mutated in place mid-batch does not leak either: terms are taken at batch start
  const mutable: MixWeights = { ...W, weights: { ...W.weights }, stats: { ...W.stats } };
  const s0 = scored(0, { clip_score: 0.4 });
  const s1 = scored(1, { clip_score: 0.4 });
  Object.defineProperty(s1, 'scores', {
    get() {
      mutable.weights.clip_score = 100;
      return { clip_score: 0.4 };
    },
  });
  const s2 = scored(2, { clip_score: 0.4 });
  const [o] = await firstValueFrom(of(batchOf([s0, s1, s2])).pipe(mix({ weights: () => mutable }), toArray()));
  for (const s of o.samples) close(s.mixed!.score, 4.25);
});

function event(weights: Record<string, number>, bias: number | null, publishedAt: number, kind: ControlEvent['kind'] = 'mix_weights'): ControlEvent {
  return { kind, model_version: null, bundle_uri: null, weights, bias, published_at: publishedAt, publisher: 'trainer-1' };
}

test('MixWeightsStore.apply on control events', () => {
  const base: MixWeights = { version: 'default-1', weights: { clip_score: 1 }, bias: 0, stats: { clip_score: { mean: 0.25, std: 0.1 } } };
  const store = new MixWeightsStore(base);
  assert.equal(store.current().version, 'default-1');
  assert.deepEqual(store.current(), base);

  // model_version events are not for the store
  assert.equal(store.apply(event({ clip_score: 3 }, 1, 10, 'model_version')), false);
  assert.equal(store.current().version, 'default-1');

  // new weights and bias; statistics kept
  assert.equal(store.apply(event({ clip_score: 0.5, novelty: 2 }, 0.1, 20)), true);
  const v1 = store.current();
  assert.match(v1.version, /^mix-20-[0-9a-f]{8}$/);
  assert.deepEqual(v1.weights, { clip_score: 0.5, novelty: 2 });
  assert.equal(v1.bias, 0.1);
  assert.deepEqual(v1.stats, { clip_score: { mean: 0.25, std: 0.1 } });

  // the same content again (the compacted topic replays it on start) is no change, whatever the time
  assert.equal(store.apply(event({ novelty: 2, clip_score: 0.5 }, 0.1, 30)), false);
  assert.equal(store.current(), v1);

  // statistics ride along as <name>.mean / <name>.std; bias null keeps the bias; no weights keeps the weights
  assert.equal(store.apply(event({ 'novelty.mean': 0.2, 'novelty.std': 0.4 }, null, 40)), true);
  const v2 = store.current();
  assert.deepEqual(v2.weights, { clip_score: 0.5, novelty: 2 });
  assert.equal(v2.bias, 0.1);
  assert.deepEqual(v2.stats, { clip_score: { mean: 0.25, std: 0.1 }, novelty: { mean: 0.2, std: 0.4 } });
  assert.match(v2.version, /^mix-40-/);
  close(mixScore({ clip_score: 0.35, novelty: 0.6 }, v2), 0.1 + 0.5 + 2);

  // bad events are ignored
  assert.equal(store.apply(event({ clip_score: Number.NaN }, 0, 50)), false);
  assert.equal(store.apply(event({ 'novelty.mean': 1 }, 0, 50)), false, 'half a statistic');
  assert.equal(store.apply(event({ 'novelty.mean': 1, 'novelty.std': 0 }, 0, 50)), false, 'std 0');
  assert.equal(store.current(), v2);

  // the objects handed out are never changed by a later update
  assert.equal(store.apply(event({ clip_score: 1 }, 0, 60)), true);
  assert.deepEqual(v2.weights, { clip_score: 0.5, novelty: 2 });
  assert.ok(Object.isFrozen(store.current().weights));
});
