/**
 * dedupNear: drops a sample that is a near duplicate (re-encoded, resized, cropped, or semantically the
 * same image) of an earlier sample of the same partition; keeps the first seen, filters the later ones with
 * reason `duplicate_near` (SemDeDup online, research/algorithms.md D.3). Run it after dedupExact.
 *
 * ## Candidates
 * - **dHash LSH**: the 64-bit dHash computed at decode is cut into `bands` bands (default 4 x 16 bits), each
 *   band value keys a bucket. A lookup probes every band value within `probe` bits of the sample's (default
 *   floor(maxBits / bands), at most 3), so every remembered hash within `maxBits` is found (pigeonhole: some
 *   band differs in at most floor(maxBits / bands) bits), except entries trimmed from a full bucket.
 *   A bucket holds at most `perBucket` entries; a full bucket forgets its oldest (the entry stays reachable
 *   through its other bands and the thumbnail scan).
 * - **Thumbnail scan** (when thumbnails are on): every remembered entry whose aspect ratio is within the crop
 *   allowance and whose 8x8 colour thumbnail is within a loose distance without alignment (a 2x2 lower bound
 *   first; about 70 ns per remembered entry). Needed because a crop of up to 10 % moves the 9x8 dHash by up
 *   to 30 of its 64 bits.
 *
 * ## Confirmation (in this order)
 * 1. Both samples have an image embedding (`model.imageEmbedding`, `useEmbeddings`): cosine > 1 - `eps`.
 *    (embed runs in the pre section, before this stateful one: docs/ARCHITECTURE.md, Stage contracts.)
 * 2. Both have a thumbnail: the colour thumbnails agree within `maxThumbDistance` (mean absolute difference
 *    per 8-bit channel over an 8x8 grid), directly or after aligning one as a crop of the other: crop windows
 *    down to 1 - `maxCrop` per side, consistent with the two aspect ratios, searched on a 5 % grid and then
 *    refined by hill-climbing in steps of 2.5 % and 1.25 %. On the synthetic crawl (1,500 events, seeds
 *    11, 12, 13) this finds 97-100 % of crops and all re-encoded and resized copies and filters no original.
 * 3. Otherwise, hash only: Hamming distance <= `maxBits`. This is **much weaker**: on the same crawl (seed 11)
 *    the 64-bit dHash alone at maxBits 10 filters 10 % of originals and finds 23 % of crops, 82 % of
 *    re-encodes and 76 % of resized copies; at maxBits 4 it still filters 2.5 % of originals. Use it only
 *    where neither embeddings nor thumbnails are available.
 *
 * Thumbnails (16x16 RGB, 768 bytes) come from `thumbnails`: `true` (default) takes the one decodeImage made
 * from its single decode, else decodes the stored bytes once more with sharp at thumbnail size
 * (shrink-on-load; about 3-5 ms per image); a function supplies them
 * instead (every sample of a partition must get them the same way); `false` turns them off.
 *
 * ## Memory and state
 * Bounded per partition: at most `memory` entries (kept samples only), evicted least recently matched
 * (`eviction: 'lru'`, default) or oldest first (`'fifo'`). Entries hold the dHash, the size, the thumbnail and
 * the embedding quantised to int8 (the live memory holds the quantised vector too, so a restored memory decides
 * exactly as the uninterrupted one). The snapshot (registered as `dedup_near`) stores them as binary columns
 * in base64, thumbnails deflated. JSON size per 10k entries: 0.4 MiB hash only; up to 10.1 MiB with
 * thumbnails (incompressible ones; 4.9 MiB on the synthetic crawl); plus 6.6 MiB for 512-d embeddings. With
 * thumbnails or embeddings on, `memory` sets the commit record's size: consider storing it by reference.
 *
 * @example
 * batches$.pipe(decodeImage(...), dedupExact({ memory: 100_000, state }), dedupNear({ state }))
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { OperatorFunction } from 'rxjs';
import sharp from 'sharp';
import { z } from 'zod';
import { type Batch, filterOut, partitionKey, type Sample } from './sample';
import { stage } from './stage';
import { partitionState, type StateRegistry } from './state';

/** Supplies a THUMB_SIDE x THUMB_SIDE RGB thumbnail (row-major, 3 bytes a pixel) or null. */
export type ThumbnailSource = (s: Sample) => Promise<Uint8Array | null> | Uint8Array | null;

