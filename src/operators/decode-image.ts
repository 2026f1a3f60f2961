/**
 * decodeImage: decodes each image once with sharp, enforces the image limits (docs/FORMATS.md, Limits) and
 * records what every later stage reuses, so no later stage decodes the image again:
 * format, size, a content hash, the dHash and the 16x16 colour thumbnail (near duplicates), the
 * bytes to store, and `inputs`: each model's input prepared by that model's own preprocessing of the
 * stored bytes (`prepare`, models/preprocess `prepareImage`), so the encoders and the detector see exactly
 * what a direct call on the stored image would give them.
 *
 * Each distinct model input is one decode straight to its resized size (sharp may shrink a JPEG on load,
 * but fastShrinkOnLoad is off, so the resize kernel does at least the last factor of two). The thumbnail
 * and the dHash come from the largest of them; without models, from one decode to a small working size.
 * Images re-encoded for storage (PNG, GIF, TIFF, HEIF, or --image-format) are decoded at full size first,
 * and the model inputs then come from the stored bytes, so the models score what the shard holds.
 * The content hash is sha256 of the decoded pixels for re-encoded images, else of the encoded bytes:
 * byte-identical copies are exact duplicates either way; a JPEG re-saved with other metadata is caught
 * by near-duplicate search (same dHash and thumbnail).
 *
 * @example
 * batches$.pipe(decodeImage({ maxImageBytes: 20 << 20, maxPixels: 40e6, minSide: 32, maxAspect: 8 }))
 */
import { createHash } from 'node:crypto';
import type { OperatorFunction } from 'rxjs';
import sharp from 'sharp';
import { prepareImage, preprocessKey, resizedSize } from '../models/preprocess';
import type { ImagePreprocess } from '../models/types';
import { THUMB_SIDE } from './dedup-near';
import { type Batch, forEachKept, deadLetter, type ModelInputs, type ModelNeeds, type Sample } from './sample';
import { stage } from './stage';

export interface DecodeImageOptions {
  maxImageBytes: number;
  maxPixels: number;
  minSide: number;
  maxAspect: number;
  /** 'keep' stores JPEG and WebP as they came and re-encodes the rest as JPEG */
  imageFormat: 'keep' | 'jpeg' | 'webp';
  quality: number;
  concurrency?: number;
  /** the model inputs to prepare for a batch (the bundle's preprocessing); none by default */
  prepare?: (batch: Batch) => ModelNeeds | null;
}

/** without models, the working decode keeps this many times the thumbnail's pixels per side */
export const OVERSAMPLE = 2;

/** The formats accepted (docs/FORMATS.md, Limits), as sharp names them: heif covers AVIF. */
const ACCEPTED = new Set(['jpeg', 'png', 'webp', 'gif', 'heif', 'tiff']);

