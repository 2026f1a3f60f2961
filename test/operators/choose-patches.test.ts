import assert from 'node:assert/strict';
import { test } from 'node:test';
import { boxPatches, keepMask, objectCoverage, selectPatches } from '../../src/operators/choose-patches';
import { g4, saliency } from '../helpers/samples';


test('selectPatches keeps exactly ceil(rho * P), the most salient, ascending; ties go to the lower index', () => {
  const sal = saliency(16, (j) => j + 1); // patch 15 most salient
  assert.deepEqual(selectPatches(sal, g4, { rho: 0.5 }), [8, 9, 10, 11, 12, 13, 14, 15]);
  for (const rho of [0.01, 0.1, 0.25, 0.3, 0.5, 0.77, 1]) assert.equal(selectPatches(sal, g4, { rho }).length, Math.ceil(rho * 16));
  assert.equal(selectPatches(sal, g4).length, 8, 'rho defaults to 0.5');
  assert.deepEqual(selectPatches(sal, g4, { rho: 0 }), [15], 'never empty');
  const flat = new Float32Array(16).fill(1 / 16);
  assert.deepEqual(selectPatches(flat, g4, { rho: 0.25 }), [0, 1, 2, 3]);
  const withNaN = Float32Array.from(sal);
  withNaN[15] = NaN;
  assert.deepEqual(selectPatches(withNaN, g4, { rho: 1 / 16 }), [14]);
});

test('selectPatches mass mode: the smallest set holding the share of saliency', () => {
  const sal = [0.5, 0.3, 0.1, 0.1];
  const g = { rows: 2, cols: 2 };
  assert.deepEqual(selectPatches(sal, g, { mass: 0.5 }), [0]);
  assert.deepEqual(selectPatches(sal, g, { mass: 0.51 }), [0, 1]);
  assert.deepEqual(selectPatches(sal, g, { mass: 0.8 }), [0, 1]);
  assert.deepEqual(selectPatches(sal, g, { mass: 0.85 }), [0, 1, 2]);
  assert.deepEqual(selectPatches(sal, g, { mass: 1 }), [0, 1, 2, 3]);
  assert.deepEqual(selectPatches([0.7, 0.3, 0, 0], g, { mass: 1 }), [0, 1], 'zero-saliency patches hold no mass');
  assert.deepEqual(selectPatches(sal, g, { mass: 0.5, rho: 1 }), [0], 'mass wins over rho');
});

test('selectPatches forces patches in (union)', () => {
  const sal = saliency(16, (j) => j + 1);
  assert.deepEqual(selectPatches(sal, g4, { rho: 2 / 16, force: [0, 5, 15, 99, -1] }), [0, 5, 14, 15]);
});

test('boxPatches maps image-pixel boxes onto the grid', () => {
  // 100 x 100 image, 4 x 4 grid: patches of 25 px
  assert.deepEqual(boxPatches([20, 20, 10, 10], g4, 100, 100), [0, 1, 4, 5]);
  assert.deepEqual(boxPatches([25, 25, 25, 25], g4, 100, 100), [5], 'edges touching a patch do not overlap it');
  assert.deepEqual(boxPatches([90, 0, 50, 10], g4, 100, 100), [3], 'clipped to the image');
  assert.deepEqual(boxPatches([0, 0, 0, 10], g4, 100, 100), []);
  // non-square image: 200 wide, 100 high -> patches 50 x 25
  assert.deepEqual(boxPatches([60, 30, 10, 10], g4, 200, 100), [5]);
});

test('objectCoverage: share of box pixels (union) inside kept patches', () => {
  const g = { rows: 2, cols: 2 };
  assert.equal(objectCoverage([0], g, 100, 100, [[0, 0, 50, 50]]), 1);
  assert.equal(objectCoverage([1, 2, 3], g, 100, 100, [[0, 0, 50, 50]]), 0);
  assert.equal(objectCoverage([0], g, 100, 100, [[25, 0, 50, 50]]), 0.5);
  // overlapping boxes count their pixels once: union 75 x 50, of which 50 x 50 in patch 0
  assert.ok(Math.abs(objectCoverage([0], g, 100, 100, [[0, 0, 50, 50], [25, 0, 50, 50]]) - 2 / 3) < 1e-12);
  assert.equal(objectCoverage([0, 1, 2, 3], g, 100, 100, [[10, 10, 80, 80]]), 1);
  assert.equal(objectCoverage([0], g, 100, 100, [[80, 80, 50, 50]]), 0, 'box clipped to the image, all in patch 3');
  assert.equal(objectCoverage([0], g, 100, 100, []), 1, 'nothing to cover');
  // non-integer patch edges: 3 x 3 grid over 100 px
  assert.ok(Math.abs(objectCoverage([0], { rows: 3, cols: 3 }, 100, 100, [[0, 0, 50, 50]]) - (100 / 3) ** 2 / 2500) < 1e-9);
});


test('keepMask turns kept indices into a 0/1 mask over the grid', () => {
  assert.equal(keepMask([0, 3], { rows: 2, cols: 2 }).join(''), '1001');
  assert.equal(keepMask([5, -1], { rows: 2, cols: 2 }).join(''), '0000', 'indices off the grid are ignored');
});