export interface DedupNearOptions {
  /** Hamming radius for dHash candidates (and the hash-only decision), default 10 */
  maxBits?: number;
  /** LSH bands of the 64-bit dHash: 2, 4, 8 or 16, default 4 */
  bands?: number;
  /** bits flipped per band when probing, default min(3, floor(maxBits / bands)) */
  probe?: number;
  /** embedding confirmation: cosine > 1 - eps, default 0.08 */
  eps?: number;
  /** most entries remembered per partition, default 20,000 */
  memory?: number;
  /** most entries per LSH bucket, default 16 */
  perBucket?: number;
  eviction?: 'lru' | 'fifo';
  /** confirm by image embedding when both samples have one, default true */
  useEmbeddings?: boolean;
  /** colour thumbnails: true = decode the stored bytes with sharp (default), a function, or false */
  thumbnails?: boolean | ThumbnailSource;
  /** thumbnail confirmation threshold (mean absolute difference, 0-255 scale), default 2.5 */
  maxThumbDistance?: number;
  /** largest crop per side the thumbnail alignment tries, default 0.1; 0 turns alignment off */
  maxCrop?: number;
  /** thumbnails computed at once, default 4 */
  concurrency?: number;
  state?: StateRegistry;
}

export const THUMB_SIDE = 16;
const THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3;
/** the grid thumbnails are compared on */
const CMP_SIDE = 8;
const CMP_VALUES = CMP_SIDE * CMP_SIDE * 3;
/** a crop-aligned thumbnail pair is first required to be this close without alignment */
const UNALIGNED_GATE = 16;
/** alignment search step, as a share of the image side */
const ALIGN_STEP = 0.025;
/** the fine alignment search runs around the best coarse window when that is within this factor of the threshold */
const COARSE_FACTOR = 2;
/** slack on the aspect ratio a crop implies (rounding of small images) */
const ASPECT_SLACK = 0.03;

