import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { firstValueFrom, of } from 'rxjs';
import sharp from 'sharp';
import { preprocessBatch, preprocessImage, preprocessKey } from '../../src/models/preprocess';
import type { ImagePreprocess, ModelBundle, PreparedImage } from '../../src/models/types';
import { YoloxDetector } from '../../src/models/yolox';
import { decodeImage, sniffFormat } from '../../src/operators/decode-image';
import { type ModelNeeds, newSample, type Sample } from '../../src/operators/sample';
import { batchOf, event } from '../helpers/samples';

const opts = { maxImageBytes: 2_000_000, maxPixels: 4_000_000, minSide: 32, maxAspect: 8, imageFormat: 'keep' as 'keep' | 'jpeg' | 'webp', quality: 90 };

async function decode(image: Buffer | null, o = opts): Promise<Sample> {
  const s = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('x'));
  s.event = event('a', { image });
  const out = await firstValueFrom(of(batchOf([s])).pipe(decodeImage(o)));
  return out.samples[0];
}

const img = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: '#3366cc' } });
const reason = (s: Sample) => (s.outcome.kind === 'dead' ? s.outcome.reason : s.outcome.kind);

function crc32(buf: Buffer): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

/** A PNG that claims width x height: a decompression bomb's header with a tiny body. */
function pngHeader(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type), data])));
    return Buffer.concat([len, Buffer.from(type), data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(10))), chunk('IEND', Buffer.alloc(0))]);
}

test('decodes a JPEG once: size, format, pixel hash, stored bytes kept as-is', async () => {
  const jpeg = await img(120, 80).jpeg().toBuffer();
  const s = await decode(jpeg);
  assert.equal(s.outcome.kind, 'keep');
  assert.equal(s.image!.width, 120);
  assert.equal(s.image!.height, 80);
  assert.equal(s.image!.mime, 'image/jpeg');
  assert.ok(s.image!.bytes.equals(jpeg));
  assert.match(s.image!.contentHash, /^[0-9a-f]{64}$/);
});

test('PNG is re-encoded as JPEG; the same pixels hash the same whatever the container', async () => {
  const png = await img(64, 64).png().toBuffer();
  const tiff = await img(64, 64).tiff({ compression: 'lzw' }).toBuffer();
  const a = await decode(png);
  const b = await decode(tiff);
  assert.equal(a.image!.mime, 'image/jpeg');
  assert.equal(a.image!.contentHash, b.image!.contentHash);
  const c = await decode(await img(64, 64).png().toBuffer(), { ...opts, imageFormat: 'webp' });
  assert.equal(c.image!.mime, 'image/webp');
});

test('bad images end as dead letters with stable reasons', async () => {
  const jpeg = await img(100, 100).jpeg().toBuffer();
  const cases: [string, Buffer, string][] = [
    ['truncated JPEG', jpeg.subarray(0, Math.floor(jpeg.length / 2)), 'decode_error'],
    ['random bytes with a JPEG magic', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(500, 7)]), 'decode_error'],
    ['plain garbage', Buffer.from('hello, not an image at all'), 'decode_error'],
    ['SVG', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><rect width="100" height="100"/></svg>'), 'unsupported_format'],
    ['decompression bomb header', pngHeader(50_000, 50_000), 'image_too_large'],
    ['tiny', await img(8, 8).png().toBuffer(), 'image_too_small'],
    ['extreme aspect', await img(900, 40).png().toBuffer(), 'bad_aspect_ratio'],
    ['empty', Buffer.alloc(0), 'missing_image'],
  ];
  for (const [name, bytes, want] of cases) {
    const s = await decode(bytes);
    assert.equal(reason(s), want, name);
    if (s.outcome.kind === 'dead') assert.ok(s.outcome.message.length > 0, `${name} has a message`);
  }
});

test('bytes over the limit are rejected before decoding', async () => {
  const png = await img(200, 200).png().toBuffer();
  const s = await decode(png, { ...opts, maxImageBytes: 100 });
  assert.equal(reason(s), 'image_too_large');
});

