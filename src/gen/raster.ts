/**
 * Draws a scene into raw RGB pixels in plain JS. Faster than rendering SVG through librsvg for every image
 * (about a third of the time per image), and the outlines come out anti-aliased all the same.
 */
import { Rng } from './rng';
import type { Background, DrawnObject, RGB, Scene } from './shapes';

/** Vertical samples per pixel row; horizontal coverage is computed exactly. */
const SUBROWS = 4;

function paintBackground(img: Buffer, width: number, height: number, bg: Background): void {
  const [c0, c1 = c0, c2 = c1] = bg.colours as [RGB, RGB?, RGB?];
  const put = (i: number, c: RGB) => {
    img[i] = c[0];
    img[i + 1] = c[1];
    img[i + 2] = c[2];
  };
  let i = 0;
  switch (bg.kind) {
    case 'plain':
    case 'speckled':
      for (let p = 0; p < width * height; p++, i += 3) put(i, c0);
      break;
    case 'gradient': {
      const dx = Math.cos(bg.angle);
      const dy = Math.sin(bg.angle);
      const corners = [0, width * dx, height * dy, width * dx + height * dy];
      const lo = Math.min(...corners);
      const span = Math.max(...corners) - lo || 1;
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++, i += 3) {
          const t = (x * dx + y * dy - lo) / span;
          img[i] = c0[0] + (c1[0] - c0[0]) * t;
          img[i + 1] = c0[1] + (c1[1] - c0[1]) * t;
          img[i + 2] = c0[2] + (c1[2] - c0[2]) * t;
        }
      }
      break;
    }
    case 'striped': {
      const dx = Math.cos(bg.angle);
      const dy = Math.sin(bg.angle);
      const half = bg.period / 2;
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++, i += 3) {
          put(i, Math.floor((x * dx + y * dy + 4096 * bg.period) / half) % 2 === 0 ? c0 : c1);
        }
      }
      break;
    }
    case 'checkered':
      for (let y = 0; y < height; y++) {
        const row = Math.floor(y / bg.period);
        for (let x = 0; x < width; x++, i += 3) put(i, (row + Math.floor(x / bg.period)) % 2 === 0 ? c0 : c1);
      }
      break;
    case 'dotted': {
      const s = bg.period;
      const r2 = bg.detail * bg.detail;
      for (let y = 0; y < height; y++) {
        const row = Math.floor(y / s);
        const cy = (row + 0.5) * s;
        const shift = row % 2 === 0 ? 0 : s / 2;
        for (let x = 0; x < width; x++, i += 3) {
          const cx = (Math.floor((x + shift) / s) + 0.5) * s - shift;
          put(i, (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r2 ? c1 : c0);
        }
      }
      break;
    }
  }
  if (bg.kind === 'speckled') {
    const rng = new Rng(bg.seed);
    for (let k = 0; k < bg.detail; k++) {
      const w = rng.int(1, 4);
      const h = rng.int(1, 4);
      const x0 = rng.int(0, width - w);
      const y0 = rng.int(0, height - h);
      const c = rng.chance(0.5) ? c1 : c2;
      for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) put((y * width + x) * 3, c);
    }
  }
}

/** Even-odd scanline fill with anti-aliased edges and a light top-to-bottom shading. */
function fillObject(img: Buffer, width: number, height: number, o: DrawnObject): void {
  const [bx, by, bw, bh] = o.box;
  const x0 = Math.max(0, bx);
  const x1 = Math.min(width - 1, bx + bw);
  const y0 = Math.max(0, by);
  const y1 = Math.min(height - 1, by + bh);
  const cov = new Float32Array(x1 - x0 + 2);
  const xs: number[] = [];
  const addSpan = (a: number, b: number, w: number) => {
    a = Math.max(a, x0);
    b = Math.min(b, x1 + 1);
    if (b <= a) return;
    const ia = Math.floor(a);
    const ib = Math.floor(b);
    if (ia === ib) {
      cov[ia - x0]! += (b - a) * w;
      return;
    }
    cov[ia - x0]! += (ia + 1 - a) * w;
    for (let j = ia + 1; j < ib; j++) cov[j - x0]! += w;
    if (ib <= x1) cov[ib - x0]! += (b - ib) * w;
  };
  for (let py = y0; py <= y1; py++) {
    cov.fill(0);
    for (let s = 0; s < SUBROWS; s++) {
      const sy = py + (s + 0.5) / SUBROWS;
      xs.length = 0;
      for (const r of o.rings) {
        const n = r.length;
        for (let k = 0; k < n; k += 2) {
          const ax = r[k]!;
          const ay = r[k + 1]!;
          const bxp = r[(k + 2) % n]!;
          const byp = r[(k + 3) % n]!;
          if (ay <= sy !== byp <= sy) xs.push(ax + ((sy - ay) * (bxp - ax)) / (byp - ay));
        }
      }
      xs.sort((a, b) => a - b);
      for (let k = 0; k + 1 < xs.length; k += 2) addSpan(xs[k]!, xs[k + 1]!, 1 / SUBROWS);
    }
    const shade = 1 + 0.14 * (0.5 - (py - by) / Math.max(1, bh));
    const r = Math.min(255, o.rgb[0] * shade);
    const g = Math.min(255, o.rgb[1] * shade);
    const b = Math.min(255, o.rgb[2] * shade);
    let i = (py * width + x0) * 3;
    for (let x = x0; x <= x1; x++, i += 3) {
      const a = Math.min(1, cov[x - x0]!);
      if (a <= 0) continue;
      img[i] = img[i]! + (r - img[i]!) * a;
      img[i + 1] = img[i + 1]! + (g - img[i + 1]!) * a;
      img[i + 2] = img[i + 2]! + (b - img[i + 2]!) * a;
    }
  }
}

/** Sensor-like luma grain of +-amplitude/2, so photos do not compress like clip art. */
function addGrain(img: Buffer, amplitude: number, seed: number): void {
  if (amplitude <= 0) return;
  let s = seed | 1;
  const half = amplitude / 2;
  for (let i = 0; i < img.length; i += 3) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const n = ((s & 255) * amplitude) / 256 - half;
    img[i] = Math.max(0, Math.min(255, img[i]! + n));
    img[i + 1] = Math.max(0, Math.min(255, img[i + 1]! + n));
    img[i + 2] = Math.max(0, Math.min(255, img[i + 2]! + n));
  }
}

/** Raw 3-channel pixels of the scene, row-major. */
export function rasterize(scene: Scene, grain: number, grainSeed: number): Buffer {
  const img = Buffer.alloc(scene.width * scene.height * 3);
  paintBackground(img, scene.width, scene.height, scene.background);
  for (const o of scene.objects) fillObject(img, scene.width, scene.height, o);
  addGrain(img, grain, grainSeed);
  return img;
}