/** A 16x16 RGB thumbnail of encoded image bytes (sharp, shrink-on-load, EXIF orientation applied). */
export async function imageThumbnail(bytes: Buffer): Promise<Uint8Array> {
  const out = await sharp(bytes, { failOn: 'none' })
    .rotate()
    .removeAlpha()
    .toColourspace('srgb')
    .resize(THUMB_SIDE, THUMB_SIDE, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer();
  if (out.length !== THUMB_BYTES) throw new Error(`thumbnail has ${out.length} bytes, expected ${THUMB_BYTES}`);
  return new Uint8Array(out);
}

/** decodeImage's thumbnail when it made one, else one more (shrink-on-load) decode of the stored bytes */
const defaultThumbnail: ThumbnailSource = (s) => (s.image ? (s.image.thumb ?? imageThumbnail(s.image.bytes).catch(() => null)) : null);

/** What one sample (or remembered entry) offers for comparison. */
interface Features {
  /** dHash halves, or hasHash false */
  hasHash: boolean;
  hi: number;
  lo: number;
  aspect: number;
  logAspect: number;
  thumb: Uint8Array | null;
  /** thumb averaged down to 8x8 */
  small: Float32Array | null;
  /** thumb averaged down to 2x2: their mean absolute difference is a lower bound of the 8x8 one */
  quad: Float32Array | null;
}

interface Entry extends Features {
  seq: number;
  w: number;
  h: number;
  /** bands whose bucket still lists this entry */
  mask: number;
  emb: Int8Array | null;
  embScale: number;
  embNorm: number;
}

/** Built field by field (not by spreading `f`): one stable object shape keeps the memory scan fast. */
function newEntry(f: Features, seq: number, w: number, h: number, mask: number): Entry {
  return {
    hasHash: f.hasHash,
    hi: f.hi,
    lo: f.lo,
    aspect: f.aspect,
    logAspect: f.logAspect,
    thumb: f.thumb,
    small: f.small,
    quad: f.quad,
    seq,
    w,
    h,
    mask,
    emb: null,
    embScale: 0,
    embNorm: 0,
  };
}

function parseHash(hex: string | undefined): { ok: boolean; hi: number; lo: number } {
  if (!hex || !/^[0-9a-f]{16}$/i.test(hex)) return { ok: false, hi: 0, lo: 0 };
  return { ok: true, hi: parseInt(hex.slice(0, 8), 16) >>> 0, lo: parseInt(hex.slice(8), 16) >>> 0 };
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

const hamming = (a: Features, b: Features): number => popcount32((a.hi ^ b.hi) >>> 0) + popcount32((a.lo ^ b.lo) >>> 0);

function features(hash: string | undefined, width: number, height: number, thumb: Uint8Array | null): Features {
  const h = parseHash(hash);
  const f: Features = { hasHash: h.ok, hi: h.hi, lo: h.lo, aspect: width / height, logAspect: Math.log(width / height), thumb, small: null, quad: null };
  if (thumb) {
    const small = (f.small = new Float32Array(CMP_VALUES));
    for (let y = 0; y < CMP_SIDE; y++) {
      for (let x = 0; x < CMP_SIDE; x++) {
        for (let c = 0; c < 3; c++) {
          const at = (yy: number, xx: number) => thumb[(yy * THUMB_SIDE + xx) * 3 + c];
          small[(y * CMP_SIDE + x) * 3 + c] = (at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1)) / 4;
        }
      }
    }
    const quad = (f.quad = new Float32Array(12));
    const half = CMP_SIDE / 2;
    for (let y = 0; y < CMP_SIDE; y++) {
      for (let x = 0; x < CMP_SIDE; x++) {
        const q = ((y < half ? 0 : 2) + (x < half ? 0 : 1)) * 3;
        for (let c = 0; c < 3; c++) quad[q + c] += small[(y * CMP_SIDE + x) * 3 + c] / (half * half);
      }
    }
  }
  return f;
}

function mad(a: Float32Array, b: Float32Array, stopAbove = Infinity): number {
  const limit = stopAbove * a.length;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    s += Math.abs(a[i] - b[i]);
    if (s > limit) return Infinity;
  }
  return s / a.length;
}

/** int8 quantisation with one float32 scale per vector (the live memory keeps exactly this). */
function quantise(v: Float32Array): { q: Int8Array; scale: number; norm: number } {
  let max = 0;
  for (let i = 0; i < v.length; i++) max = Math.max(max, Math.abs(v[i]));
  const scale = Math.fround(max > 0 ? max / 127 : 1);
  const q = new Int8Array(v.length);
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    q[i] = Math.max(-127, Math.min(127, Math.round(v[i] / scale)));
    n += q[i] * q[i];
  }
  return { q, scale, norm: Math.sqrt(n) };
}

function cosine(x: Float32Array, e: Entry): number {
  const q = e.emb!;
  let dot = 0;
  let nx = 0;
  for (let i = 0; i < x.length; i++) {
    dot += x[i] * q[i];
    nx += x[i] * x[i];
  }
  return nx > 0 && e.embNorm > 0 ? dot / (Math.sqrt(nx) * e.embNorm) : 0;
}

/**
 * Area weights mapping the CMP_SIDE output cells onto THUMB_SIDE input cells for a window [o, o + s] of
 * [0, 1]: output cell j averages input cells from[j] .. from[j] + 2 with weights w[3j .. 3j + 2] (an output
 * cell is at most 2 input cells wide, so it overlaps at most 3).
 */
