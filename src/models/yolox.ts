/**
 * YOLOX object detector: the pretrained YOLOX-nano COCO export in `../shared/models/yolox_nano`.
 *
 * Input `images` float32 [1, 3, 416, 416]: BGR, 0..255, no mean/std, letterboxed (scale
 * r = min(416 / h, 416 / w), top-left, padded with 114). Output `output` [1, 3549, 85]: one row per
 * anchor point of the three grids (stride 8: 52x52, 16: 26x26, 32: 13x13, each row-major), holding
 * `tx, ty, tw, th, objectness, 80 class scores`. Decoding (YOLOX `demo_postprocess`):
 * cx = (tx + gx) * s, cy = (ty + gy) * s, w = exp(tw) * s, h = exp(th) * s.
 *
 * The export already applies the sigmoid to objectness and class scores (the head's `decode_in_inference`
 * is off but the sigmoid is inside the graph): on real photos those columns lie in [0, 1] with many
 * values at or next to 0, while tx..th are unbounded (about -2..3). So score = objectness * class score,
 * no further sigmoid. `sigmoid: true` in the options covers exports without it.
 *
 * NMS is class-wise (YOLOX `multiclass_nms_class_aware`): every (anchor, class) pair whose score
 * passes the threshold is a candidate, and suppression is per class at IoU `nmsIou`. Boxes are mapped
 * back to the pixels of the EXIF-oriented image by the letterbox scale and clipped to it.
 */
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { preprocessBatch } from './preprocess';
import { checkIo, checkShape, declaredShape, type ModelSession, openSession } from './session';
import type { Box, Detection, ImagePreprocess, ObjectDetector, PreparedImage } from './types';

export const YOLOX_STRIDES = [8, 16, 32] as const;

export interface YoloxOptions {
  scoreThreshold: number;
  nmsIou: number;
  threads: number;
  /** run the model in a worker thread (session.ts) */
  offThread?: boolean;
  /** at most this many detections per image, best first (default 100) */
  maxDetections?: number;
  /** apply a sigmoid to objectness and class scores (for exports that leave them as logits; default false) */
  sigmoid?: boolean;
}

/** A candidate in model-input pixels, corners. */
export interface RawDetection {
  classId: number;
  score: number;
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

/** The anchor grids of a [H, W] input: for each row of the output, its cell (gx, gy) and stride. */
export function yoloxGrids(height: number, width: number, strides: readonly number[] = YOLOX_STRIDES): { gx: Int32Array; gy: Int32Array; stride: Int32Array } {
  let n = 0;
  for (const s of strides) n += Math.floor(height / s) * Math.floor(width / s);
  const gx = new Int32Array(n);
  const gy = new Int32Array(n);
  const stride = new Int32Array(n);
  let k = 0;
  for (const s of strides) {
    const h = Math.floor(height / s);
    const w = Math.floor(width / s);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        gx[k] = x;
        gy[k] = y;
        stride[k++] = s;
      }
    }
  }
  return { gx, gy, stride };
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/**
 * Decodes one image's raw head output ([rows, 5 + classes], row-major) into candidates above
 * `scoreThreshold`, in model-input pixels. Throws when the row count does not match the grids.
 */
export function decodeYolox(
  output: Float32Array,
  inputSize: [number, number],
  numClasses: number,
  opts: { scoreThreshold: number; sigmoid?: boolean },
): RawDetection[] {
  const grids = yoloxGrids(inputSize[0], inputSize[1]);
  const cols = 5 + numClasses;
  const rows = grids.gx.length;
  if (output.length !== rows * cols) {
    throw new Error(`yolox: output has ${output.length} values, expected ${rows} x ${cols} for a ${inputSize[0]}x${inputSize[1]} input and ${numClasses} classes`);
  }
  const act = opts.sigmoid ? sigmoid : (v: number) => v;
  const out: RawDetection[] = [];
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    const obj = act(output[o + 4]);
    if (!(obj > opts.scoreThreshold)) continue; // class scores are at most 1
    const s = grids.stride[i];
    const cx = (output[o] + grids.gx[i]) * s;
    const cy = (output[o + 1] + grids.gy[i]) * s;
    const w = Math.exp(output[o + 2]) * s;
    const h = Math.exp(output[o + 3]) * s;
    for (let c = 0; c < numClasses; c++) {
      const score = obj * act(output[o + 5 + c]);
      if (score > opts.scoreThreshold) out.push({ classId: c, score, x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2 });
    }
  }
  return out;
}

