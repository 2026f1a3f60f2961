/**
 * scoreQuality: two model-free per-sample scores for the mix (M-FLYT inputs besides clip_score):
 *   caption_quality  0..1, from how many words survive alt-text cleaning, less for each kind of
 *                    junk that had to be removed (markup, entities, file names, boilerplate, repeats)
 *   image_quality    0..1, log-scaled shortest side between 32 px (0) and 1024 px (1)
 * They let mixing and soft-cap sampling run even without a model bundle.
 *
 * @example
 * batches$.pipe(decodeImage(...), scoreQuality(), mix({ weights: () => store.current() }))
 */
import type { OperatorFunction } from 'rxjs';
import { cleanCaption } from '../text/clean-caption';
import { type Batch, isKept } from './sample';
import { stage } from './stage';

const JUNK = new Set(['html_entities', 'html_tags', 'file_name', 'boilerplate', 'repeated_words', 'url']);

export function captionQuality(raw: string): number {
  const { text, fixes } = cleanCaption(raw);
  const words = text.split(/\s+/).filter((w) => /\p{L}/u.test(w)).length;
  if (words === 0) return 0;
  const length = Math.min(1, Math.log1p(words) / Math.log1p(12));
  const junk = fixes.filter((f) => JUNK.has(f)).length;
  return Math.max(0, length - 0.2 * junk);
}

export function imageQuality(width: number, height: number): number {
  const side = Math.min(width, height);
  return Math.max(0, Math.min(1, Math.log2(side / 32) / Math.log2(1024 / 32)));
}

export function scoreQuality(): OperatorFunction<Batch, Batch> {
  return stage('score_quality', (batch) => {
    for (const s of batch.samples) {
      if (!isKept(s) || !s.image) continue;
      s.scores.caption_quality = captionQuality(s.caption);
      s.scores.image_quality = imageQuality(s.image.width, s.image.height);
    }
    return batch;
  });
}