interface Weights {
  from: Int32Array;
  w: Float32Array;
}
const weightCache = new Map<number, Weights>();
/** windows are snapped to 1/1600 of a side, so cached weights never depend on floating-point history */
const SNAP = 1600;
function weights(o: number, s: number): Weights {
  const io = Math.round(o * SNAP);
  const is = Math.round(s * SNAP);
  const key = io * (SNAP + 1) + is;
  let cached = weightCache.get(key);
  if (cached) return cached;
  o = io / SNAP;
  s = is / SNAP;
  const from = new Int32Array(CMP_SIDE);
  const w = new Float32Array(CMP_SIDE * 3);
  for (let j = 0; j < CMP_SIDE; j++) {
    const a = o + (s * j) / CMP_SIDE;
    const b = o + (s * (j + 1)) / CMP_SIDE;
    const first = Math.min(THUMB_SIDE - 3, Math.max(0, Math.floor(a * THUMB_SIDE)));
    from[j] = first;
    for (let k = 0; k < 3; k++) {
      const i = first + k;
      const overlap = Math.min(b, (i + 1) / THUMB_SIDE) - Math.max(a, i / THUMB_SIDE);
      w[3 * j + k] = overlap > 0 ? overlap / (b - a) : 0;
    }
  }
  cached = { from, w };
  weightCache.set(key, cached);
  return cached;
}

/** `big` resampled over a window onto the comparison grid (separable: columns into tmp, then rows). */
function windowed(big: Uint8Array, wx: Weights, wy: Weights, tmp: Float32Array, out: Float32Array): void {
  const y0 = wy.from[0];
  const y1 = wy.from[CMP_SIDE - 1] + 3;
  for (let y = y0; y < y1; y++) {
    const row = y * THUMB_SIDE * 3;
    for (let j = 0; j < CMP_SIDE; j++) {
      const p = row + wx.from[j] * 3;
      const w0 = wx.w[3 * j];
      const w1 = wx.w[3 * j + 1];
      const w2 = wx.w[3 * j + 2];
      const t = (y * CMP_SIDE + j) * 3;
      tmp[t] = w0 * big[p] + w1 * big[p + 3] + w2 * big[p + 6];
      tmp[t + 1] = w0 * big[p + 1] + w1 * big[p + 4] + w2 * big[p + 7];
      tmp[t + 2] = w0 * big[p + 2] + w1 * big[p + 5] + w2 * big[p + 8];
    }
  }
  for (let k = 0; k < CMP_SIDE; k++) {
    const y = wy.from[k];
    const w0 = wy.w[3 * k];
    const w1 = wy.w[3 * k + 1];
    const w2 = wy.w[3 * k + 2];
    for (let j = 0; j < CMP_SIDE; j++) {
      const t = (y * CMP_SIDE + j) * 3;
      const step = CMP_SIDE * 3;
      const o = (k * CMP_SIDE + j) * 3;
      out[o] = w0 * tmp[t] + w1 * tmp[t + step] + w2 * tmp[t + 2 * step];
      out[o + 1] = w0 * tmp[t + 1] + w1 * tmp[t + 1 + step] + w2 * tmp[t + 1 + 2 * step];
      out[o + 2] = w0 * tmp[t + 2] + w1 * tmp[t + 2 + step] + w2 * tmp[t + 2 + 2 * step];
    }
  }
}

