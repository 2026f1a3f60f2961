import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { clipPatchSaliency, loadBundle, normaliseSaliency, parseBundleSpec } from '../../src/models/bundle';
import { ClipTokenizer } from '../../src/models/clip-tokenizer';
import { prepareImages } from '../../src/models/preprocess';
import {
  argmax,
  attentionVision,
  clipBundleDir,
  clipBundleJson,
  clipText,
  clipVision,
  E,
  expectedText,
  haveTokenizer,
  norm,
  photo,
  removeBundles,
  sum,
  TOKENIZER,
  writeBundle,
  YOLOX,
  SHARED,
} from '../helpers/clip-bundle';

after(removeBundles);


test('a real-CLIP-layout bundle loads; image and text encodings have the right shapes, unit norms and saliency', async () => {
  const dir = await clipBundleDir();
  const bundle = await loadBundle(dir, { threads: 1 });
  try {
    assert.equal(bundle.version, 'test-clip-1');
    assert.deepEqual(bundle.vision.grid, { rows: 7, cols: 7 });
    assert.deepEqual(bundle.tags, { vocabulary: ['cat', 'dog'], prompt: 'a photo of a {}', threshold: 0.25, confidence: 'softmax' });
    assert.equal(bundle.detector, null);

    const img = await photo();
    const plain = await sharp({ create: { width: 300, height: 500, channels: 3, background: '#8090a0' } }).png().toBuffer();
    const [enc, flat] = await bundle.vision.encode(await prepareImages([img, plain], bundle.vision.preprocess));
    for (const e of [enc, flat]) {
      assert.equal(e.embedding.length, E);
      assert.ok(Math.abs(norm(e.embedding) - 1) < 1e-5);
      assert.equal(e.saliency.length, 49);
      assert.ok(Math.abs(sum(e.saliency) - 1) < 1e-5);
      assert.ok(e.saliency.every((s) => s >= 0));
    }
    assert.equal(argmax(enc.saliency), 3 * 7 + 5, `saliency peaks on the red patch: ${Array.from(enc.saliency, (s) => s.toFixed(3))}`);
    assert.ok(enc.saliency[26] > 0.3, `red patch saliency ${enc.saliency[26]}`);
    console.log(`clip saliency on the red patch ${enc.saliency[26].toFixed(3)}, runner-up ${[...enc.saliency].sort((a, b) => b - a)[1].toFixed(3)}, flat image max ${Math.max(...flat.saliency).toFixed(4)}`);
    // a uniform image has no distinctive patch: the map is flat
    assert.ok(Math.max(...flat.saliency) < 2 / 49, `flat image saliency ${Math.max(...flat.saliency)}`);

    // keep mask: dropping the red patch blanks it before the run; it gets no saliency and the embedding changes
    const keep = new Uint8Array(49).fill(1);
    keep[26] = 0;
    const [dropped, again] = await bundle.vision.encode(await prepareImages([img, img], bundle.vision.preprocess), [keep, null]);
    assert.equal(dropped.saliency[26], 0);
    assert.ok(Math.abs(sum(dropped.saliency) - 1) < 1e-5);
    assert.ok(Math.abs(norm(dropped.embedding) - 1) < 1e-5);
    assert.ok(Math.max(...dropped.embedding.map((v, i) => Math.abs(v - enc.embedding[i]))) > 1e-3, 'embedding changes without the red patch');
    assert.deepEqual(Array.from(again.embedding), Array.from(enc.embedding), 'a null keep mask is no mask');
    await assert.rejects(bundle.vision.encode(await prepareImages([img], bundle.vision.preprocess), [new Uint8Array(3)]), /keep mask has 3 entries, the grid has 49 patches/);

    const texts = ['a photo of a cat', 'a photo of a dog', 'a photo of a cat'];
    const te = await bundle.text.encode(texts);
    assert.equal(te.length, 3);
    for (const t of te) {
      assert.equal(t.length, E);
      assert.ok(Math.abs(norm(t) - 1) < 1e-5);
    }
    assert.deepEqual(Array.from(te[0]), Array.from(te[2]));
    assert.ok(Math.abs(te[0][0] - te[1][0]) + Math.abs(te[0][1] - te[1][1]) > 1e-4);
    // the model got the tokenizer's int64 ids and mask: recompute its output in JS
    const { ids, mask } = bundle.text.tokenizer.encode('a photo of a cat');
    if (haveTokenizer) assert.deepEqual(ids.slice(0, 7), [49406, 320, 1125, 539, 320, 2368, 49407]);
    const want = expectedText(ids, mask);
    te[0].forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-4, `text_embeds[${i}] ${v} vs ${want[i]}`));
    assert.deepEqual(await bundle.text.encode([]), []);
    assert.deepEqual(await bundle.vision.encode([]), []);
  } finally {
    await bundle.close();
    await bundle.close(); // idempotent
  }
});

