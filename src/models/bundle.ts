/**
 * The model bundle loader. A bundle is a directory with a `bundle.json` (format
 * `squeeze-bundle/1`) naming the image encoder, the text encoder and its tokenizer, an optional
 * detector and the tag vocabulary. Paths in it are relative to the bundle directory or absolute.
 *
 * Image encoders:
 * - `attention-pool` (the built-in CLIP): outputs `embeds` [N, E] and `attention` [N, P], the pooling
 *   weights over the P = rows * cols patches, which are the saliency (clamped at 0, renormalised to
 *   sum 1). An optional `mask` input float32 [N, P] (1 keep, 0 drop) takes the keep mask (all ones
 *   without one); a model without it gets the dropped patches blanked in the pixels instead.
 * - `clip` (a real CLIP vision export, e.g. HF `CLIPVisionModelWithProjection` as `vision_model.onnx`):
 *   outputs `embeds` (`image_embeds` [N, E]) and `hidden` (`last_hidden_state` [N, 1 + P, D], CLS
 *   first). Saliency from the patch tokens: with m the mean patch token, s_j = cos(cls - m, patch_j - m)
 *   and saliency = softmax_j(s_j / 0.1). Removing m takes out the component every token shares (ViT
 *   tokens share a large common direction, so raw cosines are all close to 1 and the map would be
 *   flat); what is left ranks the patches whose content the CLS summary is made of. Keep masks blank
 *   the dropped patches (the preprocess mean, 0 after normalisation) before the run.
 * With a keep mask, dropped patches get saliency 0 and the rest is renormalised. Embeddings are always
 * L2-normalised.
 *
 * Text encoders take `ids` int64 (or int32, as the model declares) [N, context] and an optional
 * `mask` of the same type and shape (1 token, 0 pad); output `embeds` [N, E].
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { z } from 'zod';
import { ClipTokenizer } from './clip-tokenizer';
import { preprocessBatch } from './preprocess';
import { checkIo, checkShape, declaredShape, type ModelSession, openSession } from './session';
import type { ImageEncoding, ImagePreprocess, ModelBundle, ObjectDetector, PatchGrid, PreparedImage, TextEncoder, VisionEncoder } from './types';
import { WordTokenizer, type Tokenizer } from './word-tokenizer';
import { YoloxDetector } from './yolox';

export const BUNDLE_FORMAT = 'squeeze-bundle/1';
/** temperature of the CLS-patch cosine softmax for `clip` saliency */
export const CLIP_SALIENCY_TEMPERATURE = 0.1;

const positiveInt = z.number().int().positive();
const relPath = z.string().min(1);

const PreprocessSchema = z
  .object({
    size: z.tuple([positiveInt, positiveInt]),
    resize: z.enum(['squash', 'shortest-crop', 'letterbox']),
    mean: z.tuple([z.number(), z.number(), z.number()]),
    std: z.tuple([z.number().positive(), z.number().positive(), z.number().positive()]),
    channels: z.enum(['RGB', 'BGR']),
    scale: z.union([z.literal(1), z.literal(255)]),
    pad: z.number().min(0).max(255).optional(),
  })
  .strict();

const VisionSchema = z
  .object({
    onnx: relPath,
    kind: z.enum(['attention-pool', 'clip']),
    preprocess: PreprocessSchema,
    grid: z.object({ rows: positiveInt, cols: positiveInt }).strict(),
    inputs: z.object({ pixels: z.string().min(1), mask: z.string().min(1).optional() }).strict(),
    outputs: z.object({ embeds: z.string().min(1), attention: z.string().min(1).optional(), hidden: z.string().min(1).optional() }).strict(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.kind === 'attention-pool' && !v.outputs.attention) ctx.addIssue({ code: 'custom', path: ['outputs', 'attention'], message: 'required for kind "attention-pool"' });
    if (v.kind === 'clip' && !v.outputs.hidden) ctx.addIssue({ code: 'custom', path: ['outputs', 'hidden'], message: 'required for kind "clip"' });
    if (v.kind === 'clip' && v.inputs.mask) ctx.addIssue({ code: 'custom', path: ['inputs', 'mask'], message: 'kind "clip" takes no mask input (dropped patches are blanked)' });
  });

