/**
 * `squeeze gen`: a synthetic web crawl with ground truth, deterministic by seed.
 *
 * Each event is an image-text pair as a crawler would emit it (a CrawlEvent), and its `attrs` carry the truth
 * under `truth_` keys (all strings, always present, '' where not applicable):
 * - `truth_objects`: JSON array of {kind, colour, box: [x, y, w, h]} in pixels of the stored image
 * - `truth_noise`: caption kind (NOISE_KINDS); `truth_noise_detail`: how a `partial` caption is wrong, or
 *   the language of a `foreign` one; `truth_caption_of`: whose caption a `mismatched` one is
 * - `truth_dup_of`: id of the original; `truth_dup_kind`: exact | reencode | resize | crop
 * - `truth_bad`: BAD_KINDS, for inputs a curator should reject or sanitise
 * - `truth_width`, `truth_height`, `truth_format`, `truth_background`
 *
 * @example
 * for await (const ev of generateCrawl({ n: 1000, seed: 7 })) console.log(ev.id, ev.attrs.truth_noise);
 */
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { CrawlEvent } from '../records';
import {
  boilerplateCaption,
  correctCaption,
  emptyCaption,
  filenameCaption,
  foreignCaption,
  htmlCaption,
  NOISE_MIX,
  partialCaption,
  type NoiseKind,
} from './captions';
import {
  applyNearDuplicate,
  bombPng,
  BOMB_SIDE,
  corruptJpeg,
  encodeRaw,
  FORMAT_EXT,
  planNearDuplicate,
  type ImageFormat,
  type StoredImage,
} from './images';
import { rasterize } from './raster';
import { hashSeed, Rng } from './rng';
import { OBJECT_KINDS, planScene, sceneToSvg, truthOf, type BackgroundKind, type TruthObject } from './shapes';

export { OBJECT_KINDS, COLOURS, BACKGROUND_KINDS, type TruthObject, type Box } from './shapes';
export { NOISE_KINDS, NOISE_MIX, PARTIAL_KINDS, LANGUAGES } from './captions';

export interface GenOptions {
  /** number of events */
  n: number;
  /** any safe integer; the same seed gives byte-identical events */
  seed: number;
  /** share of bad inputs (BAD_KINDS, taken in turn), default 0.04 */
  badRate?: number;
  /** share of duplicates of earlier originals (DUP_KINDS, taken in turn), default 0.09 */
  dupRate?: number;
  /** crawl_time of event 0 in epoch ms, default 2024-01-01T00:00:00Z; later events follow about 1 s apart */
  startTime?: number;
  /** images encoded at once; changes speed only, never the output. Default 6 */
  concurrency?: number;
}

export const DUP_KINDS = ['exact', 'reencode', 'resize', 'crop'] as const;
export type DupKind = (typeof DUP_KINDS)[number];

export const BAD_KINDS = [
  'corrupt', // JPEG header, then random bytes
  'truncated', // a real JPEG cut short
  'empty', // zero-length image, no image_url
  'missing', // image and image_url both null
  'oversized', // 20000 x 20000 PNG decompression bomb
  'tiny', // 8 x 8 image
  'aspect', // a thin strip, aspect ratio 60:1 or more
  'svg', // SVG image: unsupported format
  'private_url', // no image, image_url that must not be fetched (loopback, private, link-local, file:)
  'huge_caption', // 200 KiB caption
  'hostile_caption', // control characters, NUL, <script>, RTL overrides in the caption
  'long_id', // id longer than 256 characters
  'hostile_id', // id with NUL, newlines, RTL override, path traversal, markup, or empty
] as const;
export type BadKind = (typeof BAD_KINDS)[number];

export const DEFAULT_BAD_RATE = 0.04;
export const DEFAULT_DUP_RATE = 0.09;
export const DEFAULT_START_TIME = Date.UTC(2024, 0, 1);