test('the vocab.json + merges.txt tokenizer layout loads to the same text embeddings', async () => {
  if (!haveTokenizer) {
    console.log('skipped: ../shared/models/clip_tokenizer absent');
    return;
  }
  const dir = writeBundle('clip-vm', clipBundleJson({ kind: 'clip-bpe', vocab: 'vocab.json', merges: 'merges.txt' }), {
    'vision_model.onnx': clipVision(),
    'text_model.onnx': clipText(),
  });
  copyFileSync(join(TOKENIZER, 'vocab.json'), join(dir, 'vocab.json'));
  copyFileSync(join(TOKENIZER, 'merges.txt'), join(dir, 'merges.txt'));
  const bundle = await loadBundle(dir, { threads: 1 });
  try {
    const tok = await ClipTokenizer.fromTokenizerJson(join(TOKENIZER, 'tokenizer.json'));
    const text = 'Two dogs & a cat, playing in 3 inches of snow!';
    assert.deepEqual(bundle.text.tokenizer.encode(text).ids, tok.encode(text).ids);
    const [e] = await bundle.text.encode([text]);
    const want = expectedText(tok.encode(text).ids, tok.encode(text).mask);
    e.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-4));
  } finally {
    await bundle.close();
  }
});

function poolBundleJson(withMask: boolean): Record<string, unknown> {
  return {
    format: 'squeeze-bundle/1',
    version: 'builtin-clip-1-ab12cd34',
    provenance: { note: 'unknown top-level keys are allowed' },
    vision: {
      onnx: 'vision.onnx',
      kind: 'attention-pool',
      preprocess: { size: [64, 64], resize: 'squash', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], channels: 'RGB', scale: 1 },
      grid: { rows: 8, cols: 8 },
      inputs: withMask ? { pixels: 'pixel_values', mask: 'patch_mask' } : { pixels: 'pixel_values' },
      outputs: { embeds: 'image_embeds', attention: 'patch_attention' },
    },
    text: { onnx: 'text.onnx', tokenizer: { kind: 'words', vocab: 'words.json', context: 16 }, inputs: { ids: 'input_ids', mask: 'attention_mask' }, outputs: { embeds: 'text_embeds' } },
    tags: { vocabulary: ['star', 'ring'] },
  };
}

test('attention-pool bundles: the attention output is the saliency; keep masks go to the mask input or blank the pixels', async () => {
  // 64x64 squash, 8x8 patches: a red square on patch (2, 6)
  const raw = Buffer.alloc(64 * 64 * 3);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) raw.set(x >= 48 && x < 56 && y >= 16 && y < 24 ? [240, 10, 10] : [100, 110, 120], (y * 64 + x) * 3);
  const img = await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
  const keep = new Uint8Array(64).fill(1);
  keep[2 * 8 + 6] = 0;
  for (const withMask of [true, false]) {
    const dir = writeBundle(`pool-${withMask}`, poolBundleJson(withMask), {
      'vision.onnx': attentionVision(withMask),
      'text.onnx': clipText({ context: 16 }),
      'words.json': JSON.stringify({ star: 2, ring: 3 }),
    });
    const bundle = await loadBundle(dir, { threads: 1 });
    try {
      assert.equal(bundle.version, 'builtin-clip-1-ab12cd34');
      assert.equal(bundle.tags.prompt, 'a photo of a {}');
      const [full, kept] = await bundle.vision.encode(await prepareImages([img, img], bundle.vision.preprocess), [null, keep]);
      assert.equal(argmax(full.saliency), 22);
      assert.ok(Math.abs(sum(full.saliency) - 1) < 1e-5);
      assert.equal(kept.saliency[22], 0);
      assert.ok(Math.abs(sum(kept.saliency) - 1) < 1e-5);
      assert.ok(Math.abs(norm(kept.embedding) - 1) < 1e-5);
      assert.ok(Math.max(...kept.embedding.map((v, i) => Math.abs(v - full.embedding[i]))) > 1e-3);
      const [t] = await bundle.text.encode(['Star ring star']);
      assert.ok(Math.abs(norm(t) - 1) < 1e-5);
      const want = expectedText([2, 3, 2, ...new Array(13).fill(0)], [1, 1, 1, ...new Array(13).fill(0)]);
      t.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-4));
    } finally {
      await bundle.close();
    }
  }
});

test('a bundle with a YOLOX detector', async () => {
  if (!existsSync(join(YOLOX, 'yolox_nano.onnx'))) {
    console.log('skipped: ../shared/models/yolox_nano absent');
    return;
  }
  const json = { ...poolBundleJson(true), detector: { kind: 'yolox', onnx: join(YOLOX, 'yolox_nano.onnx'), classes: join(YOLOX, 'coco_classes.txt'), scoreThreshold: 0.4 } };
  const dir = writeBundle('det', json, { 'vision.onnx': attentionVision(true), 'text.onnx': clipText({ context: 16 }), 'words.json': '{}' });
  const bundle = await loadBundle(dir, { threads: 1 });
  try {
    assert.ok(bundle.detector);
    const coco = join(SHARED, 'data/coco/images/val2017/000000397133.jpg');
    if (existsSync(coco)) {
      const [dets] = await bundle.detector.detect(await prepareImages([readFileSync(coco)], bundle.detector.preprocess));
      assert.ok(dets.some((d) => d.label === 'person' && d.score >= 0.4));
    }
  } finally {
    await bundle.close();
  }
});