export function sniffFormat(bytes: Buffer): string | null {
  const head = bytes.subarray(0, 64);
  const ascii = head.toString('latin1').trimStart().toLowerCase();
  if (head[0] === 0xff && head[1] === 0xd8) return 'jpeg';
  if (head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'png';
  if (ascii.startsWith('gif8')) return 'gif';
  if (head.subarray(0, 4).toString('latin1') === 'RIFF' && head.subarray(8, 12).toString('latin1') === 'WEBP') return 'webp';
  if (head.subarray(4, 8).toString('latin1') === 'ftyp') return 'heif';
  if (ascii.startsWith('ii*\u0000') || ascii.startsWith('mm\u0000*')) return 'tiff';
  if (ascii.startsWith('<svg') || ascii.startsWith('<?xml') || ascii.startsWith('<!doctype svg')) return 'svg';
  if (head.subarray(0, 2).toString('latin1') === 'BM') return 'bmp';
  return null;
}

export function decodeImage(options: DecodeImageOptions): OperatorFunction<Batch, Batch> {
  return stage('decode_image', (batch) => {
    const needs = options.prepare?.(batch) ?? null;
    return forEachKept(batch, options.concurrency ?? 4, 'decode_error', (s) => decodeOne(s, options, needs));
  });
}

async function decodeOne(s: Sample, o: DecodeImageOptions, needs: ModelNeeds | null): Promise<void> {
  const bytes = s.event?.image;
  if (!bytes || bytes.length === 0) return deadLetter(s, 'missing_image', 'no image bytes to decode');
  if (bytes.length > o.maxImageBytes) {
    return deadLetter(s, 'image_too_large', `image is ${bytes.length} bytes, limit ${o.maxImageBytes}`);
  }
  const sniffed = sniffFormat(bytes);
  if (sniffed && !ACCEPTED.has(sniffed)) return deadLetter(s, 'unsupported_format', `${sniffed} images are not accepted`);
  const input = { limitInputPixels: o.maxPixels, failOn: 'error' as const };
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, input).metadata();
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) return deadLetter(s, 'image_too_large', `image dimensions exceed the limit of ${o.maxPixels} pixels`);
    return deadLetter(s, 'decode_error', `cannot read image header: ${msg}`);
  }
  if (!meta.format || !ACCEPTED.has(meta.format)) {
    return deadLetter(s, 'unsupported_format', `${meta.format ?? 'unknown'} images are not accepted`);
  }
  const width = meta.autoOrient?.width ?? meta.width ?? 0;
  const height = meta.autoOrient?.height ?? meta.height ?? 0;
  if (width * height > o.maxPixels) {
    return deadLetter(s, 'image_too_large', `${width}x${height} pixels exceeds the limit of ${o.maxPixels}`);
  }
  if (Math.min(width, height) < o.minSide) {
    return deadLetter(s, 'image_too_small', `${width}x${height} is below the smallest side of ${o.minSide}`);
  }
  if (Math.max(width, height) / Math.min(width, height) > o.maxAspect) {
    return deadLetter(s, 'bad_aspect_ratio', `${width}x${height} is more extreme than ${o.maxAspect}:1`);
  }
  const keepBytes = o.imageFormat === 'keep' && (meta.format === 'jpeg' || meta.format === 'webp');
  const strict = { limitInputPixels: o.maxPixels };
  let stored: { bytes: Buffer; mime: string };
  let contentHash: string;
  if (keepBytes) {
    stored = { bytes, mime: `image/${meta.format}` };
    contentHash = createHash('sha256').update(bytes).digest('hex');
  } else {
    // re-encoded for storage: decoded at full size once; the model stages then see the stored bytes
    try {
      const pixels = await sharp(bytes, input).rotate().flatten({ background: '#ffffff' }).toColourspace('srgb').removeAlpha().raw({ depth: 'uchar' }).toBuffer();
      contentHash = createHash('sha256').update(`${width}x${height}:`).update(pixels).digest('hex');
      stored = await encodeStored(pixels, width, height, o);
    } catch (e) {
      return deadLetter(s, 'decode_error', `cannot decode image: ${(e as Error).message}`);
    }
  }
  // each model input is that model's own preprocessing of the stored bytes (models/preprocess), one
  // decode per distinct need; the thumbnail and the dHash come from the largest of them (before any crop
  // or padding it shows the whole image), or from a small working size without models
  let inputs: ModelInputs | null = null;
  let view: { data: Buffer; width: number; height: number };
  try {
    if (needs) {
      const prep = (p: ImagePreprocess) => prepareImage(stored.bytes, p, { size: { width, height }, strict });
      const shared = needs.detector !== null && preprocessKey(needs.detector) === preprocessKey(needs.vision);
      const [vision, detector] = await Promise.all([prep(needs.vision), needs.detector && !shared ? prep(needs.detector) : null]);
      inputs = { vision, detector: shared ? vision : detector };
      const sizes = [{ img: vision, ...resizedSize(width, height, needs.vision) }];
      if (detector && needs.detector) sizes.push({ img: detector, ...resizedSize(width, height, needs.detector) });
      const big = sizes.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
      view = { data: big.img.data, width: big.width, height: big.height };
    } else {
      const w = workingSize(width, height);
      const { data, info } = await sharp(stored.bytes, input)
        .rotate()
        .flatten({ background: '#ffffff' })
        .toColourspace('srgb')
        .resize(w.width, w.height, { fit: 'fill', kernel: 'cubic' })
        .removeAlpha()
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
      view = { data, width: info.width, height: info.height };
    }
  } catch (e) {
    return deadLetter(s, 'decode_error', `cannot decode image: ${(e as Error).message}`);
  }
  // the thumbnail in JS: a sharp call on a few kilobytes of pixels costs about 1.4 ms of fixed overhead,
  // the box average 0.05 ms
  const thumb = boxResize(view.data, view.width, view.height, THUMB_SIDE, THUMB_SIDE);
  s.image = { format: meta.format, width, height, contentHash, dhash: dhash(view.data, view.width, view.height), thumb, ...stored, inputs };
}

