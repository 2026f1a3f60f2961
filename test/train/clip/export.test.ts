import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { exportText, exportVision } from '../../../src/train/clip/export';
import { encodeImages, encodeTexts, initParams, patchCount, SeededNormal, view, type TinyClipParams } from '../../../src/train/clip/tiny-clip';
import { buildVocab, DEFAULT_CONFIG, loadSamples, tokenizeAll, trainTinyClip } from '../../../src/train/clip/train';

/** Default-size parameters with every group non-trivial (the init has zero queries and biases). */
function params(): TinyClipParams {
  const vocab = buildVocab();
  const p = initParams({ ...DEFAULT_CONFIG, vocab: Object.keys(vocab).length + 2 }, 21);
  const rng = new SeededNormal(22);
  for (const g of ['img.patch_b', 'img.b2', 'img.query', 'txt.query', 'txt.word_bias', 'img.proj_b', 'txt.proj_b', 'img.in_shift'] as const) {
    const v = view(p, g);
    for (let i = 0; i < v.length; i++) v[i] = rng.normal() * 0.8;
  }
  const scale = view(p, 'img.in_scale');
  for (let i = 0; i < scale.length; i++) scale[i] = 0.5 + 2 * rng.uniform();
  view(p, 'img.contrast')[0] = 1.7;
  return p;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('vision.onnx in onnxruntime matches the TypeScript forward within 1e-4, with and without a patch mask', async () => {
  const p = params();
  const c = p.config;
  const P = patchCount(c);
  const session = await ort.InferenceSession.create(exportVision(p));
  assert.deepEqual(session.inputNames, ['pixel_values', 'patch_mask']);
  assert.deepEqual(session.outputNames, ['image_embeds', 'patch_attention']);
  const rng = new SeededNormal(5);
  const random = Float32Array.from({ length: 4 * 3 * c.image * c.image }, () => rng.normal());
  const real = await loadSamples({ n: 16, seed: 3 });
  assert.ok(real.length >= 8);
  const realPx = new Float32Array(real.length * 3 * c.image * c.image);
  real.forEach((s, i) => realPx.set(s.pixels, i * s.pixels.length));
  let worst = 0;
  for (const [pixels, n] of [[random, 4], [realPx, real.length]] as const) {
    const mask = Float32Array.from({ length: n * P }, (_, j) => ((j * 7) % 5 === 0 ? 0 : 1));
    for (const m of [null, mask]) {
      const out = await session.run({
        pixel_values: new ort.Tensor('float32', pixels, [n, 3, c.image, c.image]),
        patch_mask: new ort.Tensor('float32', m ?? new Float32Array(n * P).fill(1), [n, P]),
      });
      const ts = encodeImages(p, pixels, n, m);
      const dEmb = maxAbsDiff(out.image_embeds!.data as Float32Array, ts.embeds);
      const dAtt = maxAbsDiff(out.patch_attention!.data as Float32Array, ts.attention);
      worst = Math.max(worst, dEmb, dAtt);
      assert.ok(dEmb < 1e-4 && dAtt < 1e-4, `embeds ${dEmb}, attention ${dAtt}`);
      assert.deepEqual(out.image_embeds!.dims, [n, c.embed]);
      assert.deepEqual(out.patch_attention!.dims, [n, P]);
      if (m) {
        const att = out.patch_attention!.data as Float32Array;
        for (let j = 0; j < att.length; j++) if (m[j] === 0) assert.equal(att[j], 0);
      }
    }
  }
  console.log('vision parity, max abs difference:', worst);
});

test('text.onnx in onnxruntime matches the TypeScript forward within 1e-4', async () => {
  const p = params();
  const c = p.config;
  const vocab = buildVocab();
  const session = await ort.InferenceSession.create(exportText(p));
  assert.deepEqual(session.inputNames, ['input_ids', 'attention_mask']);
  assert.deepEqual(session.outputNames, ['text_embeds']);
  const texts = ['a photo of a star', 'a red star and a blue ring on a striped background', 'Illustration of a green heart, an orange moon and a black bolt against a dotted background.', 'zzz unknown words', 'a'];
  const tok = tokenizeAll(texts, vocab, c.context);
  const rng = new SeededNormal(9);
  const randIds = Int32Array.from({ length: 3 * c.context }, () => Math.floor(rng.uniform() * c.vocab));
  const randMask = Float32Array.from({ length: 3 * c.context }, (_, j) => (j % c.context < 3 + (j % 5) ? 1 : 0));
  let worst = 0;
  for (const [ids, mask, n] of [[tok.ids, tok.mask, texts.length], [randIds, randMask, 3]] as const) {
    const out = await session.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [n, c.context]),
      attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask, (v) => BigInt(v)), [n, c.context]),
    });
    const d = maxAbsDiff(out.text_embeds!.data as Float32Array, encodeTexts(p, ids, mask, n));
    worst = Math.max(worst, d);
    assert.ok(d < 1e-4, `text embeds ${d}`);
  }
  console.log('text parity, max abs difference:', worst);
});

test('trained weights: onnxruntime matches the TypeScript forward within 1e-4 on real images', async () => {
  const vocab = buildVocab();
  const { params: p } = await trainTinyClip({ seed: 3, samples: 120, steps: 25, batch: 16, lr: 0.015 });
  const c = p.config;
  const P = patchCount(c);
  const vision = await ort.InferenceSession.create(exportVision(p));
  const text = await ort.InferenceSession.create(exportText(p));
  const real = await loadSamples({ n: 40, seed: 99, all: true });
  const n = real.length;
  const pixels = new Float32Array(n * 3 * c.image * c.image);
  real.forEach((s, i) => pixels.set(s.pixels, i * s.pixels.length));
  const mask = Float32Array.from({ length: n * P }, (_, j) => ((j * 5) % 3 === 0 ? 0 : 1));
  let worst = 0;
  for (const m of [new Float32Array(n * P).fill(1), mask]) {
    const out = await vision.run({ pixel_values: new ort.Tensor('float32', pixels, [n, 3, c.image, c.image]), patch_mask: new ort.Tensor('float32', m, [n, P]) });
    const ts = encodeImages(p, pixels, n, m);
    worst = Math.max(worst, maxAbsDiff(out.image_embeds!.data as Float32Array, ts.embeds), maxAbsDiff(out.patch_attention!.data as Float32Array, ts.attention));
  }
  const captions = real.map((s) => s.caption);
  const tok = tokenizeAll(captions, vocab, c.context);
  const out = await text.run({
    input_ids: new ort.Tensor('int64', BigInt64Array.from(tok.ids, (v) => BigInt(v)), [n, c.context]),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from(tok.mask, (v) => BigInt(v)), [n, c.context]),
  });
  worst = Math.max(worst, maxAbsDiff(out.text_embeds!.data as Float32Array, encodeTexts(p, tok.ids, tok.mask, n)));
  console.log('trained-weights parity, max abs difference:', worst);
  assert.ok(worst < 1e-4, `max abs difference ${worst}`);
});

test('exports are byte-identical for the same parameters', () => {
  const a = params();
  const b = params();
  assert.ok(exportVision(a).equals(exportVision(b)));
  assert.ok(exportText(a).equals(exportText(b)));
});
