import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { OBJECT_KINDS } from '../../../src/gen/index';
import { buildBuiltinBundle } from '../../../src/builders/shapes/build';

/** A reduced build: same code path, a fraction of the data and steps. */
const SMALL = { seed: 7, samples: 160, steps: 30, batch: 16, calibrationEvents: 60 };

test('building twice with the same seed gives byte-identical ONNX files and the same version', async () => {
  const root = await mkdtemp(join(tmpdir(), 'squeeze-clip-build-'));
  try {
    const a = await buildBuiltinBundle(join(root, 'a'), SMALL);
    const b = await buildBuiltinBundle(join(root, 'b'), SMALL);
    assert.match(a.version, /^builtin-clip-1-[0-9a-f]{8}$/);
    assert.equal(a.version, b.version);
    for (const f of ['vision.onnx', 'text.onnx', 'words.json']) {
      assert.ok((await readFile(join(root, 'a', f))).equals(await readFile(join(root, 'b', f))), `${f} differs`);
    }
    const bundle = JSON.parse(await readFile(join(root, 'a', 'bundle.json'), 'utf8'));
    assert.equal(bundle.format, 'squeeze-bundle/1');
    assert.equal(bundle.version, a.version);
    assert.deepEqual(bundle.vision.preprocess, { size: [64, 64], resize: 'squash', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], channels: 'RGB', scale: 1 });
    assert.deepEqual(bundle.vision.grid, { rows: 8, cols: 8 });
    assert.deepEqual(bundle.vision.inputs, { pixels: 'pixel_values', mask: 'patch_mask' });
    assert.deepEqual(bundle.vision.outputs, { embeds: 'image_embeds', attention: 'patch_attention' });
    assert.deepEqual(bundle.text.tokenizer, { kind: 'words', vocab: 'words.json', context: 16 });
    assert.deepEqual(bundle.text.inputs, { ids: 'input_ids', mask: 'attention_mask' });
    assert.deepEqual(bundle.text.outputs, { embeds: 'text_embeds' });
    assert.equal(bundle.detector, null);
    assert.deepEqual(bundle.tags.vocabulary, [...OBJECT_KINDS]);
    assert.equal(bundle.tags.prompt, 'a photo of a {}');
    assert.ok(Number.isFinite(bundle.tags.threshold));
    assert.equal(bundle.tags.confidence, 'cosine');
    assert.equal(bundle.training.seed, 7);
    assert.equal(bundle.training.steps, 30);
    const words = JSON.parse(await readFile(join(root, 'a', 'words.json'), 'utf8'));
    for (const k of OBJECT_KINDS) assert.ok(words[k] >= 2, `vocabulary lacks ${k}`);
    // the files load in onnxruntime with the names bundle.json gives
    const vision = await ort.InferenceSession.create(join(root, 'a', 'vision.onnx'));
    assert.deepEqual(vision.inputNames, ['pixel_values', 'patch_mask']);
    assert.deepEqual(vision.outputNames, ['image_embeds', 'patch_attention']);
    const text = await ort.InferenceSession.create(join(root, 'a', 'text.onnx'));
    assert.deepEqual(text.inputNames, ['input_ids', 'attention_mask']);
    assert.deepEqual(text.outputNames, ['text_embeds']);
    // a different seed gives another model
    const c = await buildBuiltinBundle(join(root, 'c'), { ...SMALL, seed: 8 });
    assert.notEqual(c.version, a.version);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