test('sniffFormat recognises the accepted formats and SVG', async () => {
  assert.equal(sniffFormat(await img(40, 40).jpeg().toBuffer()), 'jpeg');
  assert.equal(sniffFormat(await img(40, 40).png().toBuffer()), 'png');
  assert.equal(sniffFormat(await img(40, 40).webp().toBuffer()), 'webp');
  assert.equal(sniffFormat(await img(40, 40).gif().toBuffer()), 'gif');
  assert.equal(sniffFormat(Buffer.from('  <?xml version="1.0"?><svg/>')), 'svg');
  assert.equal(sniffFormat(Buffer.from('nothing')), null);
});

test('dHash: a re-encoded, resized or slightly cropped copy stays within a few bits; another image does not', async () => {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="200" height="150">
    <rect width="200" height="150" fill="#dde"/><circle cx="50" cy="60" r="35" fill="#c22"/>
    <rect x="110" y="30" width="60" height="90" fill="#238"/><polygon points="20,140 90,100 150,145" fill="#3a3"/></svg>`;
  const base = sharp(Buffer.from(svg));
  const original = await base.clone().jpeg({ quality: 92 }).toBuffer();
  const variants = [
    await sharp(original).jpeg({ quality: 60 }).toBuffer(),
    await sharp(original).resize(140, 105).png().toBuffer(),
    await sharp(original).extract({ left: 6, top: 4, width: 188, height: 142 }).jpeg().toBuffer(),
  ];
  const other = await sharp(Buffer.from(svg.replace('cx="50" cy="60"', 'cx="160" cy="110"').replace('x="110" y="30"', 'x="10" y="10"'))).jpeg().toBuffer();
  const hash = async (b: Buffer) => (await decode(b)).image!.dhash;
  const bitsApart = (a: string, b: string) => {
    let v = BigInt(`0x${a}`) ^ BigInt(`0x${b}`);
    let n = 0;
    while (v) {
      n += Number(v & 1n);
      v >>= 1n;
    }
    return n;
  };
  const h0 = await hash(original);
  for (const v of variants) {
    const d = bitsApart(h0, await hash(v));
    assert.ok(d <= 10, `near copy within 10 bits, got ${d}`);
  }
  const far = bitsApart(h0, await hash(other));
  assert.ok(far > 12, `a different picture is farther than any near copy, got ${far}`);
});

/** Smooth photo-like content with edges, so a different resampling path would show. */
async function photoLike(w: number, h: number): Promise<Buffer> {
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    const x = i % w;
    const y = Math.floor(i / w);
    px[i * 3] = Math.round(128 + 100 * Math.sin(x / 13) * Math.cos(y / 9));
    px[i * 3 + 1] = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 3) ** 2 ? 230 : 40;
    px[i * 3 + 2] = Math.round((255 * x) / w);
  }
  return sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
}

const COCO_PHOTO = join(__dirname, '../../../../shared/data/coco/images/val2017/000000397133.jpg');

/** The images each per-mode test runs on: generated ones of both orientations, and a real photo when shared/ has one. */
async function modeImages(): Promise<{ name: string; bytes: Buffer }[]> {
  const out = [
    { name: 'generated 300x200', bytes: await photoLike(300, 200) },
    { name: 'generated 180x420', bytes: await photoLike(180, 420) },
  ];
  if (existsSync(COCO_PHOTO)) out.push({ name: 'COCO 000000397133', bytes: readFileSync(COCO_PHOTO) });
  else console.log('skipped the real photo: ../shared/data/coco absent');
  return out;
}

/** Largest difference, in levels of 255, between two tensors preprocessed with `p`. */
function maxLevels(a: Float32Array, b: Float32Array, p: ImagePreprocess): number {
  assert.equal(a.length, b.length);
  const plane = a.length / 3;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const c = Math.floor(i / plane);
    const levels = Math.abs(a[i] - b[i]) * p.std[c] * (p.scale === 1 ? 255 : 1);
    worst = Math.max(worst, levels);
  }
  return worst;
}

/**
 * decodeImage with `needs` prepared, then each model input turned into the model's tensor, against the
 * model's own preprocessing of the original bytes: the same within one level of 255, for every image.
 */
async function checkPrepared(needs: ModelNeeds): Promise<void> {
  for (const { name, bytes } of await modeImages()) {
    const s = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('x'));
    s.event = event('a', { image: bytes });
    const out = await firstValueFrom(of(batchOf([s])).pipe(decodeImage({ ...opts, maxImageBytes: 20 << 20, prepare: () => needs })));
    const image = out.samples[0].image!;
    assert.ok(image.inputs, `${name}: the model inputs are on the sample`);
    assert.ok(image.bytes.equals(bytes), 'a JPEG is stored as it came');
    assert.equal(image.thumb?.length, 16 * 16 * 3);
    const pairs: [ImagePreprocess, PreparedImage | null][] = [[needs.vision, image.inputs.vision]];
    if (needs.detector) pairs.push([needs.detector, image.inputs.detector]);
    for (const [p, prepared] of pairs) {
      assert.ok(prepared, `${name}: ${p.resize} input prepared`);
      const direct = await preprocessImage(bytes, p);
      const via = preprocessBatch([prepared], p);
      const worst = maxLevels(via.tensor, direct.tensor, p);
      assert.ok(worst <= 1, `${name}, ${p.resize} ${p.size.join('x')}: the input differs from a direct preprocessing by ${worst.toFixed(2)} levels`);
      assert.deepEqual(via.metas[0], direct.meta);
    }
  }
}

const CLIP_224: ImagePreprocess = { size: [224, 224], resize: 'shortest-crop', mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711], channels: 'RGB', scale: 1 };
const SQUASH_224: ImagePreprocess = { size: [224, 224], resize: 'squash', mean: [104, 117, 123], std: [1, 1, 1], channels: 'BGR', scale: 255 };

test('squash: the model input decodeImage prepares equals the model\'s own preprocessing of the bytes', async () => {
  await checkPrepared({ vision: SQUASH_224, detector: null });
});

test('shortest-crop, no detector (the layout of a real CLIP export): the input equals a direct preprocessing', async () => {
  await checkPrepared({ vision: CLIP_224, detector: null });
});

test('letterbox: the input equals a direct preprocessing', async () => {
  await checkPrepared({ vision: YoloxDetector.preprocess([416, 416]), detector: null });
});

test('two models (the photo bundle: squash encoder, letterbox detector): each input equals its own direct preprocessing', async () => {
  await checkPrepared({ vision: SQUASH_224, detector: YoloxDetector.preprocess([416, 416]) });
});

test('model stages prepare again from the stored bytes when the inputs were made for another preprocessing', async () => {
  const { withInputs } = await import('../../src/operators/model-calls');
  const bytes = await photoLike(300, 200);
  const s = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('x'));
  s.event = event('a', { image: bytes });
  const out = await firstValueFrom(of(batchOf([s])).pipe(decodeImage({ ...opts, prepare: () => ({ vision: SQUASH_224, detector: null }) })));
  const decoded = out.samples[0] as Sample & { image: NonNullable<Sample['image']> };
  const swapped = { vision: { preprocess: CLIP_224 }, detector: null } as unknown as ModelBundle;
  const [ready] = await withInputs([decoded], swapped);
  assert.equal(ready.image.inputs.vision.key, preprocessKey(CLIP_224));
  const direct = await preprocessImage(bytes, CLIP_224);
  assert.ok(maxLevels(preprocessBatch([ready.image.inputs.vision], CLIP_224).tensor, direct.tensor, CLIP_224) <= 1);
});

test('what the sink does not read is released: rows keep bytes and fields, filtered samples only their offset', async () => {
  const { releaseForSink } = await import('../../src/operators/sample');
  const jpeg = await img(80, 60).jpeg().toBuffer();
  const kept = await decode(jpeg);
  const filtered = await decode(jpeg);
  filtered.outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  const dead = await decode(Buffer.from('garbage'));
  for (const s of [kept, filtered, dead]) releaseForSink(s);
  assert.ok(kept.image && kept.image.bytes.equals(jpeg) && kept.image.thumb === undefined && kept.raw === null && kept.event?.image === null);
  assert.equal(filtered.image, null);
  assert.equal(filtered.raw, null);
  assert.equal(dead.outcome.kind, 'dead');
  assert.ok(dead.raw && dead.raw.length > 0, 'a dead letter keeps the original record');
});