/**
 * Area-average resize of RGB pixels to `w` x `h` (aspect ignored): each output pixel is the mean of the
 * source area it covers, partial pixels weighted by their share.
 */
export function boxResize(rgb: Uint8Array, width: number, height: number, w: number, h: number): Uint8Array {
  const weights = (n: number, m: number): { from: Int32Array; to: Int32Array; wt: Float64Array[] } => {
    const from = new Int32Array(m);
    const to = new Int32Array(m);
    const wt: Float64Array[] = [];
    const step = n / m;
    for (let o = 0; o < m; o++) {
      const a = o * step;
      const b = (o + 1) * step;
      from[o] = Math.floor(a);
      to[o] = Math.min(n, Math.ceil(b));
      const ws = new Float64Array(to[o] - from[o]);
      for (let i = from[o]; i < to[o]; i++) ws[i - from[o]] = (Math.min(b, i + 1) - Math.max(a, i)) / step;
      wt.push(ws);
    }
    return { from, to, wt };
  };
  const X = weights(width, w);
  const Y = weights(height, h);
  // rows first: height x w x 3
  const mid = new Float64Array(height * w * 3);
  for (let y = 0; y < height; y++) {
    for (let o = 0; o < w; o++) {
      let r = 0;
      let g = 0;
      let b = 0;
      const ws = X.wt[o];
      for (let i = X.from[o], k = 0; i < X.to[o]; i++, k++) {
        const p = (y * width + i) * 3;
        r += rgb[p] * ws[k];
        g += rgb[p + 1] * ws[k];
        b += rgb[p + 2] * ws[k];
      }
      const q = (y * w + o) * 3;
      mid[q] = r;
      mid[q + 1] = g;
      mid[q + 2] = b;
    }
  }
  const out = new Uint8Array(w * h * 3);
  for (let o = 0; o < h; o++) {
    const ws = Y.wt[o];
    for (let x = 0; x < w * 3; x++) {
      let v = 0;
      for (let i = Y.from[o], k = 0; i < Y.to[o]; i++, k++) v += mid[i * w * 3 + x] * ws[k];
      out[o * w * 3 + x] = Math.min(255, Math.round(v));
    }
  }
  return out;
}

/** Without a model input to decode to: OVERSAMPLE x the thumbnail on the short side, never larger than the image. */
export function workingSize(width: number, height: number): { width: number; height: number } {
  const r = (THUMB_SIDE * OVERSAMPLE) / Math.min(width, height);
  if (r >= 1) return { width, height };
  return { width: Math.max(1, Math.ceil(width * r)), height: Math.max(1, Math.ceil(height * r)) };
}

async function encodeStored(pixels: Buffer, width: number, height: number, o: DecodeImageOptions): Promise<{ bytes: Buffer; mime: string }> {
  const img = sharp(pixels, { raw: { width, height, channels: 3 } });
  if (o.imageFormat === 'webp') return { bytes: await img.webp({ quality: o.quality }).toBuffer(), mime: 'image/webp' };
  return { bytes: await img.jpeg({ quality: o.quality }).toBuffer(), mime: 'image/jpeg' };
}

/**
 * dHash of RGB pixels: box-average to a 9x8 grey grid, one bit per horizontal neighbour comparison.
 * Computed from the pixels of the one decode (usually at reduced scale, so a few thousand pixels).
 */
export function dhash(rgb: Buffer, width: number, height: number): string {
  const cols = 9;
  const rows = 8;
  const grey = new Float64Array(cols * rows);
  const count = new Float64Array(cols * rows);
  const cellX = new Int32Array(width);
  for (let x = 0; x < width; x++) cellX[x] = Math.min(cols - 1, Math.floor((x * cols) / width));
  for (let y = 0; y < height; y++) {
    const base = Math.min(rows - 1, Math.floor((y * rows) / height)) * cols;
    let i = y * width * 3;
    for (let x = 0; x < width; x++, i += 3) {
      const c = base + cellX[x];
      grey[c] += 0.299 * rgb[i] + 0.587 * rgb[i + 1] + 0.114 * rgb[i + 2];
      count[c]++;
    }
  }
  let hi = 0;
  let lo = 0;
  let bit = 0;
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols - 1; x++, bit++) {
      const one = grey[y * cols + x] / count[y * cols + x] > grey[y * cols + x + 1] / count[y * cols + x + 1] ? 1 : 0;
      if (bit < 32) hi = ((hi << 1) | one) >>> 0;
      else lo = ((lo << 1) | one) >>> 0;
    }
  }
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}
