/**
 * fetchImages: for events that carry only an `image_url`, fetches the bytes through an injected
 * fetcher that enforces the URL limits of docs/FORMATS.md, Limits. Failures are dead letters with the fetcher's reason.
 *
 * @example
 * batches$.pipe(validateEvent(...), fetchImages({ fetch: createImageFetcher(limits), concurrency: 8 }))
 */
import type { OperatorFunction } from 'rxjs';
import type { DeadReason } from '../records';
import { type Batch, forEachKept, deadLetter } from './sample';
import { stage } from './stage';

export type ImageFetch = (
  url: string,
) => Promise<{ ok: true; bytes: Buffer } | { ok: false; reason: DeadReason; message: string }>;

export interface FetchImagesOptions {
  /** null disables fetching: events without image bytes become `missing_image` */
  fetch: ImageFetch | null;
  concurrency?: number;
}

export function fetchImages(options: FetchImagesOptions): OperatorFunction<Batch, Batch> {
  return stage('fetch_images', (batch) =>
    forEachKept(batch, options.concurrency ?? 8, 'fetch_failed', async (s) => {
      const ev = s.event;
      if (!ev || ev.image !== null || !ev.image_url) return;
      if (!options.fetch) return deadLetter(s, 'missing_image', 'no image bytes and fetching is disabled');
      const got = await options.fetch(ev.image_url);
      if (!got.ok) return deadLetter(s, got.reason, got.message);
      ev.image = got.bytes;
    }),
  );
}