const TokenizerSchema = z
  .discriminatedUnion('kind', [
  z.object({ kind: z.literal('words'), vocab: relPath, context: positiveInt }).strict(),
  z
    .object({
      kind: z.literal('clip-bpe'),
      file: relPath.optional(),
      vocab: relPath.optional(),
      merges: relPath.optional(),
      context: z.number().int().min(2).default(77),
      padId: z.number().int().min(0).optional(),
    })
    .strict(),
  ])
  .superRefine((t, ctx) => {
    if (t.kind === 'clip-bpe' && (t.file ? t.vocab || t.merges : !(t.vocab && t.merges))) {
      ctx.addIssue({ code: 'custom', path: ['file'], message: 'give either "file" (tokenizer.json) or both "vocab" and "merges"' });
    }
  });

const TextSchema = z
  .object({
    onnx: relPath,
    tokenizer: TokenizerSchema,
    inputs: z.object({ ids: z.string().min(1), mask: z.string().min(1).optional() }).strict(),
    outputs: z.object({ embeds: z.string().min(1) }).strict(),
  })
  .strict();

const DetectorSchema = z
  .object({
    kind: z.literal('yolox'),
    onnx: relPath,
    classes: relPath,
    scoreThreshold: z.number().min(0).max(1).default(0.35),
    nmsIou: z.number().min(0).max(1).default(0.45),
    maxDetections: positiveInt.optional(),
  })
  .strict();

const TagsSchema = z
  .object({
    vocabulary: z.array(z.string().min(1)),
    prompt: z.string().includes('{}', { message: 'must contain "{}" where the tag goes' }).default('a photo of a {}'),
    threshold: z.number().default(0.25),
    /**
     * what `threshold` is compared with in zero-shot tagging: `softmax` (CLIP's zero-shot probability over
     * the vocabulary, temperature 0.01) or `cosine` (the raw cosine of image and prompt, independent per
     * class; what the built-in bundle's threshold is calibrated on)
     */
    confidence: z.enum(['softmax', 'cosine']).default('softmax'),
  })
  .strict();

/**
 * What the bundle's builder measured on its calibration split, for the curator to use: clip_score's
 * distribution (mixing statistics), the confidence enrichment needs, and the domain check's floor.
 */
