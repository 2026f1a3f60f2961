import assert from 'node:assert/strict';
import { test } from 'node:test';
import { calibrateEnrichThreshold, cocoNames, rocAuc, tuneSoftCap, wilsonLower } from '../../../src/builders/photo/calibrate';
import { photoSplit } from '../../../src/streams/files/shared-photos';

test('ROC AUC: perfect, reversed, ties and chance', () => {
  assert.equal(rocAuc([3, 4], [1, 2]), 1);
  assert.equal(rocAuc([1, 2], [3, 4]), 0);
  assert.equal(rocAuc([1, 1], [1, 1]), 0.5);
  assert.equal(rocAuc([1, 3], [2, 4]), 0.25);
});

test('enrichment threshold: the lowest score whose added classes reach the precision', () => {
  const added = [
    { score: 0.95, right: true }, { score: 0.9, right: true }, { score: 0.85, right: true }, { score: 0.8, right: false },
    { score: 0.7, right: true }, { score: 0.6, right: false }, { score: 0.5, right: false },
  ];
  assert.deepEqual(calibrateEnrichThreshold(added, 0.8, 0.3), { threshold: 0.7, precision: 0.8, added: 5 });
  assert.deepEqual(calibrateEnrichThreshold(added, 1, 0.3), { threshold: 0.85, precision: 1, added: 3 });
  assert.equal(calibrateEnrichThreshold(added, 0.7, 0).threshold, 0.7);
  assert.equal(calibrateEnrichThreshold(added, 0.7, 0.75).threshold, 0.8, 'never below the floor');
  assert.equal(calibrateEnrichThreshold([{ score: 0.9, right: false }], 0.9, 0.3).threshold, 1, 'nothing reaches it: add nothing');
  // with a margin: 3 of 3 right has a Wilson lower bound of 0.75 at z = 1, 4 of 5 of 0.51
  assert.ok(Math.abs(wilsonLower(3, 3, 1) - 0.75) < 1e-12);
  assert.deepEqual(calibrateEnrichThreshold(added, 0.7, 0.3, 1), { threshold: 0.85, precision: 1, added: 3 });
  assert.equal(calibrateEnrichThreshold(added, 0.8, 0.3, 1).threshold, 1, 'too few to show 0.8 with a margin');
});

test('soft-cap tuning keeps the most true pairs under the false-positive bound', () => {
  // two groups two standard deviations apart (AUC about 0.92), deterministic quantiles
  const q = (i: number, n: number) => {
    const p = (i + 0.5) / n;
    const t = Math.sqrt(-2 * Math.log(Math.min(p, 1 - p)));
    const z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
    return p < 0.5 ? -z : z;
  };
  const pos = Array.from({ length: 400 }, (_, i) => 0.3 + 0.1 * q(i, 400));
  const neg = Array.from({ length: 400 }, (_, i) => 0.1 + 0.1 * q(i, 400));
  const r = tuneSoftCap(pos, neg, { mean: 0.2, std: 0.1 }, { trueShare: 0.25, rate: 1, maxFpr: 0.2 });
  assert.ok(r.fpr <= 0.2, JSON.stringify(r));
  assert.ok(r.tpr >= 0.75, JSON.stringify(r));
  const strict = tuneSoftCap(pos, neg, { mean: 0.2, std: 0.1 }, { trueShare: 0.25, rate: 1, maxFpr: 0.05 });
  assert.ok(strict.fpr <= 0.05 && strict.tpr < r.tpr, 'a tighter bound costs true pairs');
});

test('photo splits are by image and stable; VOC class names map to COCO ones', () => {
  const keys = Array.from({ length: 2000 }, (_, i) => `flickr8k/${i}.jpg`);
  const counts = { train: 0, cal: 0, eval: 0 };
  for (const k of keys) counts[photoSplit(k)]++;
  assert.ok(Math.abs(counts.train / 2000 - 0.7) < 0.04 && Math.abs(counts.cal / 2000 - 0.1) < 0.03 && Math.abs(counts.eval / 2000 - 0.2) < 0.03, JSON.stringify(counts));
  assert.equal(photoSplit('coco/images/val2017/000000397133.jpg'), photoSplit('coco/images/val2017/000000397133.jpg'));
  assert.deepEqual(cocoNames(['person', 'tvmonitor', 'diningtable', 'sofa']), ['person', 'tv', 'dining table', 'couch']);
});
