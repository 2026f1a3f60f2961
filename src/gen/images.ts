/**
 * Image bytes for the synthetic crawl: encoding rendered scenes, near-duplicate variants of earlier
 * images, and the broken inputs a curator must dead-letter.
 */
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { Rng } from './rng';
import type { Box, TruthObject } from './shapes';

export type ImageFormat = 'jpeg' | 'png' | 'webp';

export const FORMAT_EXT: Readonly<Record<ImageFormat, string>> = { jpeg: 'jpg', png: 'png', webp: 'webp' };

/** Encodes raw opaque pixels (3 or 4 channels; alpha is dropped). `quality` applies to JPEG and WebP. */
export function encodeRaw(
  raw: Buffer,
  width: number,
  height: number,
  format: ImageFormat,
  quality: number,
  channels: 3 | 4 = 4,
): Promise<Buffer> {
  const img = sharp(raw, { raw: { width, height, channels } });
  return encode(channels === 4 ? img.removeAlpha() : img, format, quality);
}

function encode(img: sharp.Sharp, format: ImageFormat, quality: number): Promise<Buffer> {
  switch (format) {
    case 'jpeg':
      return img.jpeg({ quality, optimiseCoding: false }).toBuffer();
    case 'webp':
      return img.webp({ quality, effort: 0 }).toBuffer();
    case 'png':
      return img.png({ compressionLevel: 6 }).toBuffer();
  }
}

export const NEAR_DUP_KINDS = ['reencode', 'resize', 'crop'] as const;
export type NearDupKind = (typeof NEAR_DUP_KINDS)[number];

export interface StoredImage {
  width: number;
  height: number;
  format: ImageFormat;
  quality: number;
  objects: TruthObject[];
}

/** Everything about a near duplicate that is decided up front (synchronously, so order never matters). */
export interface NearDupPlan extends StoredImage {
  kind: NearDupKind;
  crop: { left: number; top: number; width: number; height: number } | null;
}

/** Smallest side a resized copy may have, so a duplicate stays a valid image for the curator. */
const MIN_RESIZED_SIDE = 128;

export function planNearDuplicate(rng: Rng, kind: NearDupKind, orig: StoredImage): NearDupPlan {
  const { width, height } = orig;
  switch (kind) {
    case 'reencode': {
      // Another quality far enough from the original's that the bytes surely differ; PNG and WebP become JPEG.
      let quality = rng.int(55, 95);
      if (orig.format === 'jpeg' && Math.abs(quality - orig.quality) < 12) quality = orig.quality > 75 ? orig.quality - rng.int(12, 20) : orig.quality + rng.int(12, 20);
      return { ...orig, objects: orig.objects.map(copyObject), kind, format: 'jpeg', quality, crop: null };
    }
    case 'resize': {
      const lo = Math.min(0.9, Math.max(0.5, MIN_RESIZED_SIDE / Math.min(width, height)));
      const f = rng.float(lo, 0.9);
      const w = Math.max(1, Math.round(width * f));
      const h = Math.max(1, Math.round(height * f));
      const sx = w / width;
      const sy = h / height;
      const objects = orig.objects.map((o) => {
        const [x, y, bw, bh] = o.box;
        const x0 = Math.floor(x * sx);
        const y0 = Math.floor(y * sy);
        const box: Box = [x0, y0, Math.min(w, Math.ceil((x + bw) * sx)) - x0, Math.min(h, Math.ceil((y + bh) * sy)) - y0];
        return { kind: o.kind, colour: o.colour, box };
      });
      return { ...orig, kind, width: w, height: h, objects, crop: null };
    }
    case 'crop': {
      // Up to 10% off each dimension, at least 3%, split randomly between the two sides.
      const cw = width - Math.max(1, Math.round(width * rng.float(0.03, 0.1)));
      const ch = height - Math.max(1, Math.round(height * rng.float(0.03, 0.1)));
      const left = rng.int(0, width - cw);
      const top = rng.int(0, height - ch);
      const objects: TruthObject[] = [];
      for (const o of orig.objects) {
        const [x, y, bw, bh] = o.box;
        const x0 = Math.max(x, left);
        const y0 = Math.max(y, top);
        const x1 = Math.min(x + bw, left + cw);
        const y1 = Math.min(y + bh, top + ch);
        // An object cut down to under a quarter of its box no longer counts as shown.
        if (x1 <= x0 || y1 <= y0 || (x1 - x0) * (y1 - y0) < 0.25 * bw * bh) continue;
        objects.push({ kind: o.kind, colour: o.colour, box: [x0 - left, y0 - top, x1 - x0, y1 - y0] });
      }
      return { ...orig, kind, width: cw, height: ch, objects, crop: { left, top, width: cw, height: ch } };
    }
  }
}

function copyObject(o: TruthObject): TruthObject {
  return { kind: o.kind, colour: o.colour, box: [...o.box] as Box };
}

export function applyNearDuplicate(orig: Buffer, plan: NearDupPlan): Promise<Buffer> {
  let img = sharp(orig);
  if (plan.kind === 'resize') img = img.resize(plan.width, plan.height, { fit: 'fill' });
  if (plan.crop) img = img.extract(plan.crop);
  return encode(img, plan.format, plan.quality);
}

/** Looks like a JPEG for the first bytes, then noise. */
export function corruptJpeg(rng: Rng): Buffer {
  const header = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01]);
  const body = Buffer.alloc(rng.int(1024, 6144));
  for (let i = 0; i < body.length; i += 4) body.writeUInt32LE(rng.u32(), Math.min(i, body.length - 4));
  return Buffer.concat([header, body]);
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

export const BOMB_SIDE = 20000;
let bomb: Buffer | null = null;

/**
 * A valid 20000 x 20000 one-colour PNG (1-bit palette) of about 50 KB that decodes to 400 megapixels:
 * a decompression bomb. Built once on first use (it deflates 50 MB of zeros) and shared.
 */
export function bombPng(): Buffer {
  if (bomb) return bomb;
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(BOMB_SIDE, 0);
  ihdr.writeUInt32BE(BOMB_SIDE, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 3; // palette
  const rowBytes = 1 + Math.ceil(BOMB_SIDE / 8);
  const idat = deflateSync(Buffer.alloc(rowBytes * BOMB_SIDE), { level: 9 });
  bomb = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('PLTE', Buffer.from([230, 60, 60])),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
  return bomb;
}
