/**
 * Off-thread onnxruntime sessions (models/session.ts): the same outputs as a session on the main
 * thread, errors as one line without killing the worker, and a clean release.
 */
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { loadBundle } from '../../src/models/bundle';
import { offThreadAvailable, openSession } from '../../src/models/session';

const VISION = join(__dirname, '..', '..', '..', 'models', 'builtin', 'vision.onnx');

const feeds = (n: number, fill: (i: number) => number) => {
  const x = new Float32Array(n * 3 * 64 * 64).map((_, i) => fill(i));
  return {
    pixel_values: new ort.Tensor('float32', x, [n, 3, 64, 64]),
    patch_mask: new ort.Tensor('float32', new Float32Array(n * 64).fill(1), [n, 64]),
  };
};

test('an off-thread session answers like the in-process one, call after call', async () => {
  assert.ok(offThreadAvailable(), 'the compiled worker script is there');
  const here = await openSession(VISION, { threads: 1 });
  const there = await openSession(VISION, { threads: 1, offThread: true });
  try {
    assert.deepEqual([...there.inputNames], [...here.inputNames]);
    assert.deepEqual([...there.outputNames], [...here.outputNames]);
    assert.deepEqual(there.inputMetadata, here.inputMetadata);
    for (const n of [1, 5]) {
      const f = feeds(n, (i) => Math.sin(i * 0.37 + n));
      const [a, b] = await Promise.all([here.run(f), there.run(f)]);
      for (const name of here.outputNames) {
        assert.deepEqual(b[name].dims, a[name].dims);
        assert.deepEqual(Array.from(b[name].data as Float32Array), Array.from(a[name].data as Float32Array), `${name} for ${n} images`);
      }
    }
    // calls in flight at once come back to their own callers
    const many = await Promise.all([1, 2, 3].map((n) => there.run(feeds(n, () => n / 10))));
    assert.deepEqual(many.map((r) => r.image_embeds.dims[0]), [1, 2, 3]);
  } finally {
    await here.release();
    await there.release();
  }
});

test('a bad call fails with onnxruntime\'s message and the worker keeps serving; release ends it', async () => {
  const s = await openSession(VISION, { threads: 1, offThread: true });
  const wrong = { pixel_values: new ort.Tensor('float32', new Float32Array(3 * 32 * 32), [1, 3, 32, 32]), patch_mask: new ort.Tensor('float32', new Float32Array(64).fill(1), [1, 64]) };
  await assert.rejects(s.run(wrong), (e: Error) => e.message.length > 0 && !e.message.includes('\n    at '));
  const ok = await s.run(feeds(2, () => 0.5));
  assert.deepEqual(ok.image_embeds.dims, [2, 32]);
  await s.release();
  await assert.rejects(s.run(feeds(1, () => 0)), /exited/);
});

test('a file that is not a model fails to open with one line, and a bundle opens off-thread', async () => {
  const junk = join(mkdtempSync(join(tmpdir(), 'session-')), 'junk.onnx');
  writeFileSync(junk, 'not a model');
  await assert.rejects(openSession(junk, { threads: 1, offThread: true }), (e: Error) => e.message.length > 0);
  const bundle = await loadBundle(join(__dirname, '..', '..', '..', 'models', 'builtin'), { threads: 1, offThread: true });
  try {
    const [t] = await bundle.text.encode(['a red circle']);
    assert.equal(t.length, 32);
  } finally {
    await bundle.close();
  }
});
