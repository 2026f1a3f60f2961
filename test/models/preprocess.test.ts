import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { prepareImages, preprocessBatch, preprocessImage } from '../../src/models/preprocess';
import type { ImagePreprocess } from '../../src/models/types';

const SHARED = join(__dirname, '../../../../shared');
const COCO = join(SHARED, 'data/coco/images/val2017');

/** A PNG from a pixel function (RGB or RGBA). */
async function png(w: number, h: number, px: (x: number, y: number) => number[], channels: 3 | 4 = 3): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set(px(x, y), (y * w + x) * channels);
  return sharp(raw, { raw: { width: w, height: h, channels } }).png().toBuffer();
}

const identity255 = (size: [number, number], resize: ImagePreprocess['resize'], channels: 'RGB' | 'BGR' = 'RGB'): ImagePreprocess => ({
  size,
  resize,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  channels,
  scale: 255,
});

/** Pixel (x, y) of a CHW tensor as [c0, c1, c2]. */
function at(t: Float32Array, size: [number, number], x: number, y: number, offset = 0): number[] {
  const [H, W] = size;
  return [0, 1, 2].map((c) => t[offset + c * H * W + y * W + x]);
}

test('squash: exact values of a solid image, RGB and BGR order, mean/std and 0..1 scale', async () => {
  const img = await png(7, 3, () => [255, 0, 128]);
  const rgb = await preprocessImage(img, identity255([4, 5], 'squash'));
  assert.equal(rgb.tensor.length, 3 * 4 * 5);
  for (let y = 0; y < 4; y++) for (let x = 0; x < 5; x++) assert.deepEqual(at(rgb.tensor, [4, 5], x, y), [255, 0, 128]);
  assert.deepEqual(rgb.meta, { width: 7, height: 3, scale: 5 / 7, scaleY: 4 / 3, padX: 0, padY: 0 });
  const bgr = await preprocessImage(img, identity255([4, 5], 'squash', 'BGR'));
  assert.deepEqual(at(bgr.tensor, [4, 5], 2, 1), [128, 0, 255]);
  const norm = await preprocessImage(img, { size: [2, 2], resize: 'squash', mean: [0.5, 0.25, 0.125], std: [0.5, 0.25, 0.125], channels: 'RGB', scale: 1 });
  const [r, g, b] = at(norm.tensor, [2, 2], 1, 1);
  assert.ok(Math.abs(r - 1) < 1e-6, `r ${r}`);
  assert.ok(Math.abs(g + 1) < 1e-6, `g ${g}`);
  assert.ok(Math.abs(b - (128 / 255 - 0.125) / 0.125) < 1e-5, `b ${b}`);
  // mean/std are in the model's channel order: with BGR, mean[0] applies to blue
  const normBgr = await preprocessImage(img, { size: [2, 2], resize: 'squash', mean: [0.5, 0, 0], std: [0.5, 1, 1], channels: 'BGR', scale: 1 });
  assert.ok(Math.abs(at(normBgr.tensor, [2, 2], 0, 0)[0] - (128 / 255 - 0.5) / 0.5) < 1e-5);
});

test('shortest-crop: HF CLIP geometry (short side to target, floor of the long side, centred crop)', async () => {
  // 40x20, left half red, right half blue: the 10x10 crop of the 20x10 resize is centred on the edge.
  const img = await png(40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]));
  const { tensor, meta } = await preprocessImage(img, identity255([10, 10], 'shortest-crop'));
  assert.deepEqual(meta, { width: 40, height: 20, scale: 0.5, scaleY: 0.5, padX: -5, padY: 0 });
  for (let y = 0; y < 10; y++) {
    assert.deepEqual(at(tensor, [10, 10], 0, y), [255, 0, 0]);
    assert.deepEqual(at(tensor, [10, 10], 9, y), [0, 0, 255]);
    // symmetric about the edge: an off-by-one crop would break this
    for (let x = 0; x < 5; x++) {
      const l = at(tensor, [10, 10], x, y);
      const r = at(tensor, [10, 10], 9 - x, y);
      assert.ok(Math.abs(l[0] - r[2]) <= 1 && Math.abs(l[2] - r[0]) <= 1, `x ${x}: ${l} vs ${r}`);
    }
  }
  // portrait, odd margins: 21x50 -> short 21 -> 10, long floor(10 * 50 / 21) = 23, top = floor(13 / 2) = 6
  const tall = await preprocessImage(await png(21, 50, (_x, y) => [y * 5, 0, 0]), identity255([10, 10], 'shortest-crop'));
  assert.deepEqual(tall.meta, { width: 21, height: 50, scale: 10 / 21, scaleY: 23 / 50, padX: 0, padY: -6 });
  // the red ramp keeps increasing down the crop
  for (let y = 1; y < 10; y++) assert.ok(at(tall.tensor, [10, 10], 5, y)[0] > at(tall.tensor, [10, 10], 5, y - 1)[0]);
  // a non-square target: the shortest side goes to the larger target side, then the crop
  const wide = await preprocessImage(await png(30, 30, () => [9, 9, 9]), identity255([10, 20], 'shortest-crop'));
  assert.deepEqual(wide.meta, { width: 30, height: 30, scale: 20 / 30, scaleY: 20 / 30, padX: 0, padY: -5 });
});