export function dedupNear(options: DedupNearOptions = {}): OperatorFunction<Batch, Batch> {
  const maxBits = options.maxBits ?? 10;
  const bands = options.bands ?? 4;
  if (![2, 4, 8, 16].includes(bands)) throw new RangeError(`dedupNear: bands must be 2, 4, 8 or 16, got ${bands}`);
  const bandBits = 64 / bands;
  const probe = Math.min(options.probe ?? Math.min(3, Math.floor(maxBits / bands)), bandBits);
  const eps = options.eps ?? 0.08;
  const limit = options.memory ?? 20_000;
  const perBucket = options.perBucket ?? 16;
  if (!(Number.isInteger(limit) && limit >= 1)) throw new RangeError(`dedupNear: memory must be a whole number >= 1, got ${limit}`);
  if (!(Number.isInteger(perBucket) && perBucket >= 1)) throw new RangeError(`dedupNear: perBucket must be a whole number >= 1, got ${perBucket}`);
  const lru = (options.eviction ?? 'lru') === 'lru';
  const useEmbeddings = options.useEmbeddings ?? true;
  const thumbSource: ThumbnailSource | null =
    options.thumbnails === false ? null : typeof options.thumbnails === 'function' ? options.thumbnails : defaultThumbnail;
  const maxThumb = options.maxThumbDistance ?? 2.5;
  const maxCrop = Math.max(0, Math.min(0.5, options.maxCrop ?? 0.1));
  const concurrency = options.concurrency ?? 4;
  const aspectGate = -Math.log(1 - maxCrop) + ASPECT_SLACK;

  /** every XOR mask of at most `probe` bits within a band */
  const flips: number[] = [0];
  {
    let frontier: { mask: number; next: number }[] = [{ mask: 0, next: 0 }];
    for (let r = 0; r < probe; r++) {
      const grown: { mask: number; next: number }[] = [];
      for (const f of frontier) {
        for (let b = f.next; b < bandBits; b++) {
          const mask = (f.mask | (2 ** b)) >>> 0;
          grown.push({ mask, next: b + 1 });
          flips.push(mask);
        }
      }
      frontier = grown;
    }
  }
  const bandValue = (f: Features, b: number): number => {
    const start = b * bandBits;
    const word = start < 32 ? f.hi : f.lo;
    if (bandBits === 32) return word >>> 0;
    const shift = 32 - (start % 32) - bandBits;
    return (word >>> shift) & ((1 << bandBits) - 1);
  };
  const bucketKey = (b: number, v: number): number => b * 4294967296 + v;

  const tmp = new Float32Array(THUMB_SIDE * CMP_SIDE * 3);
  const win = new Float32Array(CMP_VALUES);
  /** distance between `small` and the window (ox, oy, sx, sy) of `big` */
  const windowDistance = (big: Features, small: Features, ox: number, oy: number, sx: number, sy: number, stop: number): number => {
    windowed(big.thumb!, weights(ox, sx), weights(oy, sy), tmp, win);
    return mad(win, small.small!, stop);
  };

  /**
   * Is `small` (a whole image) a crop of `big` (another whole image)? Coarse-to-fine search over crop
   * windows (sx, sy: the crop's share of big's sides; ox, oy: its offset), consistent with the aspect
   * ratios: first a grid of step 2 * ALIGN_STEP, then, when the best coarse window is within COARSE_FACTOR x
   * the threshold, a hill-climb from it over the windows one ALIGN_STEP away in any parameter.
   */
  const alignedAsCrop = (big: Features, small: Features): boolean => {
    const r = small.aspect / big.aspect; // = sx / sy for a crop (sx, sy) of big
    const fits = (sx: number, sy: number) =>
      sx <= 1 && sy <= 1 && sx >= 1 - maxCrop - 1e-9 && sy >= 1 - maxCrop - 1e-9 && Math.abs(sx / sy / r - 1) <= ASPECT_SLACK;
    const coarse = 2 * ALIGN_STEP;
    let best = Infinity;
    let at = [0, 0, 1, 1];
    for (let kx = 0; kx * coarse <= maxCrop + 1e-9; kx++) {
      for (let ky = 0; ky * coarse <= maxCrop + 1e-9; ky++) {
        const sx = 1 - kx * coarse;
        const sy = 1 - ky * coarse;
        if (!fits(sx, sy)) continue;
        for (let ix = 0; ix <= kx; ix++) {
          for (let iy = 0; iy <= ky; iy++) {
            const d = windowDistance(big, small, ix * coarse, iy * coarse, sx, sy, Math.min(best, COARSE_FACTOR * maxThumb));
            if (d < best) {
              best = d;
              at = [ix * coarse, iy * coarse, sx, sy];
              if (d <= maxThumb) return true;
            }
          }
        }
      }
    }
    if (best > COARSE_FACTOR * maxThumb) return false;
    // hill-climb from the best coarse window over neighbours one step away in any of the 4 parameters,
    // first at ALIGN_STEP, then at half of it
    for (const step of [ALIGN_STEP, ALIGN_STEP / 2]) {
      for (let moves = 0; moves < 8; moves++) {
        const [ox0, oy0, sx0, sy0] = at;
        let moved = false;
        for (const dsx of [0, -step, step]) {
          for (const dsy of [0, -step, step]) {
            const sx = sx0 + dsx;
            const sy = sy0 + dsy;
            if (!fits(sx, sy)) continue;
            for (const dox of [0, -step, step]) {
              for (const doy of [0, -step, step]) {
                if (dsx === 0 && dsy === 0 && dox === 0 && doy === 0) continue;
                const ox = Math.max(0, ox0 + dox);
                const oy = Math.max(0, oy0 + doy);
                if (ox + sx > 1 + 1e-9 || oy + sy > 1 + 1e-9) continue;
                const d = windowDistance(big, small, ox, oy, sx, sy, best);
                if (d < best) {
                  best = d;
                  at = [ox, oy, sx, sy];
                  moved = true;
                  if (d <= maxThumb) return true;
                }
              }
            }
          }
        }
        if (!moved) break;
      }
    }
    return false;
  };

  const thumbsAgree = (s: Features, e: Features): boolean => {
    const d0 = mad(s.small!, e.small!, UNALIGNED_GATE);
    if (d0 <= maxThumb) return true;
    if (maxCrop === 0 || d0 > UNALIGNED_GATE || Math.abs(s.logAspect - e.logAspect) > aspectGate) return false;
    return alignedAsCrop(e, s) || alignedAsCrop(s, e);
  };

  class Memory {
    readonly entries = new Map<number, Entry>();
    readonly buckets = new Map<number, number[]>();
    nextSeq = 0;

    private index(e: Entry): void {
      if (!e.hasHash) return;
      for (let b = 0; b < bands; b++) {
        if (!(e.mask & (1 << b))) continue;
        const key = bucketKey(b, bandValue(e, b));
        let list = this.buckets.get(key);
        if (!list) this.buckets.set(key, (list = []));
        list.push(e.seq);
      }
    }

    private unindex(e: Entry): void {
      for (let b = 0; b < bands; b++) {
        if (!(e.mask & (1 << b))) continue;
        const key = bucketKey(b, bandValue(e, b));
        const list = this.buckets.get(key);
        if (!list) continue;
        const i = list.indexOf(e.seq);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0) this.buckets.delete(key);
      }
    }

    private forget(e: Entry): void {
      this.unindex(e);
      this.entries.delete(e.seq);
    }

    add(e: Entry): void {
      this.entries.set(e.seq, e);
      this.index(e);
      // trim full buckets: their oldest entry leaves that bucket (and memory, if nothing else can reach it)
      if (e.hasHash) {
        for (let b = 0; b < bands; b++) {
          const list = this.buckets.get(bucketKey(b, bandValue(e, b)))!;
          if (list.length <= perBucket) continue;
          const old = this.entries.get(list.shift()!)!;
          old.mask &= ~(1 << b);
          if (old.mask === 0 && !old.thumb) this.forget(old);
        }
      }
      while (this.entries.size > limit) this.forget(this.entries.values().next().value as Entry);
    }

    touch(e: Entry): void {
      if (!lru) return;
      this.entries.delete(e.seq);
      this.entries.set(e.seq, e);
    }

    /** entries that may be near duplicates of `f`, oldest first */
    candidates(f: Features): Entry[] {
      const found = new Map<number, Entry>();
      if (f.hasHash) {
        for (let b = 0; b < bands; b++) {
          const v = bandValue(f, b);
          for (const flip of flips) {
            const list = this.buckets.get(bucketKey(b, (v ^ flip) >>> 0));
            if (!list) continue;
            for (const seq of list) {
              if (found.has(seq)) continue;
              const e = this.entries.get(seq)!;
              if (hamming(e, f) <= maxBits) found.set(seq, e);
            }
          }
        }
      }
      if (f.small && f.quad) {
        for (const e of this.entries.values()) {
          if (!e.small || !e.quad || found.has(e.seq)) continue;
          if (Math.abs(e.logAspect - f.logAspect) > aspectGate) continue;
          // the 2x2 distance is a lower bound of the 8x8 one (an average of differences >= the difference of averages)
          if (mad(e.quad, f.quad, UNALIGNED_GATE) > UNALIGNED_GATE) continue;
          if (mad(e.small, f.small, UNALIGNED_GATE) <= UNALIGNED_GATE) found.set(e.seq, e);
        }
      }
      return [...found.values()].sort((a, b) => a.seq - b.seq);
    }

    snapshot(): NearSnapshot {
      const list = [...this.entries.values()];
      const n = list.length;
      const seqs = new Float64Array(n);
      const dims = new Uint32Array(2 * n);
      const masks = new Uint16Array(n);
      const flags = new Uint8Array(n);
      const thumbs: Uint8Array[] = [];
      const embDims = new Uint32Array(n);
      const embScales = new Float32Array(n);
      const embs: Int8Array[] = [];
      let hashes = '';
      list.forEach((e, i) => {
        seqs[i] = e.seq;
        dims[2 * i] = e.w;
        dims[2 * i + 1] = e.h;
        masks[i] = e.mask;
        flags[i] = (e.hasHash ? 1 : 0) | (e.thumb ? 2 : 0) | (e.emb ? 4 : 0);
        hashes += e.hi.toString(16).padStart(8, '0') + e.lo.toString(16).padStart(8, '0');
        if (e.thumb) thumbs.push(e.thumb);
        if (e.emb) {
          embDims[i] = e.emb.length;
          embScales[i] = e.embScale;
          embs.push(e.emb);
        }
      });
      const snap: NearSnapshot = {
        v: 1,
        next: this.nextSeq,
        seq: b64(seqs),
        hash: hashes,
        dims: b64(dims),
        mask: b64(masks),
        flags: b64(flags),
        thumbs: thumbs.length ? deflateRawSync(Buffer.concat(thumbs)).toString('base64') : '',
      };
      if (embs.length) snap.emb = { dims: b64(embDims), scale: b64(embScales), q: b64(concatInt8(embs)) };
      return snap;
    }

    static restore(s: NearSnapshot): Memory {
      const m = new Memory();
      m.nextSeq = s.next;
      const seqs = new Float64Array(unb64(s.seq, 8));
      const dims = new Uint32Array(unb64(s.dims, 4));
      const masks = new Uint16Array(unb64(s.mask, 2));
      const flags = new Uint8Array(unb64(s.flags, 1));
      const thumbs = s.thumbs ? new Uint8Array(inflateRawSync(Buffer.from(s.thumbs, 'base64'))) : new Uint8Array(0);
      const embDims = s.emb ? new Uint32Array(unb64(s.emb.dims, 4)) : null;
      const embScales = s.emb ? new Float32Array(unb64(s.emb.scale, 4)) : null;
      const embQ = s.emb ? new Int8Array(unb64(s.emb.q, 1)) : null;
      let tAt = 0;
      let qAt = 0;
      const entries: Entry[] = [];
      for (let i = 0; i < seqs.length; i++) {
        const thumb = flags[i] & 2 ? thumbs.slice(tAt, (tAt += THUMB_BYTES)) : null;
        const hash = flags[i] & 1 ? s.hash.slice(16 * i, 16 * i + 16) : undefined;
        const e = newEntry(features(hash, dims[2 * i], dims[2 * i + 1], thumb), seqs[i], dims[2 * i], dims[2 * i + 1], masks[i]);
        if (flags[i] & 4 && embDims && embScales && embQ) {
          e.emb = embQ.slice(qAt, (qAt += embDims[i]));
          e.embScale = embScales[i];
          let n = 0;
          for (let k = 0; k < e.emb.length; k++) n += e.emb[k] * e.emb[k];
          e.embNorm = Math.sqrt(n);
        }
        entries.push(e);
      }
      // LRU order as saved; buckets rebuilt in insertion order
      for (const e of entries) m.entries.set(e.seq, e);
      for (const e of [...entries].sort((a, b) => a.seq - b.seq)) m.index(e);
      return m;
    }
  }

  const forPartition = partitionState(options.state, 'dedup_near', {
    empty: () => new Memory(),
    schema: NearSnapshotSchema,
    fromJson: (json) => Memory.restore(json),
    toJson: (m) => m.snapshot(),
  });

  return stage('dedup_near', async (batch) => {
    const mem = forPartition(partitionKey(batch.topic, batch.partition));
    const todo = batch.samples.filter((s) => s.outcome.kind === 'keep' && s.image);
    const thumbs = new Map<Sample, Uint8Array | null>();
    if (thumbSource) {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < todo.length) {
          const s = todo[next++];
          let t: Uint8Array | null = null;
          try {
            t = await thumbSource(s);
          } catch {
            t = null;
          }
          thumbs.set(s, t && t.length === THUMB_BYTES ? t : null);
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, todo.length) }, worker));
    }
    for (const s of todo) {
      const img = s.image!;
      const f = features(img.dhash, img.width, img.height, thumbs.get(s) ?? null);
      const emb = useEmbeddings ? (s.model?.imageEmbedding ?? null) : null;
      let match: Entry | null = null;
      for (const e of mem.candidates(f)) {
        const same =
          emb && e.emb && e.emb.length === emb.length
            ? cosine(emb, e) > 1 - eps
            : f.small && e.small
              ? thumbsAgree(f, e)
              : f.hasHash && e.hasHash && hamming(f, e) <= maxBits;
        if (same) {
          match = e;
          break;
        }
      }
      if (match) {
        filterOut(s, 'duplicate_near');
        mem.touch(match);
        continue;
      }
      const entry = newEntry(f, mem.nextSeq++, img.width, img.height, (1 << bands) - 1);
      if (emb) {
        const q = quantise(emb);
        entry.emb = q.q;
        entry.embScale = q.scale;
        entry.embNorm = q.norm;
      }
      mem.add(entry);
    }
    return batch;
  });
}

