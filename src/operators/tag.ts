/**
 * tag: object classes with confidence >= tau, stored as `s.tags` (highest score first) and the
 * best confidence as `s.scores.tag_confidence`.
 *
 * Two sources:
 * - detector: the detections the embed stage stored (or, when it did not run the detector, one batched
 *   detector call here). A class's confidence is the highest score of its detections.
 * - zero-shot: the image is encoded again with a keep mask (the patches choosePatches kept, `s.patches`,
 *   the choice condense records; an image without one, or whose grid is not the bundle's, is encoded
 *   whole) in one `vision.encode(inputs, masks)` call per `batchSize` images (default 32; one image at a
 *   time when a batched call fails), and compared with the text embeddings of the vocabulary prompts
 *   (`bundle.tags.prompt` with `{}` replaced by the class; encoded once per bundle).
 *
 * Zero-shot confidence, as the bundle's `tags.confidence` says:
 * - `softmax` (default): the CLIP zero-shot classifier's probability,
 *   conf_k = softmax_k( cos(v, t_k) / T ),   T = `temperature`, default 0.01 (CLIP's logit scale of 100),
 *   over the whole vocabulary. It is a distribution: confidences sum to 1, so an image showing two
 *   vocabulary objects about equally gives each roughly 0.5, and tau reads "at least this share of the
 *   evidence". Suits real CLIP models, whose cosines are small and close together.
 * - `cosine`: conf_k = cos(v, t_k), each class on its own, so an image can carry several confident tags.
 *   The built-in bundle uses it, with tau calibrated on held-out `gen` data for precision >= 0.9.
 * tau defaults to `bundle.tags.threshold`.
 *
 * `source: 'auto'` (default) uses the detector when the bundle has one, zero-shot otherwise.
 *
 * @example
 * batches$.pipe(embed({ bundle }), choosePatches({ rho: 0.5 }), tag({ bundle, threshold: 0.3 }))
 */
import type { OperatorFunction } from 'rxjs';
import type { Detection, ModelBundle } from '../models/types';
import type { Tag } from '../records';
import { keepMask } from './choose-patches';
import { assertFiniteVector, type BundleSource, callBatched, chunks, cosine, resolveBundle, withImages, withInputs } from './model-calls';
import { type Batch, deadLetter, oneLine, type Sample } from './sample';
import { stage } from './stage';

export interface TagOptions {
  bundle: BundleSource;
  /** tau; default the bundle's `tags.threshold` */
  threshold?: number;
  source?: 'auto' | 'detector' | 'zero-shot';
  /** softmax temperature of the zero-shot confidence; default 0.01 */
  temperature?: number;
  /** most tags kept per sample (highest first); default 10 */
  maxTags?: number;
  /** most images per model call; default 32 */
  batchSize?: number;
}

/** The text for one vocabulary class. */
export const promptFor = (template: string, label: string): string =>
  template.includes('{}') ? template.split('{}').join(label) : template.trim() ? `${template.trim()} ${label}` : label;

