/**
 * What the model stages (embed, tag) share: where the bundle comes from, chunking kept samples into
 * model batches, and isolating the one bad input when a batched model call fails.
 */
import { prepareImage, preprocessKey } from '../models/preprocess';
import type { ImagePreprocess, ModelBundle, PreparedImage } from '../models/types';
import { type Batch, isKept, deadLetter, type ModelInputs, type ModelNeeds, oneLine, type Sample } from './sample';

/** A bundle, or a function giving the bundle a batch is processed with (hot reload between batches). */
export type BundleSource = ModelBundle | ((batch: Batch) => ModelBundle);

export const resolveBundle = (b: BundleSource, batch: Batch): ModelBundle => (typeof b === 'function' ? b(batch) : b);

/** Kept samples that carry a decoded image, in batch order. */
export const withImages = (samples: Sample[]): (Sample & { image: NonNullable<Sample['image']> })[] =>
  samples.filter((s): s is Sample & { image: NonNullable<Sample['image']> } => isKept(s) && s.image !== null);

/** The inputs a bundle's models need prepared. */
export const modelNeeds = (bundle: ModelBundle): ModelNeeds => ({ vision: bundle.vision.preprocess, detector: bundle.detector?.preprocess ?? null });

type ImageSample = Sample & { image: NonNullable<Sample['image']> };

/**
 * Makes sure each sample's `image.inputs` are what `bundle`'s models need: the ones decodeImage prepared,
 * or prepared again from the stored bytes when they are missing or were made for another preprocessing
 * (a bundle swapped in between decodeImage and the model stages). A sample whose image cannot be
 * prepared is dead-lettered (`decode_error`). Returns the samples that have their inputs.
 */
export async function withInputs<S extends ImageSample>(part: S[], bundle: ModelBundle): Promise<(S & { image: { inputs: ModelInputs } })[]> {
  const needs = modelNeeds(bundle);
  const fit = (have: PreparedImage | null | undefined, p: ImagePreprocess | null, bytes: Buffer): Promise<PreparedImage | null> | PreparedImage | null => {
    if (p === null) return null;
    return have && have.key === preprocessKey(p) ? have : prepareImage(bytes, p);
  };
  await Promise.all(
    part.map(async (s) => {
      const img = s.image;
      try {
        const vision = await fit(img.inputs?.vision, needs.vision, img.bytes);
        const detector = await fit(img.inputs?.detector, needs.detector, img.bytes);
        img.inputs = { vision: vision!, detector };
      } catch (e) {
        deadLetter(s, 'decode_error', `cannot prepare the image for the models: ${oneLine(asError(e))}`);
      }
    }),
  );
  return part.filter((s): s is S & { image: { inputs: ModelInputs } } => isKept(s) && s.image.inputs !== null);
}

export function chunks<T>(xs: T[], size: number): T[][] {
  const n = Math.max(1, Math.floor(size));
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/**
 * Calls a batched model function once for all `items`. If that call throws or returns the wrong
 * number of results, calls it again item by item so one bad input fails only itself. `check` runs on
 * every result and throws for an unusable one. Returns a result or an Error per item, in order.
 */
export async function callBatched<I, O>(
  items: I[],
  fn: (xs: I[]) => Promise<O[]>,
  check: (o: O) => void = () => undefined,
): Promise<(O | Error)[]> {
  if (items.length === 0) return [];
  const checked = (o: O): O | Error => {
    try {
      check(o);
      return o;
    } catch (e) {
      return asError(e);
    }
  };
  try {
    const out = await fn(items);
    if (!Array.isArray(out) || out.length !== items.length) {
      throw new Error(`model returned ${Array.isArray(out) ? out.length : 'no'} results for ${items.length} inputs`);
    }
    return out.map(checked);
  } catch (e) {
    if (items.length === 1) return [asError(e)];
  }
  const one: (O | Error)[] = [];
  for (const item of items) {
    try {
      const out = await fn([item]);
      one.push(Array.isArray(out) && out.length === 1 ? checked(out[0]) : new Error('model returned no result'));
    } catch (e) {
      one.push(asError(e));
    }
  }
  return one;
}

export const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

export function assertFiniteVector(v: unknown, what: string, length?: number): void {
  if (!(v instanceof Float32Array) && !Array.isArray(v)) throw new Error(`${what} is not a vector`);
  const a = v as ArrayLike<number>;
  if (a.length === 0) throw new Error(`${what} is empty`);
  if (length !== undefined && a.length !== length) throw new Error(`${what} has ${a.length} values, expected ${length}`);
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw new Error(`${what} has a non-finite value`);
}

/** Cosine similarity; 0 when either vector is zero or their lengths differ. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return 0;
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}
