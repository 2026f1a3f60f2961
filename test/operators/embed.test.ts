import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of, toArray } from 'rxjs';
import { embed } from '../../src/operators/embed';
import type { Batch, Sample } from '../../src/operators/sample';
import { fakeBundle, fakeSample } from '../helpers/fake-bundle';
import { batchOf, keptSample } from '../helpers/samples';

const run = async (op: ReturnType<typeof embed>, batches: Batch[]) => firstValueFrom(of(...batches).pipe(op, toArray()));
const reason = (s: Sample) => (s.outcome.kind === 'dead' ? s.outcome.reason : s.outcome.kind);

test('one batched call of each encoder per batch; model output stored on every kept sample', async () => {
  const bundle = fakeBundle();
  const samples = [0, 1, 2, 3].map((i) => fakeSample(i, { objects: [{ label: 'star', patch: i }] }, 'a red star'));
  const [out] = await run(embed({ bundle }), [batchOf(samples)]);
  assert.deepEqual(bundle.calls.vision.map((c) => c.n), [4]);
  assert.deepEqual(bundle.calls.text, [['a red star', 'a red star', 'a red star', 'a red star']]);
  for (const s of out.samples) {
    assert.equal(s.outcome.kind, 'keep');
    assert.ok(s.model);
    assert.deepEqual(s.model.grid, { rows: 4, cols: 4 });
    assert.equal(s.model.saliency.length, 16);
    assert.ok(Math.abs(s.model.saliency.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    // the star's patch is the most salient
    assert.equal(s.model.saliency.indexOf(Math.max(...s.model.saliency)), s.coord.offset);
    // cos((e_star + 0.2 e_bg)/|.|, e_star) = 1 / sqrt(1.04)
    assert.ok(Math.abs(s.scores.clip_score - 1 / Math.sqrt(1.04)) < 1e-5);
    assert.equal(s.detections, null, 'no detector in this bundle');
  }
});

test('batchSize splits a batch into model batches', async () => {
  const bundle = fakeBundle();
  const samples = [0, 1, 2, 3, 4].map((i) => fakeSample(i, { objects: [] }));
  await run(embed({ bundle, batchSize: 2 }), [batchOf(samples)]);
  assert.deepEqual(bundle.calls.vision.map((c) => c.n), [2, 2, 1]);
  assert.equal(bundle.calls.text.length, 3);
});

test('clip score follows caption agreement', async () => {
  const bundle = fakeBundle();
  const [out] = await run(embed({ bundle }), [
    batchOf([
      fakeSample(0, { objects: [{ label: 'ring', patch: 0 }] }, 'a ring'),
      fakeSample(1, { objects: [{ label: 'ring', patch: 0 }] }, 'a moon'),
    ]),
  ]);
  assert.ok(out.samples[0].scores.clip_score > 0.9);
  assert.ok(Math.abs(out.samples[1].scores.clip_score) < 1e-6);
});

test('samples already dropped and samples without an image are not sent to the models', async () => {
  const bundle = fakeBundle();
  const dead = fakeSample(0, { objects: [] });
  dead.outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  const noImage = keptSample(1);
  noImage.image = null;
  const ok = fakeSample(2, { objects: [] });
  const [out] = await run(embed({ bundle }), [batchOf([dead, noImage, ok])]);
  assert.deepEqual(bundle.calls.vision.map((c) => c.n), [1]);
  assert.equal(out.samples[0].model, null);
  assert.equal(out.samples[1].model, null);
  assert.ok(out.samples[2].model);
  assert.deepEqual(out.samples.map(reason), ['filtered', 'keep', 'keep']);
});

test('a model error on one image dead-letters that sample only (model_error)', async () => {
  const bundle = fakeBundle();
  const samples = [
    fakeSample(0, { objects: [{ label: 'star', patch: 0 }] }),
    fakeSample(1, { objects: [], fail: true }),
    fakeSample(2, { objects: [{ label: 'moon', patch: 3 }] }),
  ];
  const [out] = await run(embed({ bundle }), [batchOf(samples)]);
  assert.deepEqual(out.samples.map(reason), ['keep', 'model_error', 'keep']);
  assert.match((out.samples[1].outcome as { message: string }).message, /vision encoder/);
  assert.ok(out.samples[0].model && out.samples[2].model);
  assert.equal(out.samples[1].model, null);
  // the failed batched call, then one call per image to find the bad one
  assert.deepEqual(bundle.calls.vision.map((c) => c.n), [3, 1, 1, 1]);
});

test('unusable model output (wrong saliency length, NaN) is a model_error too', async () => {
  const bundle = fakeBundle();
  const inner = bundle.vision.encode.bind(bundle.vision);
  bundle.vision.encode = async (images, keep) => {
    const out = await inner(images, keep);
    return out.map((o, i) => (i === 1 ? { embedding: o.embedding.map(() => NaN), saliency: o.saliency } : i === 2 ? { ...o, saliency: o.saliency.slice(0, 3) } : o));
  };
  const [out] = await run(embed({ bundle }), [batchOf([0, 1, 2].map((i) => fakeSample(i, { objects: [] })))]);
  assert.deepEqual(out.samples.map(reason), ['keep', 'model_error', 'model_error']);
});

test('with a detector: run once per model batch, detections stored for later stages', async () => {
  const bundle = fakeBundle({ detector: true });
  const samples = [
    fakeSample(0, { objects: [{ label: 'star', patch: 0, box: [1, 2, 10, 12], score: 0.8 }] }),
    fakeSample(1, { objects: [] }),
  ];
  const [out] = await run(embed({ bundle }), [batchOf(samples)]);
  assert.deepEqual(bundle.calls.detect, [2]);
  assert.deepEqual(out.samples[0].detections, [{ label: 'star', score: 0.8, box: [1, 2, 10, 12] }]);
  assert.deepEqual(out.samples[1].detections, []);
  const again = fakeBundle({ detector: true });
  await run(embed({ bundle: again, detect: false }), [batchOf([fakeSample(0, { objects: [] })])]);
  assert.deepEqual(again.calls.detect, []);
});

test('a bundle function is read once per batch (hot reload between batches)', async () => {
  const a = fakeBundle();
  const b = fakeBundle();
  let current = a;
  const op = embed({ bundle: () => current });
  await run(op, [batchOf([fakeSample(0, { objects: [] })])]);
  current = b;
  await run(op, [batchOf([fakeSample(1, { objects: [] })])]);
  assert.equal(a.calls.vision.length, 1);
  assert.equal(b.calls.vision.length, 1);
});
