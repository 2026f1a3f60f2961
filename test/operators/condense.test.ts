import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of, type OperatorFunction, pipe, toArray } from 'rxjs';
import sharp from 'sharp';
import { choosePatches } from '../../src/operators/choose-patches';
import { blankPatches, condense } from '../../src/operators/condense';
import type { Batch, Sample } from '../../src/operators/sample';
import { batchOf, g4, keptSample, saliency } from '../helpers/samples';

const run = async (op: OperatorFunction<Batch, Batch>, batches: Batch[]) => firstValueFrom(of(...batches).pipe(op, toArray()));

test('blankPatches paints exactly the dropped patches', () => {
  const w = 10;
  const h = 6;
  const rgb = Buffer.alloc(w * h * 3, 7);
  blankPatches(rgb, w, h, 3, { rows: 2, cols: 2 }, [0, 3], [1, 2, 3]);
  const at = (x: number, y: number) => [...rgb.subarray((y * w + x) * 3, (y * w + x) * 3 + 3)];
  assert.deepEqual(at(0, 0), [7, 7, 7]);
  assert.deepEqual(at(4, 2), [7, 7, 7]);
  assert.deepEqual(at(5, 0), [1, 2, 3]);
  assert.deepEqual(at(0, 3), [1, 2, 3]);
  assert.deepEqual(at(9, 5), [7, 7, 7]);
});

function modelled(s: Sample, sal: Float32Array, grid = g4): Sample {
  s.model = { imageEmbedding: new Float32Array(4), textEmbedding: new Float32Array(4), saliency: sal, grid };
  return s;
}

test('choosePatches then condense: the kept patches are recorded, confident detection boxes forced in', async () => {
  const s = modelled(keptSample(0), saliency(16, (j) => j + 1)); // 64 x 64 image, 16 px patches
  s.detections = [
    { label: 'star', score: 0.9, box: [0, 0, 10, 10] }, // patch 0
    { label: 'ring', score: 0.2, box: [20, 0, 10, 10] }, // patch 1, not confident
  ];
  const before = s.image!.bytes;
  const [out] = await run(pipe(choosePatches({ rho: 0.25, forceDetections: { minScore: 0.5 } }), condense({ blank: false })), [batchOf([s])]);
  const c = out.samples[0].condensed!;
  assert.deepEqual(c.kept, [0, 12, 13, 14, 15]);
  assert.deepEqual(c.grid, g4);
  assert.equal(c.keepRatio, 5 / 16);
  assert.equal(c.bytesBefore, before.length);
  assert.equal(c.bytesAfter, before.length);
  assert.equal(out.samples[0].image!.bytes, before, 'no blanking: bytes untouched');
});

test('condense mass mode and samples without a model pass', async () => {
  const s = modelled(keptSample(0), Float32Array.from({ length: 16 }, (_, j) => (j === 3 ? 0.6 : j === 7 ? 0.3 : 0.1 / 14)));
  const bare = keptSample(1);
  const [out] = await run(pipe(choosePatches({ mass: 0.85 }), condense({ blank: false })), [batchOf([s, bare])]);
  assert.deepEqual(out.samples[0].condensed!.kept, [3, 7]);
  assert.equal(out.samples[1].condensed, null);
  assert.equal(out.samples[1].outcome.kind, 'keep');
});

/** A noisy but structured RGB image, deterministic. */
function noisyRgb(w: number, h: number): Buffer {
  const px = Buffer.alloc(w * h * 3);
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      px[i] = (x * 2 + (rnd() >> 2)) & 0xff;
      px[i + 1] = (y * 2 + (rnd() >> 2)) & 0xff;
      px[i + 2] = (128 + (rnd() >> 3)) & 0xff;
    }
  }
  return px;
}

const rawOf = async (bytes: Buffer) => sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });

test('blanking dropped patches shrinks a noisy JPEG, keeps its size and leaves kept patches (nearly) as they were', async () => {
  const W = 128;
  const H = 128;
  const jpeg = await sharp(noisyRgb(W, H), { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  const s = modelled(keptSample(0), saliency(16, (j) => ([0, 5, 10, 15].includes(j) ? 10 : 1)));
  s.image = { ...s.image!, width: W, height: H, bytes: jpeg, mime: 'image/jpeg' };
  const [out] = await run(pipe(choosePatches({ rho: 0.25 }), condense({ blank: true, quality: 90 })), [batchOf([s])]);
  const img = out.samples[0].image!;
  const c = out.samples[0].condensed!;
  assert.deepEqual(c.kept, [0, 5, 10, 15]);
  assert.equal(c.bytesBefore, jpeg.length);
  assert.equal(c.bytesAfter, img.bytes.length);
  assert.ok(c.bytesAfter < c.bytesBefore * 0.6, `blanking 3/4 of a noisy image should save bytes: ${c.bytesBefore} -> ${c.bytesAfter}`);
  assert.equal(img.mime, 'image/jpeg');
  assert.equal(img.width, W);
  assert.equal(img.height, H);
  const before = await rawOf(jpeg);
  const after = await rawOf(img.bytes);
  assert.equal(after.info.width, W);
  assert.equal(after.info.height, H);
  const patchDiff = (j: number, ref: (i: number) => number) => {
    const r = Math.floor(j / 4);
    const col = j % 4;
    let sum = 0;
    let n = 0;
    // stay 2 px inside the patch: JPEG blocks at the boundary mix both sides
    for (let y = r * 32 + 2; y < r * 32 + 30; y++) {
      for (let x = col * 32 + 2; x < col * 32 + 30; x++) {
        for (let k = 0; k < 3; k++) {
          const i = (y * W + x) * 3 + k;
          sum += Math.abs(after.data[i] - ref(i));
          n++;
        }
      }
    }
    return sum / n;
  };
  // re-encoding alone costs some JPEG generation loss on noise; blanking must add (almost) nothing to it
  const plain = await rawOf(await sharp(before.data, { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 90 }).toBuffer());
  for (const j of c.kept) {
    const vsPlain = patchDiff(j, (i) => plain.data[i]);
    const vsBefore = patchDiff(j, (i) => before.data[i]);
    assert.ok(vsPlain < 1.5, `kept patch ${j} differs from a plain re-encode by ${vsPlain.toFixed(2)} on average`);
    assert.ok(vsBefore < 12, `kept patch ${j} changed by ${vsBefore.toFixed(2)} on average`);
  }
  for (const j of [1, 2, 4, 8, 14]) {
    const d = patchDiff(j, () => 128);
    assert.ok(d < 3, `dropped patch ${j} is ${d.toFixed(2)} away from the fill`);
  }
});

test('a WebP stays WebP; blanking that would not save bytes keeps the original', async () => {
  const W = 64;
  const webp = await sharp(noisyRgb(W, W), { raw: { width: W, height: W, channels: 3 } }).webp({ quality: 80 }).toBuffer();
  const s = modelled(keptSample(0), saliency(16, (j) => (j < 4 ? 10 : 1)));
  s.image = { ...s.image!, width: W, height: W, bytes: webp, mime: 'image/webp', format: 'webp' };
  const [out] = await run(pipe(choosePatches({ rho: 0.25 }), condense({ blank: true, quality: 80, fill: [0, 0, 0] })), [batchOf([s])]);
  const img = out.samples[0].image!;
  assert.equal(img.mime, 'image/webp');
  assert.equal(img.bytes.subarray(8, 12).toString('latin1'), 'WEBP');
  assert.ok(img.bytes.length < webp.length);

  // a flat, heavily compressed JPEG re-encoded at quality 100 only grows
  const flat = await sharp({ create: { width: W, height: W, channels: 3, background: '#808080' } }).jpeg({ quality: 20 }).toBuffer();
  const f = modelled(keptSample(1), saliency(16, (j) => (j < 4 ? 10 : 1)));
  f.image = { ...f.image!, width: W, height: W, bytes: flat, mime: 'image/jpeg' };
  const [o2] = await run(pipe(choosePatches({ rho: 0.25 }), condense({ blank: true, quality: 100, fill: [10, 200, 30] })), [batchOf([f])]);
  assert.equal(o2.samples[0].image!.bytes, flat);
  assert.equal(o2.samples[0].condensed!.bytesAfter, flat.length);
  assert.ok(o2.samples[0].flags.includes('condense_blank_not_smaller'));
});

test('an image that cannot be re-read is flagged, not dropped', async () => {
  const s = modelled(keptSample(0), saliency(16, (j) => j));
  s.image!.bytes = Buffer.from('definitely not an image');
  const [out] = await run(pipe(choosePatches({ rho: 0.5 }), condense({ blank: true })), [batchOf([s])]);
  assert.equal(out.samples[0].outcome.kind, 'keep');
  assert.ok(out.samples[0].flags.includes('condense_blank_failed'));
  assert.equal(out.samples[0].condensed!.kept.length, 8);
});