/** Originals kept for later duplicates and mismatched captions: bounds memory to a few MB. */
const RING_SIZE = 256;
const HUGE_CAPTION_CHARS = 200 * 1024;

const SITES = [
  ['shop.example', 'shop'],
  ['blog.example', 'blog'],
  ['news.example', 'news'],
  ['forum.example', 'forum'],
  ['wiki.example', 'wiki'],
  ['photos.example', 'gallery'],
] as const;

interface CaptionPlan {
  caption: string;
  noise: NoiseKind;
  detail: string;
  captionOf: string;
  lang: string;
}

interface Original {
  id: string;
  imageUrl: string;
  bytes: Promise<Buffer>;
  stored: StoredImage;
  background: BackgroundKind;
  kinds: Set<string>;
  /** a correct caption of this image, lent to later `mismatched` samples */
  correct: string;
  caption: CaptionPlan;
}

interface ImagePlan extends StoredImage {
  background: BackgroundKind;
  /** draws and encodes; called at most once */
  render: () => Promise<Buffer>;
  svg: () => string;
}

function checkOptions(opts: GenOptions): Required<GenOptions> {
  const o = {
    n: opts.n,
    seed: opts.seed,
    badRate: opts.badRate ?? DEFAULT_BAD_RATE,
    dupRate: opts.dupRate ?? DEFAULT_DUP_RATE,
    startTime: opts.startTime ?? DEFAULT_START_TIME,
    concurrency: opts.concurrency ?? 6,
  };
  if (!Number.isSafeInteger(o.n) || o.n < 0) throw new RangeError(`gen: n must be a whole number >= 0, got ${o.n}`);
  if (!Number.isSafeInteger(o.seed)) throw new RangeError(`gen: seed must be an integer, got ${o.seed}`);
  for (const k of ['badRate', 'dupRate'] as const) {
    if (!(o[k] >= 0 && o[k] <= 1)) throw new RangeError(`gen: ${k} must be between 0 and 1, got ${o[k]}`);
  }
  if (o.badRate + o.dupRate > 1) throw new RangeError('gen: badRate + dupRate must not exceed 1');
  if (!Number.isSafeInteger(o.startTime)) throw new RangeError(`gen: startTime must be epoch milliseconds, got ${o.startTime}`);
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1 || o.concurrency > 64) {
    throw new RangeError(`gen: concurrency must be 1..64, got ${o.concurrency}`);
  }
  return o;
}

/** Takes kinds in turn, reshuffled every round, so each kind shows up early and all in equal shares. */
class Rotation<T> {
  private queue: T[] = [];
  constructor(
    private readonly kinds: readonly T[],
    private readonly rng: Rng,
  ) {}
  next(): T {
    if (this.queue.length === 0) this.queue = this.rng.shuffle([...this.kinds]);
    return this.queue.pop() as T;
  }
}

/**
 * Decides every event synchronously and in order (all randomness comes from the seed and the index), and
 * starts its image encoding; the encodings run concurrently without affecting what is produced.
 */
class Planner {
  private readonly ring: Original[] = [];
  private ringNext = 0;
  private readonly bad: Rotation<BadKind>;
  private readonly dup: Rotation<DupKind>;

  constructor(private readonly o: Required<GenOptions>) {
    this.bad = new Rotation(BAD_KINDS, new Rng(hashSeed(o.seed, 0xbad)));
    this.dup = new Rotation(DUP_KINDS, new Rng(hashSeed(o.seed, 0xd0b)));
  }

  plan(i: number): Promise<CrawlEvent> {
    const { seed, badRate, dupRate } = this.o;
    const rng = new Rng(hashSeed(seed, i, 0xe7));
    const roll = rng.next();
    const [host, category] = rng.pick(SITES);
    const base = {
      id: `gen-${seed}-${i}`,
      url: `https://${host}/page/${i}`,
      crawl_time: this.o.startTime + i * 1000 + rng.int(0, 999),
      source: `gen:seed=${seed}`,
    };
    const misc = { category };
    if (roll < badRate) return this.planBad(i, rng, base, misc, this.bad.next());
    if (roll < badRate + dupRate && this.ring.length > 0) return this.planDuplicate(i, rng, base, misc);
    return this.planOriginal(i, rng, base, misc);
  }

