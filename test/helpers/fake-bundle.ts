/**
 * A deterministic ModelBundle for operator tests. An "image" is JSON bytes describing what it shows
 * (the sample's stored bytes and, as decodeImage would prepare them, its model inputs' data):
 * objects (label, patch, box, detector score), optional saliency, and `fail` to make every model call
 * that includes it throw (as a real runtime fails a whole batch).
 *
 * Embeddings live in a space with one axis per vocabulary label plus a background axis. The image
 * embedding is the normalised sum of the axes of the objects on kept patches (plus a little background);
 * a text embedding sums the axes of the labels it mentions (background when none).
 */
import type { Detection, ImageEncoding, ImagePreprocess, ModelBundle, PatchGrid, PreparedImage } from '../../src/models/types';
import { preprocessKey } from '../../src/models/preprocess';
import { keptSample } from './samples';
import type { Sample } from '../../src/operators/sample';

export interface FakeObject {
  label: string;
  patch: number;
  box?: [number, number, number, number];
  score?: number;
}

export interface FakeImage {
  objects: FakeObject[];
  saliency?: number[];
  fail?: boolean;
}

export const fakeImage = (spec: FakeImage): Buffer => Buffer.from(JSON.stringify(spec));

/** The fake models' preprocessing: only its key matters (the prepared data is the JSON itself). */
export const FAKE_PREPROCESS: ImagePreprocess = { size: [4, 4], resize: 'squash', mean: [0, 0, 0], std: [1, 1, 1], channels: 'RGB', scale: 1 };

const prepared = (bytes: Buffer): PreparedImage => ({ key: preprocessKey(FAKE_PREPROCESS), data: bytes, width: 64, height: 64 });

export interface FakeCalls {
  vision: { n: number; keep: (Uint8Array | null)[] | undefined }[];
  text: string[][];
  detect: number[];
}

export interface FakeBundle extends ModelBundle {
  calls: FakeCalls;
}

export function fakeBundle(o: { vocabulary?: string[]; grid?: PatchGrid; detector?: boolean; threshold?: number; confidence?: 'softmax' | 'cosine' } = {}): FakeBundle {
  const vocabulary = o.vocabulary ?? ['star', 'ring', 'moon', 'heart'];
  const grid = o.grid ?? { rows: 4, cols: 4 };
  const P = grid.rows * grid.cols;
  const dim = vocabulary.length + 1;
  const calls: FakeCalls = { vision: [], text: [], detect: [] };
  const axis = (label: string): number => {
    const i = vocabulary.indexOf(label);
    return i < 0 ? dim - 1 : i;
  };
  const normalise = (v: Float32Array): Float32Array => {
    const n = Math.hypot(...v);
    return n > 0 ? v.map((x) => x / n) : v;
  };
  const parse = (img: PreparedImage): FakeImage => {
    const spec = JSON.parse(img.data.toString('utf8')) as FakeImage;
    if (spec.fail) throw new Error('fake runtime: cannot run this image');
    return spec;
  };
  const encodeOne = (spec: FakeImage, keep: Uint8Array | null): ImageEncoding => {
    const v = new Float32Array(dim);
    v[dim - 1] = 0.2;
    for (const ob of spec.objects) if (!keep || keep[ob.patch]) v[axis(ob.label)] += 1;
    const sal = new Float32Array(P).fill(0.01);
    if (spec.saliency) spec.saliency.forEach((x, j) => (sal[j] = x));
    else spec.objects.forEach((ob, k) => (sal[ob.patch] += 1 + (spec.objects.length - k) * 0.1));
    const sum = sal.reduce((a, b) => a + b, 0);
    return { embedding: normalise(v), saliency: sal.map((x) => x / sum) };
  };
  return {
    version: 'fake-1',
    calls,
    tags: { vocabulary, prompt: 'a photo of a {}', threshold: o.threshold ?? 0.3, confidence: o.confidence ?? 'softmax' },
    vision: {
      grid,
      preprocess: FAKE_PREPROCESS,
      async encode(images: PreparedImage[], keep?: (Uint8Array | null)[]) {
        calls.vision.push({ n: images.length, keep });
        const specs = images.map(parse);
        return specs.map((s, i) => encodeOne(s, keep?.[i] ?? null));
      },
    },
    text: {
      async encode(texts: string[]) {
        calls.text.push(texts);
        return texts.map((t) => {
          const v = new Float32Array(dim);
          for (const label of vocabulary) if (new RegExp(`\\b${label}s?\\b`, 'i').test(t)) v[axis(label)] = 1;
          if (v.every((x) => x === 0)) v[dim - 1] = 1;
          return normalise(v);
        });
      },
    },
    detector: o.detector
      ? {
          preprocess: FAKE_PREPROCESS,
          async detect(images: PreparedImage[]): Promise<Detection[][]> {
            calls.detect.push(images.length);
            return images.map(parse).map((s) =>
              s.objects.map((ob) => ({ label: ob.label, score: ob.score ?? 0.9, box: ob.box ?? [0, 0, 1, 1] })),
            );
          },
        }
      : null,
    async close() {},
  };
}

/** A kept sample whose image is the fake image `spec`. */
export function fakeSample(offset: number, spec: FakeImage, caption = `image ${offset}`): Sample {
  const s = keptSample(offset);
  s.caption = caption;
  s.event!.caption = caption;
  s.image!.bytes = fakeImage(spec);
  s.image!.inputs = { vision: prepared(s.image!.bytes), detector: prepared(s.image!.bytes) };
  return s;
}
