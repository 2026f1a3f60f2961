import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildBuiltinBundle } from '../../../src/builders/shapes/build';
import { textBatch, TINY_CONFIG } from '../../helpers/clip-batches';
import {
  gatherStem,
  IMAGE_SHARDS,
  LocalShards,
  shardedLossAndGrad,
  shardRange,
  shareParams,
  sharedStemTable,
  WorkerShards,
  workersAvailable,
} from '../../../src/train/clip/parallel';
import { imageStem, initParams, lossAndGrad, mirrorStem, SeededNormal, view, type StemOutput, type TinyClipConfig } from '../../../src/train/clip/tiny-clip';

const CONFIG = TINY_CONFIG;

/** The reduced build of build.test.ts. */
const SMALL = { seed: 7, samples: 160, steps: 30, batch: 16, calibrationEvents: 60 };

test('shards cover the batch in order', () => {
  for (const n of [2, 5, 16, 32]) {
    let next = 0;
    for (let s = 0; s < IMAGE_SHARDS; s++) {
      const [lo, hi] = shardRange(n, s);
      assert.equal(lo, next);
      assert.ok(hi > lo);
      next = hi;
    }
    assert.equal(next, n);
  }
});

test('the sharded loss and gradient equal lossAndGrad (float64, in-thread shards)', async () => {
  const p = initParams(CONFIG, 3, 64);
  const rng = new SeededNormal(5);
  for (const g of ['img.patch_b', 'img.b2', 'img.query', 'txt.query', 'img.proj_b', 'txt.proj_b'] as const) {
    const v = view(p, g);
    for (let i = 0; i < v.length; i++) v[i] = rng.normal() * 0.7;
  }
  const n = 5;
  const pixels = Float64Array.from({ length: n * 3 * CONFIG.image * CONFIG.image }, () => rng.normal());
  const stem = imageStem(CONFIG, pixels, n, 64);
  const text = textBatch(CONFIG, n, rng);
  const whole = lossAndGrad(p, { n, stem, ...text });
  const P = (CONFIG.image / CONFIG.patch) ** 2;
  const K = stem.X.length / (n * P);
  // the "table" is the batch itself: entry b is image b
  const stems = (entries: Int32Array): StemOutput => {
    const X = new Float64Array(entries.length * P * K);
    const prior = new Float64Array(entries.length * P);
    entries.forEach((e, b) => {
      X.set(stem.X.subarray(e * P * K, (e + 1) * P * K), b * P * K);
      prior.set(stem.prior.subarray(e * P, (e + 1) * P), b * P);
    });
    return { X, prior };
  };
  const sharded = await shardedLossAndGrad(p, { n, entries: Int32Array.from({ length: n }, (_, i) => i), ...text }, new LocalShards(p, stems));
  assert.ok(Math.abs(sharded.loss - whole.loss) < 1e-12, `${sharded.loss} vs ${whole.loss}`);
  assert.equal(sharded.top1, whole.top1);
  for (let i = 0; i < p.data.length; i++) {
    assert.ok(Math.abs(sharded.grad[i]! - whole.grad[i]!) <= 1e-12 * (1 + Math.abs(whole.grad[i]!)), `gradient ${i}: ${sharded.grad[i]} vs ${whole.grad[i]}`);
  }
});

test('worker shards give the same bytes as in-thread shards, and report errors', { skip: !workersAvailable() && 'no compiled worker script' }, async () => {
  const c: TinyClipConfig = { ...CONFIG, image: 16, patch: 4, hidden: 8, width: 8, embed: 4 };
  const p = shareParams(initParams(c, 9));
  const rng = new SeededNormal(6);
  const images = 6;
  const pixels = Float32Array.from({ length: images * 3 * c.image * c.image }, () => rng.normal());
  const stem = imageStem(c, pixels, images);
  const table = sharedStemTable(c, 2 * images);
  const P = (c.image / c.patch) ** 2;
  const K = stem.X.length / (images * P);
  for (let i = 0; i < images; i++) {
    const one = { X: stem.X.subarray(i * P * K, (i + 1) * P * K), prior: stem.prior.subarray(i * P, (i + 1) * P) };
    [one, mirrorStem(c, one, 1)].forEach((st, f) => {
      table.X.set(st.X, (2 * i + f) * P * K);
      table.prior.set(st.prior, (2 * i + f) * P);
    });
  }
  const text = textBatch(c, 4, rng);
  const batch = { n: 4, entries: Int32Array.from([3, 0, 10, 7]), ...text };
  const local = await shardedLossAndGrad(p, batch, new LocalShards(p, (entries) => gatherStem(c, table, entries)));
  for (const workers of [1, 2]) {
    const pool = new WorkerShards(workers, p);
    try {
      // the stems the workers compute are the same as here
      const [st, mirrored] = await pool.stem(pixels.subarray(0, 3 * c.image * c.image), 1);
      assert.ok(Buffer.from(st.X.buffer).equals(Buffer.from(table.X.buffer, 0, P * K * 4)));
      assert.ok(Buffer.from(mirrored.X.buffer).equals(Buffer.from(table.X.buffer, P * K * 4, P * K * 4)));
      // a forward without the table is an error, reported to the caller
      await assert.rejects(pool.forward(0, Int32Array.from([0])), /before the stem table/);
      await pool.setTable(table);
      const r = await shardedLossAndGrad(p, batch, pool);
      assert.equal(r.loss, local.loss);
      assert.ok(Buffer.from(r.grad.buffer).equals(Buffer.from(local.grad.buffer)), `${workers} worker(s): gradient differs`);
    } finally {
      await pool.close();
    }
    await assert.rejects(pool.forward(0, Int32Array.from([0])), /closed/);
  }
});

test('a reduced build gives byte-identical ONNX files with 1 and 2 workers (and none)', async () => {
  const root = await mkdtemp(join(tmpdir(), 'squeeze-clip-parallel-'));
  try {
    const versions: string[] = [];
    const runs = workersAvailable() ? [1, 2, 0] : [0];
    for (const workers of runs) versions.push((await buildBuiltinBundle(join(root, `w${workers}`), { ...SMALL, workers })).version);
    assert.equal(new Set(versions).size, 1, `versions differ: ${versions.join(', ')}`);
    for (const f of ['vision.onnx', 'text.onnx']) {
      const first = await readFile(join(root, `w${runs[0]}`, f));
      for (const w of runs.slice(1)) assert.ok(first.equals(await readFile(join(root, `w${w}`, f))), `${f} differs with ${w} workers`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
