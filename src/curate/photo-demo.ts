/**
 * The embedded demo on real photos: `--demo N` curates N events made from real photos and their human
 * captions, with what a crawl has: a quarter carry the caption of another photo, and one in twenty
 * repeats an earlier photo's bytes. The photos are those of a shared/ data directory when one is present
 * (Flickr8k and COCO, see streams/files/shared-photos.ts), else the 64 COCO photos shipped in
 * examples/photos (CC BY 2.0, examples/photos/ATTRIBUTION.md), where one event in fifty also carries a
 * photo cut short, as crawls do. The true pairing is in `attrs.demo_pair` (`true` or `mismatched`) so a
 * user can check what the scores did. Deterministic from the seed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../gen/rng';
import { cocoPhotos, loadPhotos, type PhotoItem } from '../streams/files/shared-photos';
import type { CrawlEvent } from '../records';

/** Where the repository's example photos are. */
export const EXAMPLE_PHOTOS = join(__dirname, '..', '..', '..', 'examples', 'photos');

/** The example photos shipped with the repository, with their captions; empty when they are absent. */
export const examplePhotos = (dir = EXAMPLE_PHOTOS): PhotoItem[] => cocoPhotos(dir);

export interface PhotoDemoOptions {
  /** one event in `1 / brokenEvery` carries a photo cut short (0: never) */
  brokenEvery?: number;
}

export function* photoDemoEvents(shared: string | PhotoItem[], n: number, seed: number, o: PhotoDemoOptions = {}): Generator<CrawlEvent> {
  const photos = typeof shared === 'string' ? loadPhotos(shared) : shared;
  if (photos.length < 2) return;
  const rng = new Rng(seed ^ 0x70686f74);
  const order = photos.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const start = Date.UTC(2026, 0, 1);
  const seen: number[] = [];
  for (let k = 0; k < n; k++) {
    const repeat = seen.length > 0 && rng.chance(0.05);
    const idx = repeat ? seen[rng.int(0, seen.length - 1)] : order[k % order.length];
    seen.push(idx);
    const photo = photos[idx];
    const mismatched = rng.chance(0.25);
    const donor = mismatched ? photos[(idx + 1 + rng.int(0, photos.length - 2)) % photos.length] : photo;
    const caption = donor.captions[rng.int(0, donor.captions.length - 1)];
    let image = readFileSync(photo.path);
    const broken = o.brokenEvery ? k % o.brokenEvery === o.brokenEvery - 1 : false;
    if (broken) image = image.subarray(0, Math.floor(image.length / 3));
    yield {
      id: `demo-${String(k).padStart(6, '0')}`,
      url: `https://demo.invalid/${photo.key}`,
      image_url: null,
      image,
      caption,
      crawl_time: start + k * 1000,
      source: photo.source,
      attrs: { demo_pair: mismatched ? 'mismatched' : 'true', demo_photo: photo.key, ...(broken ? { demo_broken: 'true' } : {}) },
    };
  }
}
