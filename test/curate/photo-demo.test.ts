/**
 * The demo a fresh clone runs: the COCO photos shipped in examples/photos (CC BY 2.0, with their captions
 * and an attribution for each), turned into a crawl with noise, curated by the photo bundle.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { EXAMPLE_PHOTOS, examplePhotos, photoDemoEvents } from '../../src/curate/photo-demo';
import { squeeze } from '../helpers/cli';

test('the example photos: real JPEGs with five captions each, an attribution line per photo, under 10 MB', async () => {
  const photos = examplePhotos();
  assert.ok(photos.length >= 40 && photos.length <= 100, `${photos.length} photos`);
  const attribution = readFileSync(join(EXAMPLE_PHOTOS, 'ATTRIBUTION.md'), 'utf8');
  let bytes = 0;
  for (const p of photos) {
    assert.ok(existsSync(p.path), p.path);
    bytes += statSync(p.path).size;
    assert.equal(p.captions.length, 5, p.key);
    const meta = await sharp(p.path).metadata();
    assert.equal(meta.format, 'jpeg');
    assert.ok(Math.max(meta.width!, meta.height!) <= 480);
    assert.match(attribution, new RegExp(`\\| ${basename(p.path)} \\| http://farm\\d+\\.staticflickr\\.com/`), `${basename(p.path)} is credited`);
  }
  assert.ok(bytes < 10 << 20, `${bytes} bytes`);
  const licences = readFileSync(join(EXAMPLE_PHOTOS, 'captions.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { license: string }).license);
  assert.deepEqual([...new Set(licences)], ['CC BY 2.0']);
});

test('the demo crawl from them has mismatched captions, repeated photos and a photo cut short', () => {
  const photos = examplePhotos();
  const events = [...photoDemoEvents(photos, 100, 7, { brokenEvery: 50 })];
  assert.equal(events.length, 100);
  const mismatched = events.filter((e) => e.attrs.demo_pair === 'mismatched').length;
  assert.ok(mismatched >= 10 && mismatched <= 40, `${mismatched} mismatched`);
  const broken = events.filter((e) => e.attrs.demo_broken === 'true');
  assert.equal(broken.length, 2);
  for (const e of broken) assert.ok(e.image!.length < statSync(photos.find((p) => p.key === e.attrs.demo_photo)!.path).size);
  assert.ok(new Set(events.map((e) => e.attrs.demo_photo)).size < events.length, 'some photos come twice');
  // a true pair carries one of its photo's own captions
  for (const e of events.filter((x) => x.attrs.demo_pair === 'true')) assert.ok(photos.find((p) => p.key === e.attrs.demo_photo)!.captions.includes(e.caption));
});

test('squeeze curate --demo on the example photos: says what it curates first, then the model note; every event accounted for', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'demo-examples-')), 'out');
  const r = await squeeze(['curate', '--demo', '80', '--demo-kind', 'examples', '--out', out, '--progress', 'off']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.match(lines[0], /^squeeze: demo: 80 events from the \d+ real COCO photos in examples\/photos/);
  assert.match(lines[1], /^squeeze: note: the default photo model .* is for research use/);
  assert.match(r.stdout, /decode_error 1 at decode_image/, 'the summary names the stage behind a drop');
  assert.match(r.stdout, /duplicate_exact \d+ at dedup_exact/);
  const m = /accounting\s+(\d+) \+ (\d+) \+ (\d+) = 80 of 80 events/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.ok(Number(m[1]) > 10, `${m[1]} rows`);
});