test('bad bundles fail with one clear line naming the file or field', async () => {
  const good = () => ({ 'vision_model.onnx': clipVision(), 'text_model.onnx': clipText(), 'words.json': '{"cat": 2}' });
  const json = () => clipBundleJson({ kind: 'words', vocab: 'words.json', context: 77 }) as Record<string, any>;
  const fails = async (name: string, spec: unknown, files: Record<string, Buffer | string>, re: RegExp, edit?: (dir: string) => void) => {
    const dir = writeBundle(name, spec, files);
    edit?.(dir);
    await assert.rejects(loadBundle(dir, { threads: 1 }), (e: Error) => {
      assert.match(e.message, re);
      assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
      return true;
    });
  };
  // sanity: the good one loads
  const ok = await loadBundle(writeBundle('good', json(), good()), { threads: 1 });
  await ok.close();

  await fails('no-json', json(), good(), /no-json\/bundle\.json is missing$/, (d) => unlinkSync(join(d, 'bundle.json')));
  await fails('syntax', '{"format": "squeeze-bundle/1",', good(), /syntax\/bundle\.json: not valid JSON/);
  await fails('missing-file', json(), good(), /missing-file\/text_model\.onnx is missing \(text\.onnx in /, (d) => unlinkSync(join(d, 'text_model.onnx')));
  await fails('missing-vocab', json(), good(), /missing-vocab\/words\.json is missing \(text\.tokenizer\.vocab/, (d) => unlinkSync(join(d, 'words.json')));

  const badResize = json();
  badResize.vision.preprocess.resize = 'stretch';
  await fails('bad-field', badResize, good(), /bundle\.json: vision\.preprocess\.resize: Invalid enum value/);
  const badFormat = { ...json(), format: 'squeeze-bundle/2' };
  await fails('bad-format', badFormat, good(), /bundle\.json: format: Invalid literal value, expected "squeeze-bundle\/1"/);
  const noHidden = json();
  delete noHidden.vision.outputs.hidden;
  await fails('no-hidden', noHidden, good(), /vision\.outputs\.hidden: required for kind "clip"/);
  const typo = json();
  typo.vision.grid.colz = 7;
  await fails('typo', typo, good(), /vision\.grid: Unrecognized key\(s\) in object: 'colz'/);
  const bothTok = clipBundleJson({ kind: 'clip-bpe', file: 'tokenizer.json', vocab: 'vocab.json', merges: 'merges.txt' });
  await fails('both-tok', bothTok, good(), /text\.tokenizer\.file: give either "file"/);

  await fails('wrong-input', json(), { ...good(), 'vision_model.onnx': clipVision({ inputName: 'x' }) }, /wrong-input\/vision_model\.onnx: expected input "pixel_values", the model has "x"/);
  await fails('wrong-rank', json(), { ...good(), 'text_model.onnx': clipText({ idsDims: ['batch', 77, 1] }) }, /text_model\.onnx: input "input_ids" must have rank 2 \[N, 77\], the model has rank 3 \[batch, 77, 1\]/);
  await fails('wrong-size', json(), { ...good(), 'vision_model.onnx': clipVision({ pixelDims: ['batch', 3, 256, 256] }) }, /vision_model\.onnx: input "pixel_values" must be \[N, 3, 224, 224\], the model has \[batch, 3, 256, 256\] \(dim 2 is 256, expected 224\)/);
  const grid8 = json();
  grid8.vision.grid = { rows: 8, cols: 8 };
  await fails('wrong-grid', grid8, good(), /output "last_hidden_state" must be \[N, 65, D\], the model has \[batch, 50, 8\]/);
  const wrongContext = json();
  wrongContext.text.tokenizer.context = 16;
  await fails('wrong-context', wrongContext, good(), /input "input_ids" must be \[N, 16\], the model has \[batch, 77\]/);
  const noMask = json();
  delete noMask.text.inputs.mask;
  await fails('extra-input', noMask, good(), /text_model\.onnx: the model has input "attention_mask" that bundle\.json does not name/);
  await fails('not-onnx', json(), { ...good(), 'text_model.onnx': 'not a model' }, /not-onnx\/text_model\.onnx: cannot be loaded/);
});

test('saliency helpers', () => {
  // CLS aligned with patch 1's deviation from the mean patch
  const tokens = Float32Array.from([/* cls */ 1, 1, /* patches */ 0, 0, 1, 1, 0, 0]);
  const s = clipPatchSaliency(tokens, 3, 2);
  assert.equal(argmax(s), 1);
  assert.ok(Math.abs(sum(s) - 1) < 1e-6);
  assert.deepEqual(Array.from(normaliseSaliency([1, -1, 3, 0])), [0.25, 0, 0.75, 0]);
  assert.deepEqual(Array.from(normaliseSaliency([0, 0, 0, 0], Uint8Array.from([1, 0, 1, 0]))), [0.5, 0, 0.5, 0]);
  assert.throws(() => parseBundleSpec({ format: 'squeeze-bundle/1' }, 'x/bundle.json'), /^Error: x\/bundle\.json: version: Required \(and \d+ more\)$/);
});
