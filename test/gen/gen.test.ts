import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { CrawlEvent } from '../../src/records';
import {
  BAD_KINDS,
  COLOURS,
  DUP_KINDS,
  eventFromJsonLine,
  eventToJsonLine,
  generateCrawl,
  NOISE_KINDS,
  OBJECT_KINDS,
  writeGenJsonl,
  type GenOptions,
  type TruthObject,
} from '../../src/gen';
import { COLOUR_RGB, type Colour } from '../../src/gen/shapes';
import { Rng } from '../../src/gen/rng';

async function collect(opts: GenOptions): Promise<CrawlEvent[]> {
  const out: CrawlEvent[] = [];
  for await (const ev of generateCrawl(opts)) out.push(ev);
  return out;
}

const TRUTH_KEYS = [
  'truth_objects',
  'truth_noise',
  'truth_noise_detail',
  'truth_caption_of',
  'truth_dup_of',
  'truth_dup_kind',
  'truth_bad',
  'truth_width',
  'truth_height',
  'truth_format',
  'truth_background',
];

let crawl: CrawlEvent[] = [];
before(async () => {
  crawl = await collect({ n: 600, seed: 7 });
});

test('rng is deterministic by seed', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xs = Array.from({ length: 5 }, () => a.u32());
  assert.deepEqual(xs, Array.from({ length: 5 }, () => b.u32()));
  assert.notDeepEqual(xs, Array.from({ length: 5 }, () => c.u32()));
  for (let i = 0; i < 1000; i++) {
    const v = a.int(3, 9);
    assert.ok(v >= 3 && v <= 9 && Number.isInteger(v));
  }
});

test('vocabulary has at least 12 object kinds and 6 colours, all distinct', () => {
  assert.ok(OBJECT_KINDS.length >= 12);
  assert.ok(COLOURS.length >= 6);
  assert.equal(new Set(OBJECT_KINDS).size, OBJECT_KINDS.length);
  assert.equal(new Set(COLOURS).size, COLOURS.length);
});

test('same seed gives identical events, whatever the concurrency; another seed differs', async () => {
  const a = (await collect({ n: 60, seed: 11, concurrency: 1 })).map(eventToJsonLine);
  const b = (await collect({ n: 60, seed: 11, concurrency: 8 })).map(eventToJsonLine);
  const c = (await collect({ n: 60, seed: 12 })).map(eventToJsonLine);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.equal(crawl.length, 600);
});

test('every caption noise, duplicate and bad kind appears in 600 events', () => {
  const noise = new Set(crawl.map((e) => e.attrs.truth_noise));
  const dup = new Set(crawl.map((e) => e.attrs.truth_dup_kind).filter(Boolean));
  const bad = new Set(crawl.map((e) => e.attrs.truth_bad).filter(Boolean));
  for (const k of NOISE_KINDS) assert.ok(noise.has(k), `noise ${k}`);
  for (const k of DUP_KINDS) assert.ok(dup.has(k), `dup ${k}`);
  for (const k of BAD_KINDS) assert.ok(bad.has(k), `bad ${k}`);
  const correct = crawl.filter((e) => e.attrs.truth_noise === 'correct').length / crawl.length;
  assert.ok(correct > 0.35 && correct < 0.55, `correct share ${correct}`);
});

test('events are well formed and truth attrs are strings', () => {
  const ids = new Set<string>();
  let last = -Infinity;
  for (const e of crawl) {
    for (const k of TRUTH_KEYS) assert.equal(typeof e.attrs[k], 'string', `${e.id} ${k}`);
    for (const v of Object.values(e.attrs)) assert.equal(typeof v, 'string');
    assert.ok(e.crawl_time >= last);
    last = e.crawl_time;
    assert.equal(e.source, 'gen:seed=7');
    if (!e.attrs.truth_bad) {
      assert.match(e.id, /^gen-7-\d+$/);
      assert.ok(e.image instanceof Buffer && e.image.length > 0);
    }
    ids.add(e.id);
  }
  assert.ok(ids.size >= crawl.length - 2, 'ids are unique except deliberately hostile ones');
});

