/**
 * embed: the one model pass of the chain. Per model batch it calls the vision encoder once, the text
 * encoder once and, when the bundle has one, the object detector once, on the inputs decodeImage prepared
 * (`s.image.inputs`), and stores on each sample what
 * every later stage reuses: `s.model` (image and text embeddings, per-patch saliency and its grid),
 * `s.detections`, and `s.scores.clip_score` (cosine of the two embeddings).
 *
 * A model error that belongs to one image (the batched call fails, then that image fails alone, or its
 * output is unusable) dead-letters that sample with `model_error`; the rest of the batch goes on.
 *
 * @example
 * batches$.pipe(decodeImage(...), dedupExact(...), embed({ bundle, batchSize: 32 }))
 */
import type { OperatorFunction } from 'rxjs';
import type { Detection, ImageEncoding, ModelBundle } from '../models/types';
import {
  assertFiniteVector,
  type BundleSource,
  callBatched,
  chunks,
  cosine,
  resolveBundle,
  withImages,
  withInputs,
} from './model-calls';
import { type Batch, deadLetter, oneLine, type Sample } from './sample';
import { stage } from './stage';

export interface EmbedOptions {
  /** the model bundle, or a function returning the current one (read once per batch) */
  bundle: BundleSource;
  /** most images per model call; default 32 */
  batchSize?: number;
  /** run the bundle's detector here too (default true when it has one) */
  detect?: boolean;
}

export function embed(options: EmbedOptions): OperatorFunction<Batch, Batch> {
  const batchSize = options.batchSize ?? 32;
  return stage('embed', async (batch) => {
    const bundle = resolveBundle(options.bundle, batch);
    for (const part of chunks(withImages(batch.samples), batchSize)) await embedChunk(bundle, await withInputs(part, bundle), options.detect ?? true);
    return batch;
  });
}

async function embedChunk(bundle: ModelBundle, part: Awaited<ReturnType<typeof withInputs>>, detect: boolean): Promise<void> {
  const grid = { rows: bundle.vision.grid.rows, cols: bundle.vision.grid.cols };
  const patches = grid.rows * grid.cols;
  const detector = detect ? bundle.detector : null;
  const [vision, text, boxes] = await Promise.all([
    callBatched(part.map((s) => s.image.inputs.vision), (xs) => bundle.vision.encode(xs), (o: ImageEncoding) => {
      assertFiniteVector(o?.embedding, 'image embedding');
      assertFiniteVector(o.saliency, 'saliency', patches);
    }),
    callBatched(
      part.map((s) => s.caption),
      (xs) => bundle.text.encode(xs),
      (o: Float32Array) => assertFiniteVector(o, 'text embedding'),
    ),
    detector ? callBatched(part.map((s) => s.image.inputs.detector!), (xs) => detector.detect(xs), checkDetections) : Promise.resolve(null),
  ]);
  part.forEach((s: Sample, i) => {
    const v = vision[i];
    const t = text[i];
    const d = boxes ? boxes[i] : null;
    if (v instanceof Error) return deadLetter(s, 'model_error', `vision encoder: ${oneLine(v)}`);
    if (t instanceof Error) return deadLetter(s, 'model_error', `text encoder: ${oneLine(t)}`);
    if (d instanceof Error) return deadLetter(s, 'model_error', `detector: ${oneLine(d)}`);
    if (v.embedding.length !== t.length) {
      return deadLetter(s, 'model_error', `image embedding has ${v.embedding.length} values, text embedding ${t.length}`);
    }
    s.model = {
      imageEmbedding: Float32Array.from(v.embedding),
      textEmbedding: Float32Array.from(t),
      saliency: Float32Array.from(v.saliency),
      grid,
    };
    s.scores.clip_score = cosine(s.model.imageEmbedding, s.model.textEmbedding);
    if (d) s.detections = d.map((x) => ({ label: x.label, score: x.score, box: [...x.box] as Detection['box'] }));
  });
}

function checkDetections(ds: Detection[]): void {
  if (!Array.isArray(ds)) throw new Error('detections are not a list');
  for (const d of ds) {
    if (typeof d?.label !== 'string' || !Number.isFinite(d.score) || !Array.isArray(d.box) || d.box.length !== 4 || !d.box.every(Number.isFinite)) {
      throw new Error('detection is malformed');
    }
  }
}
