/**
 * Draws a scene into raw RGBA pixels in plain JS: about three times faster than rendering an SVG per image
 * through librsvg, with anti-aliased outlines all the same. Pixels are handled as one 32-bit word each.
 */
import { Rng } from './rng';
import type { Background, DrawnObject, RGB, Scene } from './shapes';

/** Vertical samples per pixel row; horizontal coverage is computed exactly. */
const SUBROWS = 4;

/**
 * Every drawn channel stays within [LO, HI], so grain of up to +-(255 - HI) can be added to all three
 * channels of a pixel with one 32-bit addition, without any channel over- or underflowing into the next.
 */
const LO = 10;
const HI = 245;
export const MAX_GRAIN = 2 * (255 - HI);

const LITTLE_ENDIAN = new Uint8Array(new Int32Array([0x01020304]).buffer)[0] === 0x04;
const GRAIN_UNIT = LITTLE_ENDIAN ? 0x010101 : 0x01010100;

function channel(v: number): number {
  return Math.min(HI, Math.max(LO, Math.round(v)));
}

/**
 * Opaque pixel word for the platform's byte order (RGBA in memory), as a signed 32-bit integer: V8 keeps
 * those unboxed, where unsigned words above 2^31 would become doubles.
 */
function pack(r: number, g: number, b: number): number {
  return LITTLE_ENDIAN ? (255 << 24) | (b << 16) | (g << 8) | r : (r << 24) | (g << 16) | (b << 8) | 255;
}

function packRgb(c: RGB): number {
  return pack(channel(c[0]), channel(c[1]), channel(c[2]));
}

/** Cosine and sine rounded so that axis-aligned directions are exact. */
function direction(angle: number): [number, number] {
  return [Math.round(Math.cos(angle) * 1e9) / 1e9, Math.round(Math.sin(angle) * 1e9) / 1e9];
}

/**
 * Paints the background row by row. Rows with the same `key` are identical, so each distinct row is
 * computed once and copied (plain, checkered, axis-aligned stripes and dots repeat that way).
 */