  private planImage(rng: Rng, format?: ImageFormat): ImagePlan {
    const width = rng.int(160, 640);
    const height = rng.int(Math.max(160, Math.ceil(width / 2)), Math.min(640, width * 2));
    const scene = planScene(rng.fork(1), width, height);
    const fmt = format ?? rng.weighted([['jpeg', 0.82], ['png', 0.1], ['webp', 0.08]] as const);
    const quality = rng.int(70, 92);
    // PNGs are clean graphics; JPEG and WebP look like photos, with sensor grain.
    const grain = fmt === 'png' ? 0 : rng.int(8, 18);
    const grainSeed = rng.u32();
    return {
      width,
      height,
      format: fmt,
      quality,
      objects: truthOf(scene.objects),
      background: scene.background.kind,
      render: () => encodeRaw(rasterize(scene, grain, grainSeed), width, height, fmt, quality),
      svg: () => sceneToSvg(scene),
    };
  }

  private planCaption(rng: Rng, objects: TruthObject[], background: BackgroundKind): CaptionPlan {
    let noise = rng.weighted(NOISE_MIX);
    if (objects.length === 0 && noise !== 'mismatched' && noise !== 'filename' && noise !== 'empty') noise = 'boilerplate';
    const ordered = rng.chance(0.5) ? [...objects].sort((a, b) => a.box[0] - b.box[0]) : rng.shuffle([...objects]);
    const plan: CaptionPlan = { caption: '', noise, detail: '', captionOf: '', lang: 'en' };
    switch (noise) {
      case 'correct':
        plan.caption = correctCaption(rng, ordered, background);
        break;
      case 'partial': {
        const p = partialCaption(rng, ordered, background);
        plan.caption = p.caption;
        plan.detail = p.detail;
        break;
      }
      case 'mismatched': {
        const kinds = new Set<string>(objects.map((o) => o.kind));
        let other: Original | undefined;
        for (let t = 0; t < 8 && this.ring.length > 0; t++) {
          const cand = rng.pick(this.ring);
          if ([...cand.kinds].every((k) => !kinds.has(k))) {
            other = cand;
            break;
          }
        }
        if (other) {
          plan.caption = other.correct;
          plan.captionOf = other.id;
        } else {
          // Nobody suitable seen yet: describe objects that are not in this image.
          const absent = rng.shuffle(OBJECT_KINDS.filter((k) => !kinds.has(k))).slice(0, rng.int(1, 2));
          const fake = absent.map((kind) => ({ kind, colour: rng.pick(['red', 'blue', 'green'] as const) }));
          plan.caption = correctCaption(rng, fake, background);
        }
        break;
      }
      case 'boilerplate':
        plan.caption = boilerplateCaption(rng);
        break;
      case 'filename':
        plan.caption = filenameCaption(rng);
        break;
      case 'html':
        plan.caption = htmlCaption(rng, correctCaption(rng, ordered, background), ordered);
        break;
      case 'foreign': {
        const f = foreignCaption(rng, ordered, background);
        plan.caption = f.caption;
        plan.detail = f.lang;
        plan.lang = f.lang;
        break;
      }
      case 'empty':
        plan.caption = emptyCaption(rng);
        break;
    }
    // The page language is a hint, not truth: sometimes wrong, as on the web.
    if (rng.chance(0.08)) plan.lang = rng.pick(['en', 'de', 'fr', 'es', 'it', 'nl', '']);
    return plan;
  }

