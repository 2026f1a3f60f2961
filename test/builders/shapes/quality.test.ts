import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OBJECT_KINDS } from '../../../src/gen/index';
import { boxCoverage, calibrateThreshold, rocAuc, tagPrecisionRecall, topMask, type Scored } from '../../../src/builders/shapes/quality';
import { preprocessImage } from '../../../src/models/preprocess';
import { WordTokenizer } from '../../../src/models/word-tokenizer';
import { BUILTIN_PREPROCESS, buildVocab, loadSamples, preprocessBuiltin, tokenize } from '../../../src/train/clip/train';

test('rocAuc: perfect, reversed, tied and mixed rankings', () => {
  assert.equal(rocAuc([3, 4], [1, 2]), 1);
  assert.equal(rocAuc([1, 2], [3, 4]), 0);
  assert.equal(rocAuc([1, 1], [1, 1]), 0.5);
  assert.equal(rocAuc([2, 4], [1, 3]), 0.75);
  assert.ok(Number.isNaN(rocAuc([], [1])));
});

test('boxCoverage maps boxes through the squash grid', () => {
  const sample = { width: 200, height: 100, objects: [{ kind: 'star' as const, colour: 'red' as const, box: [0, 0, 50, 50] as [number, number, number, number] }] };
  const keepAll = new Uint8Array(4).fill(1);
  assert.deepEqual(boxCoverage(sample, keepAll, 2, 2), { covered: 2500, total: 2500 });
  const topLeft = Uint8Array.from([1, 0, 0, 0]);
  assert.deepEqual(boxCoverage(sample, topLeft, 2, 2), { covered: 2500, total: 2500 });
  const other = Uint8Array.from([0, 1, 1, 1]);
  assert.deepEqual(boxCoverage(sample, other, 2, 2), { covered: 0, total: 2500 });
  // a box across the middle line: half in each row of cells
  const mid = { ...sample, objects: [{ ...sample.objects[0]!, box: [0, 25, 50, 50] as [number, number, number, number] }] };
  assert.deepEqual(boxCoverage(mid, topLeft, 2, 2), { covered: 1250, total: 2500 });
});

test('topMask keeps the top half by weight, ties to the lower index', () => {
  assert.deepEqual(Array.from(topMask([0.1, 0.4, 0.3, 0.2], 0, 4)), [0, 1, 1, 0]);
  assert.deepEqual(Array.from(topMask([9, 0.25, 0.25, 0.25, 0.25], 1, 4)), [1, 1, 0, 0]);
});

test('tag precision/recall and threshold calibration', () => {
  const k = OBJECT_KINDS.length;
  const tagCos = new Float32Array(2 * k);
  const tagTruth = new Uint8Array(2 * k);
  tagCos.set([0.9, 0.8, 0.3], 0);
  tagTruth.set([1, 1, 0], 0);
  tagCos.set([0.7, 0.2], k);
  tagTruth.set([0, 1], k);
  const s: Scored = { tagCos, tagTruth, coverage: [], correct: [], mismatched: [], condensedCorrect: [] };
  assert.deepEqual(tagPrecisionRecall(s, 0.5), { precision: 2 / 3, recall: 2 / 3, f1: 2 / 3 });
  const t = calibrateThreshold(s, 0.99);
  assert.ok(t > 0.7 && t <= 0.8, `threshold ${t}`);
  assert.equal(tagPrecisionRecall(s, t).precision, 1);
});

test('training preprocessing and tokenizer match the bundle loader (preprocess.ts, word-tokenizer.ts)', async () => {
  const samples = await loadSamples({ n: 12, seed: 5 });
  assert.ok(samples.length > 4);
  // the same images through both paths: identical tensors
  const { generateCrawl } = await import('../../../src/gen/index');
  for await (const ev of generateCrawl({ n: 12, seed: 5 })) {
    if (!ev.image || ev.attrs.truth_bad) continue;
    const ours = await preprocessBuiltin(ev.image);
    const theirs = await preprocessImage(ev.image, BUILTIN_PREPROCESS);
    assert.deepEqual(Array.from(ours), Array.from(theirs.tensor));
  }
  const vocab = buildVocab();
  const words = new WordTokenizer(vocab, 16);
  for (const text of ['A photo of a red star.', 'Illustration of a green heart, an orange moon and a black bolt against a dotted background', '<b>star</b> &amp; ring', 'Foto: ein roter Stern', '', 'close-up of a blue cross']) {
    const a = tokenize(text, vocab, 16);
    const b = words.encode(text);
    assert.deepEqual(a, { ids: b.ids, mask: b.mask }, text);
  }
});