export function iou(a: RawDetection, b: RawDetection): number {
  const iw = Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1);
  const ih = Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  const union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
  return union > 0 ? inter / union : 0;
}

/** Greedy class-wise NMS: within each class, a box is dropped when its IoU with a better kept box exceeds `iouThreshold`. Best first. */
export function nmsByClass(dets: RawDetection[], iouThreshold: number, maxDetections = Infinity): RawDetection[] {
  const sorted = [...dets].sort((a, b) => b.score - a.score);
  const keptByClass = new Map<number, RawDetection[]>();
  const kept: RawDetection[] = [];
  for (const d of sorted) {
    if (kept.length >= maxDetections) break;
    const same = keptByClass.get(d.classId) ?? [];
    if (same.some((k) => iou(k, d) > iouThreshold)) continue;
    same.push(d);
    keptByClass.set(d.classId, same);
    kept.push(d);
  }
  return kept;
}

/** Maps a model-pixel box back to the source image (letterbox: divide by the scale) and clips it; [x, y, w, h]. */
export function toSourceBox(d: RawDetection, meta: { width: number; height: number; scale: number; scaleY: number; padX: number; padY: number }): Box {
  const x1 = Math.min(Math.max((d.x1 - meta.padX) / meta.scale, 0), meta.width);
  const y1 = Math.min(Math.max((d.y1 - meta.padY) / meta.scaleY, 0), meta.height);
  const x2 = Math.min(Math.max((d.x2 - meta.padX) / meta.scale, 0), meta.width);
  const y2 = Math.min(Math.max((d.y2 - meta.padY) / meta.scaleY, 0), meta.height);
  return [x1, y1, x2 - x1, y2 - y1];
}

export class YoloxDetector implements ObjectDetector {
  private constructor(
    private readonly session: ModelSession,
    readonly labels: string[],
    readonly inputSize: [number, number],
    private readonly opts: YoloxOptions,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {}

  /** the preprocessing of this detector's input size */
  get preprocess(): ImagePreprocess {
    return YoloxDetector.preprocess(this.inputSize);
  }

  static preprocess(size: [number, number] = [416, 416]): ImagePreprocess {
    return { size, resize: 'letterbox', mean: [0, 0, 0], std: [1, 1, 1], channels: 'BGR', scale: 255, pad: 114 };
  }

  static async load(onnxPath: string, classesPath: string, opts: YoloxOptions): Promise<YoloxDetector> {
    const labels = (await readFile(classesPath, 'utf8'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
    if (labels.length === 0) throw new Error(`${classesPath}: no class names`);
    const where = onnxPath.split(/[\\/]/).pop() ?? onnxPath;
    const session = await openSession(onnxPath, { threads: opts.threads, offThread: opts.offThread });
    try {
      const inputName = session.inputNames[0];
      const outputName = session.outputNames[0];
      if (!inputName || !outputName) throw new Error(`${where}: a YOLOX model needs one input and one output`);
      checkIo(session, { inputs: [inputName], outputs: [outputName] }, where);
      checkShape(session, inputName, 'input', { dims: [null, 3, null, null], types: ['float32'] }, where);
      checkShape(session, outputName, 'output', { dims: [null, null, 5 + labels.length] }, where);
      const shape = declaredShape(session, inputName, 'input')?.shape ?? [];
      const h = typeof shape[2] === 'number' && shape[2] > 0 ? shape[2] : 416;
      const w = typeof shape[3] === 'number' && shape[3] > 0 ? shape[3] : 416;
      return new YoloxDetector(session, labels, [h, w], opts, inputName, outputName);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** Detections for each prepared image, best first, boxes in the pixels of the oriented image. */
  async detect(images: PreparedImage[]): Promise<Detection[][]> {
    const p = YoloxDetector.preprocess(this.inputSize);
    const [H, W] = this.inputSize;
    const results: Detection[][] = [];
    // the export has a static batch of 1: one run per image
    for (const img of images) {
      const { tensor, metas } = preprocessBatch([img], p);
      const out = await this.session.run({ [this.inputName]: new ort.Tensor('float32', tensor, [1, 3, H, W]) });
      const raw = out[this.outputName].data as Float32Array;
      const cands = decodeYolox(raw, this.inputSize, this.labels.length, this.opts);
      const kept = nmsByClass(cands, this.opts.nmsIou, this.opts.maxDetections ?? 100);
      results.push(kept.map((d) => ({ label: this.labels[d.classId], score: d.score, box: toSourceBox(d, metas[0]) })));
    }
    return results;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