  private planOriginal(i: number, rng: Rng, base: EventBase, misc: Misc): Promise<CrawlEvent> {
    const img = this.planImage(rng);
    const caption = this.planCaption(rng, img.objects, img.background);
    const imageUrl = `https://img.example/${i}.${FORMAT_EXT[img.format]}`;
    const bytes = img.render();
    bytes.catch(() => undefined);
    const original: Original = {
      id: base.id,
      imageUrl,
      bytes,
      stored: { width: img.width, height: img.height, format: img.format, quality: img.quality, objects: img.objects },
      background: img.background,
      kinds: new Set(img.objects.map((o) => o.kind)),
      correct: correctCaption(rng, img.objects, img.background),
      caption,
    };
    if (this.ring.length < RING_SIZE) this.ring.push(original);
    else this.ring[this.ringNext] = original;
    this.ringNext = (this.ringNext + 1) % RING_SIZE;
    return bytes.then((image) =>
      assemble(base, imageUrl, image, caption, misc, {
        objects: img.objects,
        width: img.width,
        height: img.height,
        format: img.format,
        background: img.background,
      }),
    );
  }

  private planDuplicate(i: number, rng: Rng, base: EventBase, misc: Misc): Promise<CrawlEvent> {
    // Mostly recent originals, sometimes any still remembered.
    const recent = Math.min(this.ring.length, 32);
    const back = rng.chance(0.7) ? rng.int(1, recent) : rng.int(1, this.ring.length);
    const len = this.ring.length;
    const orig = this.ring[(((this.ringNext - back) % len) + len) % len]!;
    const kind = this.dup.next();
    const dupTruth = { dupOf: orig.id, dupKind: kind };
    if (kind === 'exact') {
      const caption = rng.chance(0.5) ? orig.caption : this.planCaption(rng, orig.stored.objects, orig.background);
      const imageUrl = rng.chance(0.5) ? orig.imageUrl : `https://img.example/${i}.${FORMAT_EXT[orig.stored.format]}`;
      return orig.bytes.then((image) =>
        assemble(base, imageUrl, image, caption, misc, { ...orig.stored, background: orig.background, ...dupTruth }),
      );
    }
    const plan = planNearDuplicate(rng, kind, orig.stored);
    const caption = rng.chance(0.5) ? orig.caption : this.planCaption(rng, plan.objects, orig.background);
    const imageUrl = `https://img.example/${i}.${FORMAT_EXT[plan.format]}`;
    return orig.bytes
      .then((bytes) => applyNearDuplicate(bytes, plan))
      .then((image) => assemble(base, imageUrl, image, caption, misc, { ...plan, background: orig.background, ...dupTruth }));
  }

