/** Which bundle a run opens: named bundles, --detector, and the bundle's calibrated mixing weights. */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config';
import { BUILTIN_BUNDLE, bundleDir, detectorClasses, openModels, openWeights, PHOTO_BUNDLE } from '../../src/curate/models';
import { DEFAULT_MIX_WEIGHTS } from '../../src/operators/mix';
import { prepareImages } from '../../src/models/preprocess';

const cfg = (flags: Record<string, string | boolean>) => loadConfig({ env: {}, flags });

test('--models names: the photo bundle by default, builtin-shapes, none, or a directory', () => {
  assert.equal(bundleDir(null), PHOTO_BUNDLE);
  assert.equal(bundleDir('photo'), PHOTO_BUNDLE);
  assert.equal(bundleDir('builtin-shapes'), BUILTIN_BUNDLE);
  assert.equal(bundleDir('none'), null);
  assert.equal(bundleDir('/some/where'), '/some/where');
});

test('--detector adds a YOLOX detector to a bundle without one, with its classes file found beside it', async () => {
  const holder = await openModels(cfg({ models: 'builtin-shapes', detector: join(PHOTO_BUNDLE, 'yolox_nano.onnx') }));
  try {
    assert.ok(holder);
    assert.ok(holder.current.detector, 'the shapes bundle now has a detector');
    const grey = await import('sharp').then((s) => s.default({ create: { width: 64, height: 64, channels: 3, background: '#808080' } }).png().toBuffer());
    const [dets] = await holder.current.detector.detect(await prepareImages([grey], holder.current.detector.preprocess));
    assert.ok(Array.isArray(dets));
  } finally {
    await holder?.close();
  }
  const lonely = join(mkdtempSync(join(tmpdir(), 'det-')), 'model.onnx');
  copyFileSync(join(PHOTO_BUNDLE, 'yolox_nano.onnx'), lonely);
  assert.throws(() => detectorClasses(lonely), /--detector .*model\.onnx: no classes file beside it \(looked for model\.classes\.txt, coco_classes\.txt, classes\.txt\)/);
  writeFileSync(lonely.replace(/\.onnx$/, '.classes.txt'), 'person\n');
  assert.equal(detectorClasses(lonely), lonely.replace(/\.onnx$/, '.classes.txt'));
  await assert.rejects(openModels(cfg({ detector: '/nonexistent/yolox.onnx' })), /--detector \/nonexistent\/yolox\.onnx: no such file/);
});

test('mixing weights: the bundle\'s calibrated ones unless a weights file is given; the defaults without a bundle', async () => {
  assert.deepEqual(openWeights(cfg({}), null).current(), DEFAULT_MIX_WEIGHTS);
  const holder = await openModels(cfg({}));
  try {
    const w = openWeights(cfg({}), holder).current();
    const cal = holder!.current.calibration!.mix!;
    assert.equal(w.version, `calibrated-${holder!.version}`);
    assert.deepEqual(w.weights, cal.weights);
    assert.deepEqual(w.stats.clip_score, cal.stats.clip_score);
    const file = join(mkdtempSync(join(tmpdir(), 'w-')), 'w.json');
    writeFileSync(file, JSON.stringify({ version: 'mine', weights: { clip_score: 1 }, bias: 0, stats: {} }));
    assert.equal(openWeights(cfg({ 'mix.weightsFile': file }), holder).current().version, 'mine');
  } finally {
    await holder?.close();
  }
});