const CalibrationSchema = z
  .object({
    clipScore: z
      .object({ auc: z.number(), trueMean: z.number(), trueStd: z.number(), mismatchedMean: z.number(), mismatchedStd: z.number(), pairs: z.number().int() })
      .strict()
      .optional(),
    enrich: z.object({ threshold: z.number().min(0).max(1), precision: z.number(), added: z.number().int() }).strict().optional(),
    domain: z
      .object({
        statistic: z.literal('tag_confidence'),
        floor: z.number(),
        expectedShare: z.number().min(0).max(1),
        warnShare: z.number().min(0).max(1),
        window: positiveInt,
      })
      .strict()
      .optional(),
    mix: z
      .object({
        weights: z.record(z.number()),
        stats: z.record(z.object({ mean: z.number(), std: z.number().positive() }).strict()),
      })
      .strict()
      .optional(),
    softCap: z.object({ alpha: z.number().positive(), mode: z.enum(['faithful', 'systematic']), tpr: z.number().optional(), fpr: z.number().optional() }).strict().optional(),
    dedup: z
      .object({
        confirm: z.enum(['embeddings', 'thumbnails']),
        eps: z.number().min(0).max(2),
        embeddingRecall: z.number().optional(),
        distinctMaxCosine: z.number().optional(),
        maxThumbDistance: z.number().positive().optional(),
        thumbRecall: z.number().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type BundleCalibration = z.infer<typeof CalibrationSchema>;

/** bundle.json. Unknown top-level keys are allowed (provenance, training notes); inside the sections they are errors. */
export const BundleSchema = z
  .object({
    format: z.literal(BUNDLE_FORMAT),
    version: z.string().min(1),
    vision: VisionSchema,
    text: TextSchema,
    detector: DetectorSchema.nullable().default(null),
    tags: TagsSchema.default({ vocabulary: [] }),
    calibration: CalibrationSchema.default({}),
  })
  .passthrough();

export type BundleSpec = z.infer<typeof BundleSchema>;

/** Validates a parsed bundle.json; throws one line `where: vision.preprocess.size: ...`. */
export function parseBundleSpec(json: unknown, where = 'bundle.json'): BundleSpec {
  const parsed = BundleSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue.path.length ? issue.path.join('.') : '(root)';
  const more = parsed.error.issues.length > 1 ? ` (and ${parsed.error.issues.length - 1} more)` : '';
  return fail(`${where}: ${field}: ${issue.message}${more}`);
}

function fail(message: string): never {
  throw new Error(message);
}

/** Resolves a path of bundle.json; `shown` is how errors name it (relative to the bundle dir's given path). */
function bundleFile(dir: string, p: string, field: string): { path: string; shown: string } {
  const shown = isAbsolute(p) ? p : join(dir, p);
  const path = isAbsolute(p) ? p : resolve(dir, p);
  if (!existsSync(path) || !statSync(path).isFile()) fail(`${shown} is missing (${field} in ${join(dir, 'bundle.json')})`);
  return { path, shown };
}

function l2normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  const n = Math.sqrt(s);
  if (n > 0) for (let i = 0; i < v.length; i++) v[i] /= n;
  return v;
}

/** Rows of a [N, E] tensor, each copied and L2-normalised. */
function rowsOf(t: ort.Tensor, n: number, where: string, name: string): Float32Array[] {
  if (t.dims.length !== 2 || t.dims[0] !== n) fail(`${where}: output "${name}" has shape [${t.dims.join(', ')}], expected [${n}, E]`);
  const e = t.dims[1];
  const data = t.data as Float32Array;
  return Array.from({ length: n }, (_, i) => l2normalise(data.slice(i * e, (i + 1) * e)));
}

/** Clamps at 0, zeroes dropped patches, renormalises to sum 1 (uniform over the kept ones when nothing is left). */
export function normaliseSaliency(values: ArrayLike<number>, keep?: Uint8Array | null): Float32Array {
  const out = new Float32Array(values.length);
  let sum = 0;
  for (let j = 0; j < values.length; j++) {
    const v = keep && !keep[j] ? 0 : Math.max(0, Number.isFinite(values[j]) ? values[j] : 0);
    out[j] = v;
    sum += v;
  }
  if (sum > 0) {
    for (let j = 0; j < out.length; j++) out[j] /= sum;
    return out;
  }
  let kept = 0;
  for (let j = 0; j < out.length; j++) kept += !keep || keep[j] ? 1 : 0;
  for (let j = 0; j < out.length; j++) out[j] = kept && (!keep || keep[j]) ? 1 / kept : 0;
  if (!kept) out.fill(1 / out.length);
  return out;
}

/**
 * Saliency of a real CLIP export from one image's tokens ([1 + P, D], CLS first): softmax over the
 * patches of cos(cls - m, patch_j - m) / temperature, m the mean patch token.
 */
export function clipPatchSaliency(tokens: Float32Array, patches: number, dim: number, temperature = CLIP_SALIENCY_TEMPERATURE): Float32Array {
  const mean = new Float64Array(dim);
  for (let j = 1; j <= patches; j++) for (let d = 0; d < dim; d++) mean[d] += tokens[j * dim + d];
  for (let d = 0; d < dim; d++) mean[d] /= patches;
  const cls = new Float64Array(dim);
  let cn = 0;
  for (let d = 0; d < dim; d++) {
    cls[d] = tokens[d] - mean[d];
    cn += cls[d] * cls[d];
  }
  cn = Math.sqrt(cn);
  const logits = new Float64Array(patches);
  let max = -Infinity;
  for (let j = 0; j < patches; j++) {
    let dot = 0;
    let pn = 0;
    const o = (j + 1) * dim;
    for (let d = 0; d < dim; d++) {
      const p = tokens[o + d] - mean[d];
      dot += cls[d] * p;
      pn += p * p;
    }
    const cos = cn > 1e-12 && pn > 1e-12 ? dot / (cn * Math.sqrt(pn)) : 0;
    logits[j] = cos / temperature;
    if (logits[j] > max) max = logits[j];
  }
  const out = new Float32Array(patches);
  let sum = 0;
  for (let j = 0; j < patches; j++) {
    const e = Math.exp(logits[j] - max);
    out[j] = e;
    sum += e;
  }
  for (let j = 0; j < patches; j++) out[j] /= sum;
  return out;
}

/** Sets the pixels of dropped patches to 0 (the preprocess mean after normalisation) in a [3, H, W] slice. */
export function blankPatches(tensor: Float32Array, offset: number, size: [number, number], grid: PatchGrid, keep: Uint8Array): void {
  const [H, W] = size;
  for (let r = 0; r < grid.rows; r++) {
    const y0 = Math.floor((r * H) / grid.rows);
    const y1 = Math.floor(((r + 1) * H) / grid.rows);
    for (let c = 0; c < grid.cols; c++) {
      if (keep[r * grid.cols + c]) continue;
      const x0 = Math.floor((c * W) / grid.cols);
      const x1 = Math.floor(((c + 1) * W) / grid.cols);
      for (let ch = 0; ch < 3; ch++) {
        for (let y = y0; y < y1; y++) {
          const row = offset + ch * H * W + y * W;
          tensor.fill(0, row + x0, row + x1);
        }
      }
    }
  }
}

/** The largest batch a model accepts: its static first dim, or unlimited. */
function batchLimit(session: ModelSession, input: string): number {
  const d = declaredShape(session, input, 'input')?.shape[0];
  return typeof d === 'number' && d > 0 ? d : Infinity;
}

/** Every input the model has must be one bundle.json names. */
function checkNoExtraInputs(session: ModelSession, named: string[], where: string): void {
  const extra = session.inputNames.filter((n) => !named.includes(n));
  if (extra.length) fail(`${where}: the model has input "${extra[0]}" that bundle.json does not name`);
}

class OnnxVisionEncoder implements VisionEncoder {
  readonly grid: PatchGrid;
  readonly preprocess: ImagePreprocess;
  private readonly patches: number;
  private readonly maxBatch: number;

  constructor(
    private readonly session: ModelSession,
    private readonly spec: BundleSpec['vision'],
    private readonly where: string,
  ) {
    this.grid = { rows: spec.grid.rows, cols: spec.grid.cols };
    this.preprocess = spec.preprocess;
    this.patches = spec.grid.rows * spec.grid.cols;
    this.maxBatch = batchLimit(session, spec.inputs.pixels);
  }

  static check(session: ModelSession, v: BundleSpec['vision'], where: string): void {
    const P = v.grid.rows * v.grid.cols;
    const [H, W] = v.preprocess.size;
    const inputs = [v.inputs.pixels, ...(v.inputs.mask ? [v.inputs.mask] : [])];
    const outputs = [v.outputs.embeds, ...(v.kind === 'clip' ? [v.outputs.hidden!] : [v.outputs.attention!])];
    checkIo(session, { inputs, outputs }, where);
    checkNoExtraInputs(session, inputs, where);
    checkShape(session, v.inputs.pixels, 'input', { dims: [null, 3, H, W], types: ['float32'], show: `[N, 3, ${H}, ${W}]` }, where);
    if (v.inputs.mask) checkShape(session, v.inputs.mask, 'input', { dims: [null, P], types: ['float32'], show: `[N, ${P}]` }, where);
    checkShape(session, v.outputs.embeds, 'output', { dims: [null, null], types: ['float32'], show: '[N, E]' }, where);
    if (v.kind === 'clip') checkShape(session, v.outputs.hidden!, 'output', { dims: [null, 1 + P, null], types: ['float32'], show: `[N, ${1 + P}, D]` }, where);
    else checkShape(session, v.outputs.attention!, 'output', { dims: [null, P], types: ['float32'], show: `[N, ${P}]` }, where);
  }

  async encode(images: PreparedImage[], keep?: (Uint8Array | null)[]): Promise<ImageEncoding[]> {
    if (keep && keep.length !== images.length) fail(`${this.where}: ${keep.length} keep masks for ${images.length} images`);
    for (const k of keep ?? []) if (k && k.length !== this.patches) fail(`${this.where}: a keep mask has ${k.length} entries, the grid has ${this.patches} patches`);
    const out: ImageEncoding[] = [];
    const step = Math.min(this.maxBatch, Math.max(1, images.length));
    for (let i = 0; i < images.length; i += step) {
      out.push(...(await this.run(images.slice(i, i + step), keep?.slice(i, i + step))));
    }
    return out;
  }

  private async run(images: PreparedImage[], keep?: (Uint8Array | null)[]): Promise<ImageEncoding[]> {
    const v = this.spec;
    const p: ImagePreprocess = v.preprocess;
    const n = images.length;
    const P = this.patches;
    const per = 3 * p.size[0] * p.size[1];
    const { tensor, dims } = preprocessBatch(images, p);
    const feeds: Record<string, ort.Tensor> = {};
    if (v.inputs.mask) {
      const mask = new Float32Array(n * P).fill(1);
      keep?.forEach((k, i) => {
        if (k) for (let j = 0; j < P; j++) mask[i * P + j] = k[j] ? 1 : 0;
      });
      feeds[v.inputs.mask] = new ort.Tensor('float32', mask, [n, P]);
    } else {
      keep?.forEach((k, i) => {
        if (k) blankPatches(tensor, i * per, p.size, this.grid, k);
      });
    }
    feeds[v.inputs.pixels] = new ort.Tensor('float32', tensor, dims);
    const res = await this.session.run(feeds);
    const embeds = rowsOf(res[v.outputs.embeds], n, this.where, v.outputs.embeds);
    const saliency: Float32Array[] = [];
    if (v.kind === 'clip') {
      const h = res[v.outputs.hidden!];
      if (h.dims.length !== 3 || h.dims[0] !== n || h.dims[1] !== 1 + P) {
        fail(`${this.where}: output "${v.outputs.hidden}" has shape [${h.dims.join(', ')}], expected [${n}, ${1 + P}, D] for a ${v.grid.rows}x${v.grid.cols} grid`);
      }
      const D = h.dims[2];
      const data = h.data as Float32Array;
      for (let i = 0; i < n; i++) {
        const s = clipPatchSaliency(data.subarray(i * (1 + P) * D, (i + 1) * (1 + P) * D), P, D);
        saliency.push(keep?.[i] ? normaliseSaliency(s, keep[i]) : s);
      }
    } else {
      const a = res[v.outputs.attention!];
      if (a.dims.length !== 2 || a.dims[0] !== n || a.dims[1] !== P) fail(`${this.where}: output "${v.outputs.attention}" has shape [${a.dims.join(', ')}], expected [${n}, ${P}]`);
      const data = a.data as Float32Array;
      for (let i = 0; i < n; i++) saliency.push(normaliseSaliency(data.subarray(i * P, (i + 1) * P), keep?.[i]));
    }
    return embeds.map((embedding, i) => ({ embedding, saliency: saliency[i] }));
  }
}

class OnnxTextEncoder implements TextEncoder {
  private readonly idsType: 'int64' | 'int32';
  private readonly maskType: 'int64' | 'int32';
  private readonly maxBatch: number;

  constructor(
    private readonly session: ModelSession,
    private readonly spec: BundleSpec['text'],
    readonly tokenizer: Tokenizer,
    private readonly where: string,
  ) {
    const it = (name?: string) => (name && declaredShape(session, name, 'input')?.type === 'int32' ? 'int32' : 'int64');
    this.idsType = it(spec.inputs.ids);
    this.maskType = it(spec.inputs.mask);
    this.maxBatch = batchLimit(session, spec.inputs.ids);
  }

  static check(session: ModelSession, t: BundleSpec['text'], context: number, where: string): void {
    const inputs = [t.inputs.ids, ...(t.inputs.mask ? [t.inputs.mask] : [])];
    checkIo(session, { inputs, outputs: [t.outputs.embeds] }, where);
    checkNoExtraInputs(session, inputs, where);
    for (const name of inputs) checkShape(session, name, 'input', { dims: [null, context], types: ['int64', 'int32'], show: `[N, ${context}]` }, where);
    checkShape(session, t.outputs.embeds, 'output', { dims: [null, null], types: ['float32'], show: '[N, E]' }, where);
  }

  async encode(texts: string[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    const step = Math.min(this.maxBatch, Math.max(1, texts.length));
    for (let i = 0; i < texts.length; i += step) out.push(...(await this.run(texts.slice(i, i + step))));
    return out;
  }

  private async run(texts: string[]): Promise<Float32Array[]> {
    const n = texts.length;
    const L = this.tokenizer.context;
    const enc = texts.map((t) => this.tokenizer.encode(t));
    const make = (type: 'int64' | 'int32', pick: (e: { ids: number[]; mask: number[] }) => number[]) => {
      if (type === 'int64') {
        const a = new BigInt64Array(n * L);
        enc.forEach((e, i) => pick(e).forEach((v, j) => (a[i * L + j] = BigInt(v))));
        return new ort.Tensor('int64', a, [n, L]);
      }
      const a = new Int32Array(n * L);
      enc.forEach((e, i) => a.set(pick(e), i * L));
      return new ort.Tensor('int32', a, [n, L]);
    };
    const feeds: Record<string, ort.Tensor> = { [this.spec.inputs.ids]: make(this.idsType, (e) => e.ids) };
    if (this.spec.inputs.mask) feeds[this.spec.inputs.mask] = make(this.maskType, (e) => e.mask);
    const res = await this.session.run(feeds);
    return rowsOf(res[this.spec.outputs.embeds], n, this.where, this.spec.outputs.embeds);
  }
}

async function loadTokenizer(dir: string, t: BundleSpec['text']['tokenizer']): Promise<Tokenizer> {
  if (t.kind === 'words') {
    const f = bundleFile(dir, t.vocab, 'text.tokenizer.vocab');
    let vocab: unknown;
    try {
      vocab = JSON.parse(await readFile(f.path, 'utf8'));
    } catch (e) {
      fail(`${f.shown}: not valid JSON (${(e as Error).message})`);
    }
    if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab) || Object.values(vocab).some((v) => !Number.isInteger(v))) {
      fail(`${f.shown}: a words vocabulary must be an object of word -> integer id`);
    }
    return new WordTokenizer(vocab as Record<string, number>, t.context);
  }
  const opts = { context: t.context, padId: t.padId };
  if (t.file) return ClipTokenizer.fromTokenizerJson(bundleFile(dir, t.file, 'text.tokenizer.file').path, opts);
  return ClipTokenizer.fromVocabMerges(bundleFile(dir, t.vocab!, 'text.tokenizer.vocab').path, bundleFile(dir, t.merges!, 'text.tokenizer.merges').path, opts);
}

export class OnnxModelBundle implements ModelBundle {
  constructor(
    readonly dir: string,
    readonly spec: BundleSpec,
    readonly vision: VisionEncoder,
    readonly text: TextEncoder & { readonly tokenizer: Tokenizer },
    readonly detector: ObjectDetector | null,
    private readonly release: () => Promise<void>,
  ) {}

  get version(): string {
    return this.spec.version;
  }

  get tags(): { vocabulary: string[]; prompt: string; threshold: number; confidence: 'softmax' | 'cosine' } {
    return this.spec.tags;
  }

  get calibration(): BundleCalibration {
    return this.spec.calibration;
  }

  private closed: Promise<void> | null = null;

  close(): Promise<void> {
    this.closed ??= this.release();
    return this.closed;
  }
}

/** Reads and validates `dir/bundle.json` without opening any model. */
export async function readBundleSpec(dir: string): Promise<BundleSpec> {
  const file = join(dir, 'bundle.json');
  if (!existsSync(file)) fail(`${file} is missing`);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    fail(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseBundleSpec(json, file);
}

/** Loads a bundle: validates bundle.json, checks the files, opens the sessions and checks their inputs and outputs. */
export async function loadBundle(dir: string, opts: { threads: number; offThread?: boolean; detector?: { onnx: string; classes: string } }): Promise<OnnxModelBundle> {
  const read = await readBundleSpec(dir);
  // a detector given on the command line replaces the bundle's (absolute paths, the bundle's thresholds or the defaults)
  const spec: BundleSpec = opts.detector
    ? { ...read, detector: { kind: 'yolox', scoreThreshold: 0.35, nmsIou: 0.45, ...(read.detector ?? {}), onnx: opts.detector.onnx, classes: opts.detector.classes } }
    : read;
  const visionFile = bundleFile(dir, spec.vision.onnx, 'vision.onnx');
  const textFile = bundleFile(dir, spec.text.onnx, 'text.onnx');
  const det = spec.detector ? { onnx: bundleFile(dir, spec.detector.onnx, 'detector.onnx'), classes: bundleFile(dir, spec.detector.classes, 'detector.classes') } : null;
  const tokenizer = await loadTokenizer(dir, spec.text.tokenizer);

  const sessions: ModelSession[] = [];
  let detector: YoloxDetector | null = null;
  const release = async () => {
    await Promise.all(sessions.map((s) => s.release()));
    if (detector) await detector.close();
  };
  const open = async (f: { path: string; shown: string }) => {
    try {
      const s = await openSession(f.path, opts);
      sessions.push(s);
      return s;
    } catch (e) {
      return fail(`${f.shown}: cannot be loaded (${String((e as Error).message ?? e).split('\n')[0]})`);
    }
  };
  try {
    const vs = await open(visionFile);
    OnnxVisionEncoder.check(vs, spec.vision, visionFile.shown);
    const ts = await open(textFile);
    OnnxTextEncoder.check(ts, spec.text, tokenizer.context, textFile.shown);
    if (spec.detector && det) {
      detector = await YoloxDetector.load(det.onnx.path, det.classes.path, {
        scoreThreshold: spec.detector.scoreThreshold,
        nmsIou: spec.detector.nmsIou,
        maxDetections: spec.detector.maxDetections,
        threads: opts.threads,
        offThread: opts.offThread,
      });
    }
    return new OnnxModelBundle(dir, spec, new OnnxVisionEncoder(vs, spec.vision, visionFile.shown), new OnnxTextEncoder(ts, spec.text, tokenizer, textFile.shown), detector, release);
  } catch (e) {
    await release().catch(() => undefined);
    throw e;
  }
}