  private planBad(i: number, rng: Rng, base: EventBase, misc: Misc, kind: BadKind): Promise<CrawlEvent> {
    const img = this.planImage(rng, 'jpeg');
    const caption = this.planCaption(rng, img.objects, img.background);
    const imageUrl = `https://img.example/${i}.jpg`;
    const truth: ImageTruth = { ...img, bad: kind };
    const noImage: ImageTruth = { objects: [], width: '', height: '', format: '', background: '', bad: kind };
    const now = (image: Buffer | null, url: string | null, t: ImageTruth, ev: EventBase = base, c = caption) =>
      Promise.resolve(assemble(ev, url, image, c, misc, t));
    switch (kind) {
      case 'corrupt':
        return now(corruptJpeg(rng), imageUrl, noImage);
      case 'truncated': {
        const cut = rng.float(0.3, 0.7);
        return img.render().then((b) =>
          assemble(base, imageUrl, b.subarray(0, Math.floor(b.length * cut)), caption, misc, { ...truth, objects: [] }),
        );
      }
      case 'empty':
        return now(Buffer.alloc(0), null, noImage);
      case 'missing':
        return now(null, null, noImage);
      case 'oversized':
        return now(bombPng(), `https://img.example/${i}.png`, {
          ...noImage,
          width: BOMB_SIDE,
          height: BOMB_SIDE,
          format: 'png',
          background: 'plain',
        });
      case 'tiny':
      case 'aspect': {
        const [w, h] = kind === 'tiny' ? [8, 8] : [rng.int(1000, 1600), rng.int(8, 16)];
        const c = [rng.int(0, 255), rng.int(0, 255), rng.int(0, 255)];
        const raw = Buffer.alloc(w * h * 3);
        for (let p = 0; p < raw.length; p++) raw[p] = Math.max(0, Math.min(255, c[p % 3]! + rng.int(-10, 10)));
        return encodeRaw(raw, w, h, 'jpeg', 85, 3).then((b) =>
          assemble(base, imageUrl, b, caption, misc, { ...noImage, width: w, height: h, format: 'jpeg', background: 'plain' }),
        );
      }
      case 'svg':
        return now(Buffer.from(img.svg()), `https://img.example/${i}.svg`, { ...truth, format: 'svg', background: 'plain' });
      case 'private_url':
        return now(null, rng.pick(PRIVATE_URLS), noImage);
      case 'huge_caption': {
        const spam = ' best cheap shapes buy online free shipping';
        const c = { ...caption, caption: (caption.caption + spam.repeat(HUGE_CAPTION_CHARS / spam.length + 1)).slice(0, HUGE_CAPTION_CHARS) };
        return img.render().then((b) => assemble(base, imageUrl, b, c, misc, truth));
      }
      case 'hostile_caption': {
        const picks = [rng.pick(HOSTILE_CORE), ...rng.shuffle([...HOSTILE_EXTRA]).slice(0, rng.int(1, 3))];
        let text = caption.caption;
        for (const bit of picks) {
          const at = rng.int(0, text.length);
          text = text.slice(0, at) + bit + text.slice(at);
        }
        return img.render().then((b) => assemble(base, imageUrl, b, { ...caption, caption: text }, misc, truth));
      }
      case 'long_id': {
        const id = `${base.id}-${'0123456789abcdef'.repeat(20)}`.slice(0, rng.int(257, 400));
        return img.render().then((b) => assemble({ ...base, id }, imageUrl, b, caption, misc, truth));
      }
      case 'hostile_id': {
        const id = rng.pick(HOSTILE_IDS)(base.id);
        return img.render().then((b) => assemble({ ...base, id }, imageUrl, b, caption, misc, truth));
      }
    }
  }
}

const PRIVATE_URLS = [
  'http://127.0.0.1:1/image.jpg',
  'http://localhost/admin/photo.png',
  'http://[::1]/img.jpg',
  'http://10.0.0.1/internal.jpg',
  'http://192.168.1.1/cam.jpg',
  'http://169.254.169.254/latest/meta-data/',
  'file:///etc/passwd',
  'ftp://files.example/pic.jpg',
];

/** Every hostile caption gets one of these (markup, NUL, control, bidi override)... */
const HOSTILE_CORE = [
  '<script>alert(1)</script>',
  '<img src=x onerror=alert(1)>',
  '\u0000',
  '\u0007\u0008\u001b[31m',
  '\r\n',
  '\u202e',
  '\u202egpj.exe\u202c',
];
/** ...and some of these. */
const HOSTILE_EXTRA = [...HOSTILE_CORE, '\u200b\u200d\ufeff', "'; DROP TABLE captions;--", '{{7*7}}${7*7}'];

const HOSTILE_IDS: readonly ((id: string) => string)[] = [
  (id) => `${id}\u0000`,
  (id) => `../../${id}`,
  (id) => `<script>alert("${id}")</script>`,
  (id) => `\u202e${id}`,
  (id) => `${id}\r\nX-Injected: 1`,
  (id) => `${id}/../../etc/passwd`,
  () => '',
];

type EventBase = Pick<CrawlEvent, 'id' | 'url' | 'crawl_time' | 'source'>;
type Misc = { category: string };