/** softmax(x / T), numerically stable. */
export function softmax(xs: ArrayLike<number>, temperature: number): number[] {
  const t = temperature > 0 ? temperature : 1;
  let max = -Infinity;
  for (let i = 0; i < xs.length; i++) max = Math.max(max, xs[i] / t);
  const e = Array.from(xs, (x) => Math.exp(x / t - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** Zero-shot confidences of one image embedding against the vocabulary's text embeddings. */
export function zeroShotConfidence(image: ArrayLike<number>, vocabulary: ArrayLike<number>[], temperature = 0.01): number[] {
  return softmax(vocabulary.map((t) => cosine(image, t)), temperature);
}

/** Tags from (label, score) pairs: best score per label, >= tau, highest first (ties by label). */
export function toTags(pairs: Iterable<Tag>, threshold: number, maxTags = Infinity): Tag[] {
  const best = new Map<string, number>();
  for (const { label, score } of pairs) {
    if (!(score >= threshold)) continue;
    const b = best.get(label);
    if (b === undefined || score > b) best.set(label, score);
  }
  return [...best]
    .map(([label, score]) => ({ label, score }))
    .sort((a, b) => b.score - a.score || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0))
    .slice(0, maxTags);
}

/**
 * The vocabulary's text embeddings, encoded once per bundle (a bundle's vocabulary and prompt do not
 * change); a failed encoding is tried again next time. Held by one tag operator, so a swapped-out bundle
 * is let go with it.
 */
function vocabularyEmbeddings(): (bundle: ModelBundle) => Promise<Float32Array[]> {
  const byBundle = new WeakMap<ModelBundle, Promise<Float32Array[]>>();
  return (bundle) => {
    let p = byBundle.get(bundle);
    if (!p) {
      const { vocabulary, prompt } = bundle.tags;
      p = bundle.text.encode(vocabulary.map((label) => promptFor(prompt, label))).then((es) => {
        if (es.length !== vocabulary.length) throw new Error(`text encoder returned ${es.length} embeddings for ${vocabulary.length} prompts`);
        return es;
      });
      byBundle.set(bundle, p);
      p.catch(() => byBundle.delete(bundle));
    }
    return p;
  };
}

export function tag(options: TagOptions): OperatorFunction<Batch, Batch> {
  const source = options.source ?? 'auto';
  const batchSize = options.batchSize ?? 32;
  const vocabulary = vocabularyEmbeddings();
  return stage('tag', async (batch) => {
    const bundle = resolveBundle(options.bundle, batch);
    const useDetector = source === 'detector' || (source === 'auto' && bundle.detector !== null);
    if (useDetector && !bundle.detector) throw new Error(`tag source 'detector' needs a bundle with a detector (${bundle.version} has none)`);
    const threshold = options.threshold ?? bundle.tags.threshold;
    const maxTags = options.maxTags ?? 10;
    for (const part of chunks(withImages(batch.samples), batchSize)) {
      if (useDetector) await detectorTags(bundle, part, threshold, maxTags);
      else await zeroShotTags(bundle, bundle.tags.vocabulary.length && part.length ? await vocabulary(bundle) : [], part, threshold, maxTags, options.temperature ?? 0.01);
    }
    return batch;
  });
}

function setTags(s: Sample, tags: Tag[]): void {
  s.tags = tags;
  s.scores.tag_confidence = tags[0]?.score ?? 0;
}

async function detectorTags(bundle: ModelBundle, part: ReturnType<typeof withImages>, threshold: number, maxTags: number): Promise<void> {
  const missing = await withInputs(part.filter((s) => s.detections === null), bundle);
  if (missing.length > 0) {
    const found = await callBatched(missing.map((s) => s.image.inputs.detector!), (xs) => bundle.detector!.detect(xs), (ds: Detection[]) => {
      if (!Array.isArray(ds)) throw new Error('detections are not a list');
    });
    missing.forEach((s, i) => {
      const d = found[i];
      if (d instanceof Error) deadLetter(s, 'model_error', `detector: ${oneLine(d)}`);
      else s.detections = d;
    });
  }
  for (const s of part) {
    if (s.outcome.kind !== 'keep') continue;
    setTags(s, toTags((s.detections ?? []).map((d) => ({ label: d.label, score: d.score })), threshold, maxTags));
  }
}

async function zeroShotTags(
  bundle: ModelBundle,
  texts: Float32Array[],
  all: ReturnType<typeof withImages>,
  threshold: number,
  maxTags: number,
  temperature: number,
): Promise<void> {
  const vocab = bundle.tags.vocabulary;
  if (vocab.length === 0 || all.length === 0) {
    for (const s of all) setTags(s, []);
    return;
  }
  const part = await withInputs(all, bundle);
  const grid = bundle.vision.grid;
  const masks = part.map((s) => {
    const p = s.patches;
    if (!p || p.grid.rows !== grid.rows || p.grid.cols !== grid.cols) return null;
    return keepMask(p.kept, grid);
  });
  const idx = part.map((_, i) => i);
  const encoded = await callBatched(
    idx,
    (is) => bundle.vision.encode(is.map((i) => part[i].image.inputs.vision), is.map((i) => masks[i])),
    (o) => assertFiniteVector(o?.embedding, 'image embedding'),
  );
  part.forEach((s, i) => {
    const e = encoded[i];
    if (e instanceof Error) return deadLetter(s, 'model_error', `vision encoder (kept patches): ${oneLine(e)}`);
    const conf = bundle.tags.confidence === 'cosine' ? texts.map((t) => cosine(e.embedding, t)) : zeroShotConfidence(e.embedding, texts, temperature);
    setTags(s, toTags(vocab.map((label, k) => ({ label, score: conf[k] })), threshold, maxTags));
  });
}
