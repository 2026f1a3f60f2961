/** The LiT text tower and projection: gradients against finite differences, and deterministic training. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../../../src/gen/rng';
import { encodeFeatures, encodeTokens, initLit, litLossAndGrad, trainLit, type LitBatch } from '../../../src/builders/photo/lit';

const config = { vocab: 12, context: 5, feature: 8, embed: 4 };

function batch(seed: number, n = 6): LitBatch {
  const rng = new Rng(seed);
  const X = Float32Array.from({ length: n * config.feature }, () => rng.float(-1, 1));
  const ids = new Int32Array(n * config.context);
  const mask = new Uint8Array(n * config.context);
  for (let r = 0; r < n; r++) {
    const len = 2 + rng.int(0, 3);
    for (let k = 0; k < len; k++) {
      ids[r * config.context + k] = rng.int(1, config.vocab - 1);
      mask[r * config.context + k] = 1;
    }
  }
  return { n, X, ids, mask };
}

test('litLossAndGrad matches central finite differences for every parameter group', () => {
  const p = initLit(config, 3);
  const b = batch(5);
  const { grad } = litLossAndGrad(p, b);
  const groups = { tok: [0, p.tok.length], wordBias: [p.tok.length, p.wordBias.length], weight: [p.tok.length + p.wordBias.length, p.weight.length] } as const;
  const rng = new Rng(9);
  let checked = 0;
  for (const [name, [start, len]] of Object.entries(groups)) {
    for (let t = 0; t < 12; t++) {
      const i = start + rng.int(0, len - 1);
      const h = 1e-3;
      const x = p.data[i];
      p.data[i] = x + h;
      const up = litLossAndGrad(p, b).loss;
      p.data[i] = x - h;
      const down = litLossAndGrad(p, b).loss;
      p.data[i] = x;
      const numeric = (up - down) / (2 * h);
      if (Math.abs(numeric) < 1e-4 && Math.abs(grad[i]) < 1e-4) continue;
      assert.ok(Math.abs(numeric - grad[i]) <= 0.01 * Math.abs(numeric) + 2e-4, `${name}[${i - start}]: analytic ${grad[i]}, numeric ${numeric}`);
      checked++;
    }
  }
  assert.ok(checked >= 20, `${checked} gradient entries checked`);
});

test('training is deterministic from the seed and learns the pairs', () => {
  const n = 24;
  const b = batch(11, n);
  const data = { X: b.X, images: n, views: 1, ids: b.ids, mask: b.mask, captionImage: Int32Array.from({ length: n }, (_, i) => i) };
  const o = { seed: 4, steps: 150, batch: 12, lr: 0.05, decay: 0 };
  const a = trainLit(config, data, o);
  const c = trainLit(config, data, o);
  assert.deepEqual(Array.from(a.data), Array.from(c.data));
  const img = encodeFeatures(a, b.X, n);
  const txt = encodeTokens(a, b.ids, b.mask, n);
  let right = 0;
  for (let i = 0; i < n; i++) {
    const cos = (j: number) => Array.from({ length: config.embed }, (_, e) => img[i * config.embed + e] * txt[j * config.embed + e]).reduce((x, y) => x + y, 0);
    const best = Array.from({ length: n }, (_, j) => j).sort((x, y) => cos(y) - cos(x))[0];
    if (best === i) right++;
  }
  assert.ok(right >= n / 4, `${right} of ${n} images retrieve their own caption (chance: 1)`);
  assert.ok(litLossAndGrad(a, b).loss < litLossAndGrad(initLit(config, 4), b).loss);
});