test('truth boxes lie inside the image and name known kinds and colours', () => {
  let boxes = 0;
  for (const e of crawl) {
    const objs = JSON.parse(e.attrs.truth_objects!) as TruthObject[];
    const w = Number(e.attrs.truth_width);
    const h = Number(e.attrs.truth_height);
    for (const o of objs) {
      assert.ok((OBJECT_KINDS as readonly string[]).includes(o.kind));
      assert.ok((COLOURS as readonly string[]).includes(o.colour));
      const [x, y, bw, bh] = o.box;
      assert.ok(x >= 0 && y >= 0 && bw > 0 && bh > 0 && x + bw <= w && y + bh <= h, `${e.id} ${JSON.stringify(o)} in ${w}x${h}`);
      boxes++;
    }
    if (!e.attrs.truth_bad && !e.attrs.truth_dup_kind) {
      assert.ok(objs.length >= 1 && objs.length <= 3);
      assert.ok(Math.min(w, h) >= 160 && Math.max(w, h) <= 640 && Math.max(w, h) / Math.min(w, h) <= 2);
      assert.equal(new Set(objs.map((o) => o.kind)).size, objs.length);
    }
  }
  assert.ok(boxes > 900);
});

test('correct images decode to the stated size and show the stated colours at object centres', async () => {
  const solidAtCentre = new Set(['circle', 'square', 'hexagon', 'pentagon', 'diamond', 'star', 'heart', 'cross', 'flower', 'triangle']);
  const samples = crawl.filter((e) => e.attrs.truth_noise === 'correct' && !e.attrs.truth_bad && !e.attrs.truth_dup_kind).slice(0, 25);
  assert.equal(samples.length, 25);
  let checked = 0;
  for (const e of samples) {
    const { data, info } = await sharp(e.image!).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.width, Number(e.attrs.truth_width));
    assert.equal(info.height, Number(e.attrs.truth_height));
    const meta = await sharp(e.image!).metadata();
    assert.equal(meta.format, e.attrs.truth_format);
    for (const o of JSON.parse(e.attrs.truth_objects!) as TruthObject[]) {
      if (!solidAtCentre.has(o.kind)) continue;
      const cx = Math.floor(o.box[0] + o.box[2] / 2);
      const cy = Math.floor(o.box[1] + o.box[3] / 2);
      const i = (cy * info.width + cx) * 3;
      const px = [data[i]!, data[i + 1]!, data[i + 2]!];
      const nearest = (Object.keys(COLOUR_RGB) as Colour[]).reduce((best, c) =>
        dist(COLOUR_RGB[c], px) < dist(COLOUR_RGB[best], px) ? c : best,
      );
      assert.equal(nearest, o.colour, `${e.id} ${o.kind} at ${cx},${cy} is ${px}`);
      checked++;
    }
  }
  assert.ok(checked >= 15);
});

function dist(a: readonly number[], b: readonly number[]): number {
  return Math.hypot(a[0]! - b[0]!, a[1]! - b[1]!, a[2]! - b[2]!);
}

test('exact duplicates repeat the original bytes, near duplicates do not', async () => {
  const byId = new Map(crawl.map((e) => [e.id, e]));
  const seen = new Set<string>();
  for (const e of crawl.filter((x) => x.attrs.truth_dup_kind)) {
    const orig = byId.get(e.attrs.truth_dup_of!);
    assert.ok(orig, `original of ${e.id} precedes it`);
    assert.ok(crawl.indexOf(orig) < crawl.indexOf(e));
    assert.equal(orig.attrs.truth_dup_kind, '');
    assert.equal(orig.attrs.truth_background, e.attrs.truth_background);
    const kind = e.attrs.truth_dup_kind!;
    seen.add(kind);
    const w = Number(e.attrs.truth_width);
    const h = Number(e.attrs.truth_height);
    const ow = Number(orig.attrs.truth_width);
    const oh = Number(orig.attrs.truth_height);
    if (kind === 'exact') {
      assert.ok(e.image!.equals(orig.image!));
      assert.equal(e.attrs.truth_objects, orig.attrs.truth_objects);
    } else {
      assert.ok(!e.image!.equals(orig.image!), `${kind} ${e.id} differs from ${orig.id}`);
      const meta = await sharp(e.image!).metadata();
      assert.equal(meta.width, w);
      assert.equal(meta.height, h);
    }
    if (kind === 'reencode') assert.ok(w === ow && h === oh);
    if (kind === 'resize') assert.ok(w < ow && h < oh && w >= 0.49 * ow);
    if (kind === 'crop') assert.ok(w < ow && h < oh && w >= 0.89 * ow && h >= 0.89 * oh);
  }
  assert.deepEqual([...seen].sort(), [...DUP_KINDS].sort());
});