interface ImageTruth {
  objects: TruthObject[];
  width: number | '';
  height: number | '';
  format: string;
  background: string;
  dupOf?: string;
  dupKind?: string;
  bad?: string;
}

function assemble(
  base: EventBase,
  imageUrl: string | null,
  image: Buffer | null,
  caption: CaptionPlan,
  misc: Misc,
  t: ImageTruth,
): CrawlEvent {
  return {
    id: base.id,
    url: base.url,
    image_url: imageUrl,
    image,
    caption: caption.caption,
    crawl_time: base.crawl_time,
    source: base.source,
    attrs: {
      lang: caption.lang,
      category: misc.category,
      truth_objects: JSON.stringify(t.objects.map((o) => ({ kind: o.kind, colour: o.colour, box: o.box }))),
      truth_noise: caption.noise,
      truth_noise_detail: caption.detail,
      truth_caption_of: caption.captionOf,
      truth_dup_of: t.dupOf ?? '',
      truth_dup_kind: t.dupKind ?? '',
      truth_bad: t.bad ?? '',
      truth_width: String(t.width),
      truth_height: String(t.height),
      truth_format: t.format,
      truth_background: t.background,
    },
  };
}

/**
 * The synthetic crawl as a stream. Memory stays bounded (a ring of recent originals plus `concurrency`
 * events in flight) and the output is the same for the same options whatever the concurrency.
 */
export async function* generateCrawl(opts: GenOptions): AsyncGenerator<CrawlEvent> {
  const o = checkOptions(opts);
  const planner = new Planner(o);
  const inFlight: Promise<CrawlEvent>[] = [];
  for (let i = 0; i < o.n; i++) {
    const p = planner.plan(i);
    // Rejections surface when the event's turn comes; until then they must not count as unhandled.
    p.catch(() => undefined);
    inFlight.push(p);
    if (inFlight.length >= o.concurrency) yield await inFlight.shift()!;
  }
  while (inFlight.length > 0) yield await inFlight.shift()!;
}

/**
 * One event in the JSONL form of docs/FORMATS.md, JSONL events: the event's fields with `image_b64` instead of `image`
 * (left out when there is no image). No trailing newline.
 */
export function eventToJsonLine(ev: CrawlEvent): string {
  const line: Record<string, unknown> = {
    id: ev.id,
    url: ev.url,
    image_url: ev.image_url,
    caption: ev.caption,
    crawl_time: ev.crawl_time,
    source: ev.source,
    attrs: ev.attrs,
  };
  if (ev.image) line.image_b64 = ev.image.toString('base64');
  return JSON.stringify(line);
}

/** Inverse of `eventToJsonLine` for lines this module wrote (no validation: that is the curator's job). */
export function eventFromJsonLine(line: string): CrawlEvent {
  const o = JSON.parse(line) as Omit<CrawlEvent, 'image'> & { image_b64?: string };
  return {
    id: o.id,
    url: o.url,
    image_url: o.image_url,
    image: typeof o.image_b64 === 'string' ? Buffer.from(o.image_b64, 'base64') : null,
    caption: o.caption,
    crawl_time: o.crawl_time,
    source: o.source,
    attrs: o.attrs,
  };
}

/** Writes the crawl as JSONL, one event per line; `pipeline` waits on the file when its buffer is full. */
export async function writeGenJsonl(
  path: string,
  opts: GenOptions,
  onProgress?: (done: number) => void,
): Promise<{ events: number; bytes: number }> {
  checkOptions(opts);
  let events = 0;
  let bytes = 0;
  async function* lines(): AsyncGenerator<string> {
    for await (const ev of generateCrawl(opts)) {
      const line = eventToJsonLine(ev) + '\n';
      bytes += Buffer.byteLength(line);
      yield line;
      events++;
      onProgress?.(events);
    }
  }
  await pipeline(Readable.from(lines()), createWriteStream(path));
  return { events, bytes };
}