// ---- Pillow's bicubic resample (Resample.c, 8-bit fixed point), the reference HF CLIPImageProcessor uses ----
function pilCubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}
function pilCoeffs(inSize: number, outSize: number): { xmin: number; k: number[] }[] {
  const scale = inSize / outSize;
  const fs = Math.max(scale, 1);
  const support = 2 * fs;
  return Array.from({ length: outSize }, (_, xx) => {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const w = Array.from({ length: n }, (_, x) => pilCubic((x + xmin - center + 0.5) / fs));
    const ww = w.reduce((s, v) => s + v, 0);
    return { xmin, k: w.map((v) => Math.trunc((v / ww) * (1 << 22) + (v < 0 ? -0.5 : 0.5))) };
  });
}
function pilResize(src: Uint8Array, w: number, h: number, ow: number, oh: number): Uint8Array {
  const clip8 = (v: number) => Math.min(255, Math.max(0, Math.floor(v / (1 << 22))));
  const hc = pilCoeffs(w, ow);
  const tmp = new Uint8Array(ow * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < ow; x++)
      for (let c = 0; c < 3; c++) {
        let s = 1 << 21;
        hc[x].k.forEach((k, i) => (s += src[(y * w + hc[x].xmin + i) * 3 + c] * k));
        tmp[(y * ow + x) * 3 + c] = clip8(s);
      }
  const vc = pilCoeffs(h, oh);
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++)
    for (let x = 0; x < ow; x++)
      for (let c = 0; c < 3; c++) {
        let s = 1 << 21;
        vc[y].k.forEach((k, i) => (s += tmp[((vc[y].xmin + i) * ow + x) * 3 + c] * k));
        out[(y * ow + x) * 3 + c] = clip8(s);
      }
  return out;
}

/** Mean and max |ours - HF reference| in 0..255 levels for CLIP preprocessing to 224 of one image. */
async function diffVsPil(bytes: Buffer): Promise<{ mean: number; max: number }> {
  const { data, info } = await sharp(bytes).rotate().removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const { width: w, height: h } = info;
  const T = 224;
  const ow = w <= h ? T : Math.floor((T * w) / h);
  const oh = w <= h ? Math.floor((T * h) / w) : T;
  const ref = pilResize(data, w, h, ow, oh);
  const top = Math.floor((oh - T) / 2);
  const left = Math.floor((ow - T) / 2);
  const ours = await preprocessImage(bytes, identity255([T, T], 'shortest-crop'));
  let sum = 0;
  let max = 0;
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < T; y++)
      for (let x = 0; x < T; x++) {
        const d = Math.abs(ours.tensor[c * T * T + y * T + x] - ref[((y + top) * ow + x + left) * 3 + c]);
        sum += d;
        max = Math.max(max, d);
      }
  return { mean: sum / (3 * T * T), max };
}

test('shortest-crop matches a Pillow-bicubic + HF centre-crop reference to within a level on average', async () => {
  // smooth synthetic photo-like content (gradients and a disc) at 500x333
  const img = await png(500, 333, (x, y) => [(x * 255) / 499, (y * 255) / 332, (x - 250) ** 2 + (y - 160) ** 2 < 90 ** 2 ? 230 : 40]);
  const d = await diffVsPil(img);
  console.log(`shortest-crop vs Pillow bicubic (synthetic 500x333): mean |diff| ${d.mean.toFixed(3)} levels, max ${d.max}`);
  assert.ok(d.mean < 0.5 && d.max <= 8, JSON.stringify(d));
  if (!existsSync(COCO)) {
    console.log('skipped: ../shared/data/coco absent (the real-photo comparison)');
    return;
  }
  const file = readdirSync(COCO).filter((f) => f.endsWith('.jpg')).sort()[0];
  const real = await diffVsPil(readFileSync(join(COCO, file)));
  console.log(`shortest-crop vs Pillow bicubic (${file}): mean |diff| ${real.mean.toFixed(3)} levels, max ${real.max}`);
  assert.ok(real.mean < 0.5 && real.max <= 12, JSON.stringify(real));
});

