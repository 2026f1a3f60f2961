/**
 * The embedded demo on real photos: when a shared/ data directory is present (see streams/files/shared-photos.ts),
 * `--demo N` curates N events made from its photos (Flickr8k and COCO) and their human captions, with
 * what a crawl has: a quarter carry the caption of another photo, and one in twenty repeats an earlier
 * photo's bytes. The true pairing is in `attrs.demo_pair` (`true` or `mismatched`) so a user can check
 * what the scores did. Deterministic from the seed.
 */
import { readFileSync } from 'node:fs';
import { Rng } from '../gen/rng';
import { loadPhotos } from '../streams/files/shared-photos';
import type { CrawlEvent } from '../records';

export function* photoDemoEvents(shared: string, n: number, seed: number): Generator<CrawlEvent> {
  const photos = loadPhotos(shared);
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
    yield {
      id: `demo-${String(k).padStart(6, '0')}`,
      url: `https://demo.invalid/${photo.key}`,
      image_url: null,
      image: readFileSync(photo.path),
      caption,
      crawl_time: start + k * 1000,
      source: photo.source,
      attrs: { demo_pair: mismatched ? 'mismatched' : 'true', demo_photo: photo.key },
    };
  }
}