function paintBackground(img: Int32Array, width: number, height: number, bg: Background): void {
  const [c0, c1 = c0, c2 = c1] = bg.colours as [RGB, RGB?, RGB?];
  const p0 = packRgb(c0);
  const p1 = packRgb(c1);
  const p2 = packRgb(c2);
  let key: (y: number) => number = () => -1;
  let fill: (y: number, row: Int32Array) => void;
  switch (bg.kind) {
    case 'plain':
    case 'speckled':
      key = () => 0;
      fill = (_y, row) => row.fill(p0);
      break;
    case 'gradient': {
      const [dx, dy] = direction(bg.angle);
      const corners = [0, width * dx, height * dy, width * dx + height * dy];
      const lo = Math.min(...corners);
      const span = Math.max(...corners) - lo || 1;
      if (dy === 0) key = () => 0;
      const a = [channel(c0[0]), channel(c0[1]), channel(c0[2])] as const;
      const d = [channel(c1[0]) - a[0], channel(c1[1]) - a[1], channel(c1[2]) - a[2]] as const;
      // 16.16 fixed point, rounded; t stays within [0, 1], so channels stay between the two end colours.
      fill = (y, row) => {
        const t0 = (y * dy - lo) / span;
        const dt = dx / span;
        let r = Math.round((a[0] + d[0] * t0 + 0.5) * 65536);
        let g = Math.round((a[1] + d[1] * t0 + 0.5) * 65536);
        let b = Math.round((a[2] + d[2] * t0 + 0.5) * 65536);
        const dr = Math.round(d[0] * dt * 65536);
        const dg = Math.round(d[1] * dt * 65536);
        const db = Math.round(d[2] * dt * 65536);
        for (let x = 0; x < width; x++, r += dr, g += dg, b += db) {
          row[x] = pack(r >> 16, g >> 16, b >> 16);
        }
      };
      break;
    }
    case 'striped': {
      const [dx, dy] = direction(bg.angle);
      const half = bg.period / 2;
      const offset = 4096 * bg.period;
      if (dy === 0) key = () => 0;
      else if (dx === 0) key = (y) => Math.floor((y + offset) / half) % 2;
      fill = (y, row) => {
        for (let x = 0; x < width; x++) row[x] = Math.floor((x * dx + y * dy + offset) / half) % 2 === 0 ? p0 : p1;
      };
      break;
    }
    case 'checkered':
      key = (y) => Math.floor(y / bg.period) % 2;
      fill = (y, row) => {
        const r = Math.floor(y / bg.period);
        for (let x = 0; x < width; x++) row[x] = (r + Math.floor(x / bg.period)) % 2 === 0 ? p0 : p1;
      };
      break;
    case 'dotted': {
      const s = bg.period;
      const r2 = bg.detail * bg.detail;
      key = (y) => y % (2 * s);
      fill = (y, row) => {
        const r = Math.floor(y / s);
        const cy = (r + 0.5) * s;
        const shift = r % 2 === 0 ? 0 : s / 2;
        for (let x = 0; x < width; x++) {
          const cx = (Math.floor((x + shift) / s) + 0.5) * s - shift;
          row[x] = (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r2 ? p1 : p0;
        }
      };
      break;
    }
  }
  const rows = new Map<number, Int32Array>();
  const scratch = new Int32Array(width);
  for (let y = 0; y < height; y++) {
    const k = key(y);
    let row = k >= 0 ? rows.get(k) : undefined;
    if (!row) {
      row = k >= 0 ? new Int32Array(width) : scratch;
      fill(y, row);
      if (k >= 0) rows.set(k, row);
    }
    img.set(row, y * width);
  }
  if (bg.kind === 'speckled') {
    const rng = new Rng(bg.seed);
    for (let k = 0; k < bg.detail; k++) {
      const w = rng.int(1, 4);
      const h = rng.int(1, 4);
      const x0 = rng.int(0, width - w);
      const y0 = rng.int(0, height - h);
      const p = rng.chance(0.5) ? p1 : p2;
      for (let y = y0; y < y0 + h; y++) img.fill(p, y * width + x0, y * width + x0 + w);
    }
  }
}

/** Even-odd scanline fill with anti-aliased edges and a light top-to-bottom shading. */
function fillObject(img: Int32Array, bytes: Uint8Array, width: number, height: number, o: DrawnObject): void {
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
          const ay = r[k + 1]!;
          const by2 = k + 3 < n ? r[k + 3]! : r[1]!;
          if (ay <= sy !== by2 <= sy) {
            const ax = r[k]!;
            const bx2 = k + 2 < n ? r[k + 2]! : r[0]!;
            xs.push(ax + ((sy - ay) * (bx2 - ax)) / (by2 - ay));
          }
        }
      }
      if (xs.length === 0) continue;
      xs.sort((a, b) => a - b);
      for (let k = 0; k + 1 < xs.length; k += 2) addSpan(xs[k]!, xs[k + 1]!, 1 / SUBROWS);
    }
    const shade = 1 + 0.14 * (0.5 - (py - by) / Math.max(1, bh));
    const r = channel(o.rgb[0] * shade);
    const g = channel(o.rgb[1] * shade);
    const b = channel(o.rgb[2] * shade);
    const solid = pack(r, g, b);
    for (let x = x0, p = py * width + x0; x <= x1; x++, p++) {
      const a = cov[x - x0]!;
      if (a <= 0) continue;
      if (a >= 0.999) {
        img[p] = solid;
      } else {
        // Blends of two in-range colours stay in range. Byte offsets: R, G, B, A in memory.
        const i = p * 4;
        bytes[i] = Math.round(bytes[i]! + (r - bytes[i]!) * a);
        bytes[i + 1] = Math.round(bytes[i + 1]! + (g - bytes[i + 1]!) * a);
        bytes[i + 2] = Math.round(bytes[i + 2]! + (b - bytes[i + 2]!) * a);
      }
    }
  }
}

/** Sensor-like luma grain in [-amplitude/2, amplitude/2), so photos do not compress like clip art. */
function addGrain(img: Int32Array, amplitude: number, seed: number): void {
  const a = Math.min(MAX_GRAIN, amplitude | 0);
  if (a <= 0) return;
  const half = a >> 1;
  let s = seed | 1;
  const len = img.length;
  let shift = 32;
  for (let i = 0; i < len; i++) {
    // One xorshift32 draw gives four 8-bit noise values.
    if (shift === 32) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      shift = 0;
    }
    const n = ((((s >>> shift) & 255) * a) >> 8) - half;
    shift += 8;
    img[i] = img[i]! + n * GRAIN_UNIT;
  }
}

/** Raw 4-channel (RGBA, opaque) pixels of the scene, row-major. */
export function rasterize(scene: Scene, grain: number, grainSeed: number): Buffer {
  const buf = new ArrayBuffer(scene.width * scene.height * 4);
  const img = new Int32Array(buf);
  const bytes = new Uint8Array(buf);
  paintBackground(img, scene.width, scene.height, scene.background);
  for (const o of scene.objects) fillObject(img, bytes, scene.width, scene.height, o);
  addGrain(img, grain, grainSeed);
  return Buffer.from(buf);
}