test('letterbox: YOLOX scale, top-left placement, padding value, meta', async () => {
  const wide = await preprocessImage(await png(20, 10, () => [10, 20, 30]), identity255([16, 16], 'letterbox', 'BGR'));
  assert.deepEqual(wide.meta, { width: 20, height: 10, scale: 0.8, scaleY: 0.8, padX: 0, padY: 0 });
  for (let x = 0; x < 16; x++) {
    for (let y = 0; y < 8; y++) assert.deepEqual(at(wide.tensor, [16, 16], x, y), [30, 20, 10]);
    for (let y = 8; y < 16; y++) assert.deepEqual(at(wide.tensor, [16, 16], x, y), [114, 114, 114]);
  }
  const tall = await preprocessImage(await png(10, 20, () => [10, 20, 30]), { ...identity255([16, 16], 'letterbox'), pad: 0 });
  assert.equal(tall.meta.scale, 0.8);
  for (let y = 0; y < 16; y++) {
    assert.deepEqual(at(tall.tensor, [16, 16], 7, y), [10, 20, 30]);
    assert.deepEqual(at(tall.tensor, [16, 16], 8, y), [0, 0, 0]);
  }
  // YOLOX sizes: 640x427 into 416 -> r = 0.65, 416x277 (floor), the rest padded
  const coco = await preprocessImage(await png(640, 427, () => [1, 2, 3]), identity255([416, 416], 'letterbox', 'BGR'));
  assert.equal(coco.meta.scale, 0.65);
  assert.deepEqual(at(coco.tensor, [416, 416], 415, 276), [3, 2, 1]);
  assert.deepEqual(at(coco.tensor, [416, 416], 0, 277), [114, 114, 114]);
  // padding goes through mean/std like the pixels
  const norm = await preprocessImage(await png(20, 10, () => [0, 0, 0]), { size: [4, 4], resize: 'letterbox', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], channels: 'RGB', scale: 1, pad: 255 });
  assert.deepEqual(at(norm.tensor, [4, 4], 0, 3), [1, 1, 1]);
  assert.deepEqual(at(norm.tensor, [4, 4], 0, 0), [-1, -1, -1]);
});

test('EXIF orientation is applied before resizing', async () => {
  // stored 32x16 with red left, blue right; orientation 6 displays it rotated 90 degrees clockwise: 16x32, red on top
  const raw = await png(32, 16, (x) => (x < 16 ? [255, 0, 0] : [0, 0, 255]));
  const jpeg = await sharp(raw).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
  assert.equal((await sharp(jpeg).metadata()).orientation, 6);
  const { tensor, meta } = await preprocessImage(jpeg, identity255([8, 4], 'squash'));
  assert.equal(meta.width, 16);
  assert.equal(meta.height, 32);
  const top = at(tensor, [8, 4], 2, 0);
  const bottom = at(tensor, [8, 4], 2, 7);
  assert.ok(top[0] > 200 && top[2] < 50, `top ${top}`);
  assert.ok(bottom[2] > 200 && bottom[0] < 50, `bottom ${bottom}`);
});

test('alpha is flattened on white, grayscale becomes three equal channels', async () => {
  const rgba = await png(4, 4, (x) => (x < 2 ? [0, 0, 0, 0] : [10, 20, 30, 255]), 4);
  const a = await preprocessImage(rgba, identity255([4, 4], 'squash'));
  assert.deepEqual(at(a.tensor, [4, 4], 0, 0), [255, 255, 255]);
  const gray = await sharp(Buffer.alloc(16, 77), { raw: { width: 4, height: 4, channels: 1 } }).png().toBuffer();
  const g = await preprocessImage(gray, identity255([2, 2], 'squash'));
  assert.deepEqual(at(g.tensor, [2, 2], 1, 1), [77, 77, 77]);
});

test('preprocessBatch stacks images as [N, 3, H, W]', async () => {
  const p = identity255([6, 6], 'shortest-crop');
  const imgs = [await png(12, 9, () => [1, 2, 3]), await png(9, 12, (x, y) => [x * 20, y * 20, 0])];
  const batch = preprocessBatch(await prepareImages(imgs, p), p);
  assert.deepEqual(batch.dims, [2, 3, 6, 6]);
  assert.equal(batch.metas.length, 2);
  for (let i = 0; i < 2; i++) {
    const one = await preprocessImage(imgs[i], p);
    assert.deepEqual(Array.from(batch.tensor.subarray(i * 108, (i + 1) * 108)), Array.from(one.tensor));
  }
  await assert.rejects(preprocessImage(imgs[0], { ...p, size: [0, 6] }), /size/);
});
