import assert from 'node:assert/strict';
import { test } from 'node:test';
import { textBatch, TINY_CONFIG } from '../../helpers/clip-batches';
import {
  imageStem,
  initParams,
  mirrorStem,
  STEM_FEATURES,
  lossAndGrad,
  lossOnly,
  matmulNT,
  BUFFER_GROUPS,
  PARAM_GROUPS,
  SeededNormal,
  view,
  type Batch,
  type TinyClipConfig,
  type TinyClipParams,
} from '../../../src/train/clip/tiny-clip';

const CONFIG = TINY_CONFIG;

function randomBatch(c: TinyClipConfig, n: number, seed: number, withPatchMask: boolean): Batch {
  const rng = new SeededNormal(seed);
  const pixels = Float64Array.from({ length: n * 3 * c.image * c.image }, () => rng.normal());
  const { ids, textMask, tags } = textBatch(c, n, rng);
  const P = (c.image / c.patch) ** 2;
  const patchMask = withPatchMask ? Float64Array.from({ length: n * P }, (_, j) => (j % P === 1 ? 0 : 1)) : null;
  return { n, pixels, ids, textMask, patchMask, tags };
}

/** Non-trivial parameters: the default init has zero queries and biases, where some gradients vanish. */
function params64(seed: number): TinyClipParams {
  const p = initParams(CONFIG, seed, 64);
  const rng = new SeededNormal(seed + 1);
  for (const g of ['img.patch_b', 'img.b2', 'img.query', 'txt.query', 'img.proj_b', 'txt.proj_b'] as const) {
    const v = view(p, g);
    for (let i = 0; i < v.length; i++) v[i] = rng.normal() * 0.7;
  }
  view(p, 'logit_scale')[0] = 1.3;
  const shift = view(p, 'img.in_shift');
  const scale = view(p, 'img.in_scale');
  for (let i = 0; i < shift.length; i++) {
    shift[i] = rng.normal() * 0.3;
    scale[i] = 0.5 + rng.uniform();
  }
  return p;
}

for (const withPatchMask of [false, true]) {
  test(`backward matches central finite differences for every parameter group (float64${withPatchMask ? ', patch mask' : ''})`, () => {
    const p = params64(3);
    const batch = randomBatch(CONFIG, 4, 11, withPatchMask);
    const { grad } = lossAndGrad(p, batch);
    const eps = 1e-5;
    const worst: Record<string, number> = {};
    for (const g of PARAM_GROUPS) {
      const l = p.layout[g];
      if (BUFFER_GROUPS.includes(g)) {
        for (let i = l.offset; i < l.offset + l.size; i++) assert.equal(grad[i], 0, `${g} is a buffer: no gradient`);
        continue;
      }
      let maxErr = 0;
      let maxAbs = 0;
      // every element of small groups, a spread of them in larger ones
      const step = Math.max(1, Math.floor(l.size / 40));
      for (let i = l.offset; i < l.offset + l.size; i += step) {
        const keep = p.data[i]!;
        p.data[i] = keep + eps;
        const up = lossOnly(p, batch);
        p.data[i] = keep - eps;
        const down = lossOnly(p, batch);
        p.data[i] = keep;
        const numeric = (up - down) / (2 * eps);
        const analytic = grad[i]!;
        maxAbs = Math.max(maxAbs, Math.abs(numeric));
        // relative error, with a floor for the near-zero entries where finite differences are noise (~1e-11)
        maxErr = Math.max(maxErr, Math.abs(numeric - analytic) / Math.max(1e-4, Math.abs(numeric) + Math.abs(analytic)));
      }
      worst[g] = maxErr;
      if (g !== 'txt.tok') assert.ok(maxAbs > 1e-8, `${g}: gradient is zero everywhere, the check would be vacuous`);
      assert.ok(maxErr < 1e-5, `${g}: relative error ${maxErr}`);
    }
    console.log('gradient check, max relative error per group:', JSON.stringify(worst));
  });
}

test('matmulNT handles ragged shapes and accumulation', () => {
  for (const [M, K, N] of [[1, 1, 1], [5, 3, 7], [8, 4, 2], [9, 13, 3]] as const) {
    const rng = new SeededNormal(M * 100 + N);
    const A = Float64Array.from({ length: M * K }, () => rng.normal());
    const B = Float64Array.from({ length: N * K }, () => rng.normal());
    const C = Float64Array.from({ length: M * N }, () => 1);
    matmulNT(A, B, C, M, K, N, true);
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 1;
        for (let k = 0; k < K; k++) s += A[i * K + k]! * B[j * K + k]!;
        assert.ok(Math.abs(C[i * N + j]! - s) < 1e-12);
      }
    }
  }
});

test('mirrorStem equals the stem of the mirrored image', () => {
  const c: TinyClipConfig = { ...CONFIG, image: 32, patch: 8, blur: 2, window: 1 };
  const rng = new SeededNormal(4);
  const n = 2;
  const S = c.image;
  const pixels = Float64Array.from({ length: n * 3 * S * S }, () => rng.normal());
  const mirrored = new Float64Array(pixels.length);
  for (let r = 0; r < n * 3 * S; r++) for (let x = 0; x < S; x++) mirrored[r * S + x] = pixels[r * S + S - 1 - x]!;
  const a = mirrorStem(c, imageStem(c, pixels, n, 64), n);
  const b = imageStem(c, mirrored, n, 64);
  for (let i = 0; i < a.X.length; i++) assert.ok(Math.abs(a.X[i]! - b.X[i]!) < 1e-9, `feature ${i % STEM_FEATURES}: ${a.X[i]} vs ${b.X[i]}`);
  for (let i = 0; i < a.prior.length; i++) assert.ok(Math.abs(a.prior[i]! - b.prior[i]!) < 1e-9);
});

test('initialisation is deterministic per seed', () => {
  const a = initParams(CONFIG, 5);
  const b = initParams(CONFIG, 5);
  const c = initParams(CONFIG, 6);
  assert.ok(a.data instanceof Float32Array);
  assert.deepEqual(Buffer.from(a.data.buffer), Buffer.from(b.data.buffer));
  assert.notDeepEqual(Buffer.from(a.data.buffer), Buffer.from(c.data.buffer));
});