/** The `dedup_near` state of one partition: binary columns in base64, one row per remembered entry. */
const NearSnapshotSchema = z.object({
  v: z.literal(1),
  next: z.number(),
  /** Float64 insertion numbers, in eviction order (first = next to go) */
  seq: z.string(),
  /** 16 hex characters per entry */
  hash: z.string(),
  /** Uint32 width, height per entry */
  dims: z.string(),
  /** Uint16 bands still indexed */
  mask: z.string(),
  /** Uint8: 1 hash, 2 thumbnail, 4 embedding */
  flags: z.string(),
  /** deflated concatenation of the 768-byte thumbnails of entries with flag 2 */
  thumbs: z.string(),
  /** Uint32 dimension and Float32 scale per entry, int8 values of entries with flag 4 */
  emb: z.object({ dims: z.string(), scale: z.string(), q: z.string() }).optional(),
});
export type NearSnapshot = z.infer<typeof NearSnapshotSchema>;

function b64(a: ArrayBufferView): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function unb64(s: string, unit: number): ArrayBuffer {
  const buf = Buffer.from(s, 'base64');
  if (buf.length % unit !== 0) throw new Error('dedup_near: corrupt state snapshot');
  const out = new ArrayBuffer(buf.length);
  new Uint8Array(out).set(buf);
  return out;
}

function concatInt8(parts: Int8Array[]): Int8Array {
  const out = new Int8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
