/**
 * decodeImage: decodes each image once with sharp, enforces the image limits of DESIGN 10 and
 * records what every later stage reuses: format, size, a hash of the decoded pixels and the bytes to store.
 *
 * @example
 * batches$.pipe(decodeImage({ maxImageBytes: 20 << 20, maxPixels: 40e6, minSide: 32, maxAspect: 8 }))
 */
import { createHash } from 'node:crypto';
import type { OperatorFunction } from 'rxjs';
import sharp from 'sharp';
import { type Batch, forEachKept, kill, type Sample } from './sample';
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
}

/** The formats DESIGN 2.1 accepts, as sharp names them. */
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
  return stage('decode_image', (batch) =>
    forEachKept(batch, options.concurrency ?? 4, 'decode_error', (s) => decodeOne(s, options)),
  );
}

async function decodeOne(s: Sample, o: DecodeImageOptions): Promise<void> {
  const bytes = s.event?.image;
  if (!bytes || bytes.length === 0) return kill(s, 'missing_image', 'no image bytes to decode');
  if (bytes.length > o.maxImageBytes) {
    return kill(s, 'image_too_large', `image is ${bytes.length} bytes, limit ${o.maxImageBytes}`);
  }
  const sniffed = sniffFormat(bytes);
  if (sniffed && !ACCEPTED.has(sniffed)) return kill(s, 'unsupported_format', `${sniffed} images are not accepted`);
  const input = { limitInputPixels: o.maxPixels, failOn: 'error' as const };
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, input).metadata();
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) return kill(s, 'image_too_large', `image dimensions exceed the limit of ${o.maxPixels} pixels`);
    return kill(s, 'decode_error', `cannot read image header: ${msg}`);
  }
  if (!meta.format || !ACCEPTED.has(meta.format)) {
    return kill(s, 'unsupported_format', `${meta.format ?? 'unknown'} images are not accepted`);
  }
  const width = meta.autoOrient?.width ?? meta.width ?? 0;
  const height = meta.autoOrient?.height ?? meta.height ?? 0;
  if (width * height > o.maxPixels) {
    return kill(s, 'image_too_large', `${width}x${height} pixels exceeds the limit of ${o.maxPixels}`);
  }
  if (Math.min(width, height) < o.minSide) {
    return kill(s, 'image_too_small', `${width}x${height} is below the smallest side of ${o.minSide}`);
  }
  if (Math.max(width, height) / Math.min(width, height) > o.maxAspect) {
    return kill(s, 'bad_aspect_ratio', `${width}x${height} is more extreme than ${o.maxAspect}:1`);
  }
  let pixels: Buffer;
  try {
    pixels = await sharp(bytes, input).rotate().removeAlpha().raw().toBuffer();
  } catch (e) {
    return kill(s, 'decode_error', `cannot decode image: ${(e as Error).message}`);
  }
  const pixelHash = createHash('sha256').update(`${width}x${height}:`).update(pixels).digest('hex');
  const stored = await storedBytes(bytes, meta.format, o);
  s.image = { format: meta.format, width, height, pixelHash, dhash: dhash(pixels, width, height), ...stored };
}

async function storedBytes(bytes: Buffer, format: string, o: DecodeImageOptions): Promise<{ bytes: Buffer; mime: string }> {
  if (o.imageFormat === 'keep' && (format === 'jpeg' || format === 'webp')) {
    return { bytes, mime: `image/${format}` };
  }
  const img = sharp(bytes, { limitInputPixels: o.maxPixels }).rotate().flatten({ background: '#ffffff' });
  if (o.imageFormat === 'webp') return { bytes: await img.webp({ quality: o.quality }).toBuffer(), mime: 'image/webp' };
  return { bytes: await img.jpeg({ quality: o.quality }).toBuffer(), mime: 'image/jpeg' };
}

/**
 * dHash of RGB pixels: box-average to a 9x8 grey grid, one bit per horizontal neighbour comparison.
 * Computed from the pixels already decoded, so near-duplicate search needs no second decode.
 */
export function dhash(rgb: Buffer, width: number, height: number): string {
  const cols = 9;
  const rows = 8;
  const grey = new Float64Array(cols * rows);
  const count = new Float64Array(cols * rows);
  for (let y = 0; y < height; y++) {
    const gy = Math.min(rows - 1, Math.floor((y * rows) / height));
    for (let x = 0; x < width; x++) {
      const gx = Math.min(cols - 1, Math.floor((x * cols) / width));
      const i = (y * width + x) * 3;
      grey[gy * cols + gx] += 0.299 * rgb[i] + 0.587 * rgb[i + 1] + 0.114 * rgb[i + 2];
      count[gy * cols + gx]++;
    }
  }
  let bits = 0n;
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols - 1; x++) {
      const a = grey[y * cols + x] / count[y * cols + x];
      const b = grey[y * cols + x + 1] / count[y * cols + x + 1];
      bits = (bits << 1n) | (a > b ? 1n : 0n);
    }
  }
  return bits.toString(16).padStart(16, '0');
}
