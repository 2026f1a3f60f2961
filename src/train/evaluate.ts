/**
 * Held-out evaluation of the built-in CLIP while it trains: a fixed set of generated crawl images that no
 * curated stream contains (their own seed), each with one caption from the crawl's correct-caption
 * templates. Reports image-to-text and text-to-image recall@1 and @5 over the whole set, and zero-shot
 * accuracy: the prompt "a photo of a {kind}" closest to the image names one of its objects.
 */
import { BACKGROUND_KINDS, OBJECT_KINDS } from '../gen/index';
import { correctCaption } from '../gen/captions';
import type { BackgroundKind } from '../gen/shapes';
import { hashSeed, Rng } from '../gen/rng';
import { type StemOutput, type TinyClipParams, imageForwardStem, imageStem, patchCount, patchDim, textForward } from './clip/tiny-clip';
import { loadSamples, TAG_PROMPT, tokenizeAll } from './clip/train';

export interface HeldOut {
  n: number;
  stem: StemOutput;
  ids: Int32Array;
  mask: Float32Array;
  /** per image, the object kinds it shows */
  kinds: string[][];
}

export interface EvalResult {
  step: number;
  i2t_r1: number;
  i2t_r5: number;
  t2i_r1: number;
  t2i_r5: number;
  mean_r5: number;
  zero_shot: number;
}

export async function heldOutSet(params: TinyClipParams, vocab: Record<string, number>, n: number, seed: number): Promise<HeldOut> {
  const c = params.config;
  const samples = (await loadSamples({ n: Math.ceil(n * 1.4) + 8, seed: hashSeed(seed, 0xe7a1) })).slice(0, n);
  const rng = new Rng(hashSeed(seed, 0xe7a2));
  const texts = samples.map((s) => correctCaption(rng, s.objects, (BACKGROUND_KINDS as readonly string[]).includes(s.background) ? (s.background as BackgroundKind) : 'plain'));
  const tok = tokenizeAll(texts, vocab, c.context);
  const P = patchCount(c);
  const K = patchDim(c);
  const X = new Float32Array(samples.length * P * K);
  const prior = new Float32Array(samples.length * P);
  samples.forEach((s, i) => {
    const st = imageStem(c, s.pixels, 1);
    X.set(st.X, i * P * K);
    prior.set(st.prior, i * P);
  });
  return { n: samples.length, stem: { X, prior }, ids: tok.ids, mask: tok.mask, kinds: samples.map((s) => s.objects.map((o) => o.kind)) };
}

function recall(sim: Float64Array, n: number, rowsAreQueries: boolean, k: number): number {
  let hits = 0;
  for (let q = 0; q < n; q++) {
    const own = sim[q * n + q]!;
    let better = 0;
    for (let j = 0; j < n; j++) {
      if (j === q) continue;
      const v = rowsAreQueries ? sim[q * n + j]! : sim[j * n + q]!;
      if (v > own) better++;
    }
    if (better < k) hits++;
  }
  return hits / n;
}

export function evaluate(params: TinyClipParams, vocab: Record<string, number>, h: HeldOut, step: number): EvalResult {
  const c = params.config;
  const E = c.embed;
  const img = imageForwardStem(params, h.stem, h.n).embeds;
  const txt = textForward(params, h.ids, h.mask, h.n).embeds;
  const sim = new Float64Array(h.n * h.n);
  for (let i = 0; i < h.n; i++) {
    for (let j = 0; j < h.n; j++) {
      let d = 0;
      for (let e = 0; e < E; e++) d += img[i * E + e]! * txt[j * E + e]!;
      sim[i * h.n + j] = d;
    }
  }
  const kinds = OBJECT_KINDS as readonly string[];
  const prompts = tokenizeAll(kinds.map((k) => TAG_PROMPT.replace('{}', k)), vocab, c.context);
  const pe = textForward(params, prompts.ids, prompts.mask, kinds.length).embeds;
  let right = 0;
  for (let i = 0; i < h.n; i++) {
    let best = -1;
    let bestV = -Infinity;
    for (let k = 0; k < kinds.length; k++) {
      let d = 0;
      for (let e = 0; e < E; e++) d += img[i * E + e]! * pe[k * E + e]!;
      if (d > bestV) [best, bestV] = [k, d];
    }
    if (h.kinds[i]!.includes(kinds[best]!)) right++;
  }
  const r = {
    i2t_r1: recall(sim, h.n, true, 1),
    i2t_r5: recall(sim, h.n, true, 5),
    t2i_r1: recall(sim, h.n, false, 1),
    t2i_r5: recall(sim, h.n, false, 5),
  };
  return { step, ...r, mean_r5: (r.i2t_r5 + r.t2i_r5) / 2, zero_shot: right / h.n };
}