test('bad inputs are bad in the stated way', async () => {
  const first = (kind: string) => crawl.find((e) => e.attrs.truth_bad === kind)!;
  assert.equal(first('missing').image, null);
  assert.equal(first('missing').image_url, null);
  assert.equal(first('empty').image!.length, 0);
  assert.ok(first('long_id').id.length > 256);
  assert.ok(first('huge_caption').caption.length >= 200 * 1024);
  assert.match(first('svg').image!.toString('utf8'), /^<svg/);
  assert.equal(first('private_url').image, null);
  assert.doesNotMatch(first('private_url').image_url!, /^https:\/\/img\.example/);
  const bomb = first('oversized').image!;
  assert.ok(bomb.length < 100_000);
  await assert.rejects(sharp(bomb).metadata(), /pixel limit/);
  const big = await sharp(bomb, { limitInputPixels: false }).metadata();
  assert.equal(big.width, 20000);
  assert.equal(big.height, 20000);
  await assert.rejects(sharp(first('corrupt').image!).raw().toBuffer());
  await assert.rejects(sharp(first('truncated').image!).raw().toBuffer());
  const tiny = await sharp(first('tiny').image!).metadata();
  assert.equal(tiny.width, 8);
  const strip = await sharp(first('aspect').image!).metadata();
  assert.ok(strip.width! / strip.height! >= 50);
  assert.ok(crawl.filter((e) => e.attrs.truth_bad === 'hostile_caption').every((e) => /[\u0000-\u001f\u202e<]/.test(e.caption)));
});

test('JSONL lines round-trip and keep one event per line', () => {
  for (const e of crawl) {
    const line = eventToJsonLine(e);
    assert.ok(!line.includes('\n'));
    const back = eventFromJsonLine(line);
    assert.deepEqual(back, e);
    const raw = JSON.parse(line) as Record<string, unknown>;
    assert.deepEqual(Object.keys(raw).filter((k) => k !== 'image_b64'), [
      'id',
      'url',
      'image_url',
      'caption',
      'crawl_time',
      'source',
      'attrs',
    ]);
    assert.equal('image_b64' in raw, e.image !== null);
    assert.ok(!('image' in raw));
  }
});

test('writeGenJsonl streams the crawl to a file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'squeeze-gen-'));
  try {
    const path = join(dir, 'crawl.jsonl');
    let progress = 0;
    const res = await writeGenJsonl(path, { n: 40, seed: 3 }, (d) => (progress = d));
    assert.equal(res.events, 40);
    assert.equal(progress, 40);
    assert.equal(res.bytes, statSync(path).size);
    const lines = readFileSync(path, 'utf8').split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, 40);
    const again = (await collect({ n: 40, seed: 3 })).map(eventToJsonLine);
    assert.deepEqual(lines, again);
    await assert.rejects(writeGenJsonl(join(dir, 'no', 'such', 'dir.jsonl'), { n: 3, seed: 1 }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rates and options are validated', async () => {
  await assert.rejects(collect({ n: -1, seed: 1 }), RangeError);
  await assert.rejects(collect({ n: 1, seed: 1.5 }), RangeError);
  await assert.rejects(collect({ n: 1, seed: 1, badRate: 0.8, dupRate: 0.5 }), RangeError);
  const clean = await collect({ n: 50, seed: 2, badRate: 0, dupRate: 0 });
  assert.ok(clean.every((e) => !e.attrs.truth_bad && !e.attrs.truth_dup_kind));
  const allBad = await collect({ n: 26, seed: 2, badRate: 1, dupRate: 0 });
  assert.deepEqual(new Set(allBad.map((e) => e.attrs.truth_bad)), new Set(BAD_KINDS));
  assert.deepEqual(await collect({ n: 0, seed: 1 }), []);
});
