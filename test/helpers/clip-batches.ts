import { SeededNormal, type TinyClipConfig } from '../../src/train/clip/tiny-clip';

/** A tiny CLIP configuration for gradient checks: small enough for float64 finite differences. */
export const TINY_CONFIG: TinyClipConfig = { image: 8, patch: 4, blur: 1, window: 1, hidden: 6, width: 5, embed: 4, vocab: 9, context: 5 };

/**
 * The text side of a training batch: n captions of 2..context words drawn from `rng`, and the auxiliary
 * tag loss's 3 prompts of 2..3 words with varied labels.
 */
export function textBatch(c: TinyClipConfig, n: number, rng: SeededNormal) {
  const ids = new Int32Array(n * c.context);
  const textMask = new Float64Array(n * c.context);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < 2 + (b % (c.context - 1)); i++) {
      ids[b * c.context + i] = 1 + Math.floor(rng.uniform() * (c.vocab - 1));
      textMask[b * c.context + i] = 1;
    }
  }
  const k = 3;
  const tagIds = new Int32Array(k * c.context);
  const tagMask = new Float64Array(k * c.context);
  for (let j = 0; j < k; j++) {
    for (let i = 0; i < 2 + (j % 2); i++) {
      tagIds[j * c.context + i] = 2 + ((j * 3 + i) % (c.vocab - 2));
      tagMask[j * c.context + i] = 1;
    }
  }
  const labels = Float64Array.from({ length: n * k }, (_, j) => (j % 3 === 0 ? 1 : 0));
  return { ids, textMask, tags: { k, ids: tagIds, mask: tagMask, labels, weight: 0.7 } };
}
