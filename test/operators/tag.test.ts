import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of, toArray } from 'rxjs';
import { choosePatches } from '../../src/operators/choose-patches';
import { embed } from '../../src/operators/embed';
import type { Batch, Sample } from '../../src/operators/sample';
import { promptFor, softmax, tag, toTags, zeroShotConfidence } from '../../src/operators/tag';
import { fakeBundle, fakeSample, type FakeImage } from '../helpers/fake-bundle';
import { batchOf } from '../helpers/samples';

type Op = ReturnType<typeof tag>;
const run = async (ops: Op[], batches: Batch[]) =>
  firstValueFrom(of(...batches).pipe((src) => ops.reduce((acc, op) => acc.pipe(op), src), toArray()));
const labels = (s: Sample) => (s.tags ?? []).map((t) => t.label);
const reason = (s: Sample) => (s.outcome.kind === 'dead' ? s.outcome.reason : s.outcome.kind);

const starAndRing: FakeImage = {
  objects: [
    { label: 'star', patch: 0, box: [0, 0, 10, 10], score: 0.9 },
    { label: 'ring', patch: 15, box: [50, 50, 10, 10], score: 0.6 },
  ],
};

test('helpers: prompt template, softmax, best score per label above tau', () => {
  assert.equal(promptFor('a photo of a {}', 'ring'), 'a photo of a ring');
  assert.equal(promptFor('', 'ring'), 'ring');
  const p = softmax([1, 1, 0], 1);
  assert.ok(Math.abs(p[0] - p[1]) < 1e-12 && Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-12);
  assert.deepEqual(softmax([1000, 0], 0.01), [1, 0]);
  assert.deepEqual(
    toTags([{ label: 'a', score: 0.4 }, { label: 'b', score: 0.7 }, { label: 'a', score: 0.8 }, { label: 'c', score: 0.2 }], 0.3),
    [{ label: 'a', score: 0.8 }, { label: 'b', score: 0.7 }],
  );
  const conf = zeroShotConfidence([1, 0, 0], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
  assert.ok(conf[0] > 0.99);
});

test('detector source: classes with score >= tau, best detection per class, highest first', async () => {
  const bundle = fakeBundle({ detector: true });
  const s = fakeSample(0, {
    objects: [
      { label: 'star', patch: 0, score: 0.6 },
      { label: 'star', patch: 1, score: 0.9 },
      { label: 'ring', patch: 2, score: 0.4 },
      { label: 'moon', patch: 3, score: 0.55 },
    ],
  });
  const [out] = await run([embed({ bundle }), tag({ bundle, threshold: 0.5 })], [batchOf([s])]);
  assert.deepEqual(out.samples[0].tags, [{ label: 'star', score: 0.9 }, { label: 'moon', score: 0.55 }]);
  assert.equal(out.samples[0].scores.tag_confidence, 0.9);
  // reused the detections of the embed stage: one detector call in all, no second vision pass
  assert.deepEqual(bundle.calls.detect, [1]);
  assert.equal(bundle.calls.vision.length, 1);
  const [strict] = await run([embed({ bundle: fakeBundle({ detector: true }) }), tag({ bundle, threshold: 0.95 })], [batchOf([fakeSample(1, starAndRing)])]);
  assert.deepEqual(strict.samples[0].tags, []);
  assert.equal(strict.samples[0].scores.tag_confidence, 0);
});

test("detector source runs the detector itself when embed did not", async () => {
  const bundle = fakeBundle({ detector: true });
  const [out] = await run([tag({ bundle, source: 'detector', threshold: 0.5 })], [batchOf([fakeSample(0, starAndRing), fakeSample(1, { objects: [] })])]);
  assert.deepEqual(bundle.calls.detect, [2]);
  assert.deepEqual(labels(out.samples[0]), ['star', 'ring']);
  assert.deepEqual(out.samples[1].tags, []);
});

test("'auto' uses the detector when the bundle has one, zero-shot otherwise; 'zero-shot' can be forced", async () => {
  const withDet = fakeBundle({ detector: true });
  const ringOnly: FakeImage = { objects: [{ label: 'ring', patch: 5, score: 0.2 }] };
  const [a] = await run([embed({ bundle: withDet }), tag({ bundle: withDet, threshold: 0.3 })], [batchOf([fakeSample(0, ringOnly)])]);
  assert.deepEqual(a.samples[0].tags, [], 'detector score 0.2 < tau');
  assert.equal(withDet.calls.vision.length, 1, 'no zero-shot pass');

  const [z] = await run([embed({ bundle: withDet }), tag({ bundle: withDet, threshold: 0.3, source: 'zero-shot' })], [batchOf([fakeSample(0, ringOnly)])]);
  assert.deepEqual(labels(z.samples[0]), ['ring']);
  assert.ok(z.samples[0].tags![0].score > 0.99);

  const noDet = fakeBundle();
  const [n] = await run([embed({ bundle: noDet }), tag({ bundle: noDet, threshold: 0.3 })], [batchOf([fakeSample(0, ringOnly)])]);
  assert.deepEqual(labels(n.samples[0]), ['ring']);
});

test("source 'detector' with a bundle without one fails loudly", async () => {
  const bundle = fakeBundle();
  await assert.rejects(run([tag({ bundle, source: 'detector' })], [batchOf([fakeSample(0, starAndRing)])]), /needs a bundle with a detector/);
});

test('zero-shot: one masked vision call per batch over the top ceil(rho*P) patches; vocabulary encoded once', async () => {
  const bundle = fakeBundle();
  const op = tag({ bundle, threshold: 0.3 });
  const samples = () => [fakeSample(0, starAndRing), fakeSample(1, { objects: [{ label: 'moon', patch: 7 }] })];
  const out = await run([embed({ bundle }), choosePatches({ rho: 0.3 }), op], [batchOf(samples()), batchOf(samples())]);
  // embed once and tag once per batch
  assert.deepEqual(bundle.calls.vision.map((c) => c.n), [2, 2, 2, 2]);
  const tagCalls = bundle.calls.vision.filter((c) => c.keep !== undefined);
  assert.equal(tagCalls.length, 2);
  for (const c of tagCalls) for (const m of c.keep!) assert.equal(m!.reduce((a, b) => a + b, 0), Math.ceil(0.3 * 16));
  // the vocabulary prompts went to the text encoder once, then came from the cache
  const prompts = bundle.calls.text.filter((t) => t[0] === 'a photo of a star');
  assert.equal(prompts.length, 1);
  assert.deepEqual(prompts[0], ['a photo of a star', 'a photo of a ring', 'a photo of a moon', 'a photo of a heart']);
  for (const b of out) {
    assert.deepEqual(labels(b.samples[0]), ['ring', 'star']);
    assert.deepEqual(labels(b.samples[1]), ['moon']);
  }
});

test('zero-shot is computed on the kept patches only; tau applies to the softmax confidence', async () => {
  const bundle = fakeBundle();
  // saliency puts the star's patch first; with one kept patch the ring is out of the picture
  const spec: FakeImage = { ...starAndRing, saliency: Array.from({ length: 16 }, (_, j) => (j === 0 ? 10 : j === 15 ? 5 : 1)) };
  const [narrow] = await run([embed({ bundle }), choosePatches({ rho: 1 / 16 }), tag({ bundle, threshold: 0.3 })], [batchOf([fakeSample(0, spec)])]);
  assert.deepEqual(labels(narrow.samples[0]), ['star']);
  assert.ok(narrow.samples[0].tags![0].score > 0.99);

  const [wide] = await run([embed({ bundle }), choosePatches({ rho: 1 }), tag({ bundle, threshold: 0.3 })], [batchOf([fakeSample(0, spec)])]);
  const t = wide.samples[0].tags!;
  assert.deepEqual(t.map((x) => x.label).sort(), ['ring', 'star']);
  // two equally present objects share the probability mass
  for (const x of t) assert.ok(Math.abs(x.score - 0.5) < 0.01);

  const [strict] = await run([embed({ bundle }), choosePatches({ rho: 1 }), tag({ bundle, threshold: 0.6 })], [batchOf([fakeSample(0, spec)])]);
  assert.deepEqual(strict.samples[0].tags, []);
});

test('zero-shot without an embed pass encodes the whole image; a failing image is a model_error', async () => {
  const bundle = fakeBundle();
  const [out] = await run(
    [tag({ bundle, threshold: 0.3 })],
    [batchOf([fakeSample(0, starAndRing), fakeSample(1, { objects: [], fail: true })])],
  );
  assert.deepEqual(bundle.calls.vision[0].keep, [null, null]);
  assert.deepEqual(labels(out.samples[0]).sort(), ['ring', 'star']);
  assert.deepEqual(out.samples.map(reason), ['keep', 'model_error']);
});

test("bundles with tags.confidence 'cosine': tau applies to each class's cosine, so several objects pass together", async () => {
  const bundle = fakeBundle({ confidence: 'cosine' });
  const [out] = await run([embed({ bundle }), choosePatches({ rho: 1 }), tag({ bundle, threshold: 0.6 })], [batchOf([fakeSample(0, starAndRing)])]);
  const t = out.samples[0].tags!;
  // the softmax reading splits the mass (about 0.5 each) and tau 0.6 would keep nothing
  assert.deepEqual(t.map((x) => x.label).sort(), ['ring', 'star']);
  for (const x of t) assert.ok(x.score > 0.6 && x.score < 0.9, `cosine ${x.score}`);
  const [strict] = await run([embed({ bundle }), choosePatches({ rho: 1 }), tag({ bundle, threshold: 0.9 })], [batchOf([fakeSample(0, starAndRing)])]);
  assert.deepEqual(strict.samples[0].tags, []);
});
