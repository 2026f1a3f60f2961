/**
 * The shipped built-in bundle (models/builtin): it meets the quality aims on held-out `gen` data
 * through onnxruntime-node, and `squeeze build-model` reproduces it byte for byte.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { BUILTIN_BUNDLE } from '../../../src/curate/models';
import { bundleEncoders, evaluateQuality } from '../../../src/builders/shapes/quality';
import { squeeze } from '../../helpers/cli';

test('the shipped bundle meets the quality aims on held-out gen data (onnxruntime-node)', async () => {
  const bundle = JSON.parse(await readFile(join(BUILTIN_BUNDLE, 'bundle.json'), 'utf8'));
  const enc = await bundleEncoders(BUILTIN_BUNDLE);
  // seed 31337: neither the training crawl (seed 7) nor the calibration crawl (derived from it)
  const q = await evaluateQuality(enc, { events: 600, seed: 31337, threshold: bundle.tags.threshold });
  await enc.close?.();
  console.log('shipped-bundle quality:', JSON.stringify(q));
  assert.ok(q.images > 400, `${q.images} images`);
  assert.ok(q.saliencyCoverage.mean >= 0.9, `object pixels in the top half of patches: ${q.saliencyCoverage.mean}`);
  assert.ok(q.tags.precision >= 0.9, `tag precision ${q.tags.precision}`);
  assert.ok(q.tags.recall >= 0.8, `tag recall ${q.tags.recall}`);
  assert.ok(q.clipScoreAuc >= 0.95, `clip_score AUC ${q.clipScoreAuc}`);
  assert.ok(q.condensedAuc >= 0.95, `clip_score AUC on kept patches ${q.condensedAuc}`);
});

test('squeeze build-model reproduces the shipped bundle byte for byte (about two minutes)', async () => {
  const root = await mkdtemp(join(tmpdir(), 'squeeze-build-model-'));
  try {
    const out = join(root, 'bundle');
    const r = await squeeze(['build-model', '--kind', 'shapes', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /training: step 2000\/2000/);
    for (const f of ['vision.onnx', 'text.onnx', 'words.json']) {
      const [built, shipped] = await Promise.all([readFile(join(out, f)), readFile(join(BUILTIN_BUNDLE, f))]);
      assert.ok(built.equals(shipped), `${f} differs from models/builtin/${f}`);
    }
    const built = JSON.parse(await readFile(join(out, 'bundle.json'), 'utf8'));
    const shipped = JSON.parse(await readFile(join(BUILTIN_BUNDLE, 'bundle.json'), 'utf8'));
    // training.seconds is the one machine-dependent field
    delete built.training.seconds;
    delete shipped.training.seconds;
    assert.deepEqual(built, shipped);
    assert.match(r.stdout, new RegExp(`built ${shipped.version} in `));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
