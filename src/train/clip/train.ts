/**
 * Trains the built-in CLIP (tiny-clip.ts) on `squeeze gen` data, deterministically.
 *
 * Data: DATA_PARTS (2) crawls of `samples / 2` events each, `generateCrawl({ n, seed: hashSeed(seed, 0xda7a,
 * k) })` for part k (two crawls so that two threads can generate them side by side: one crawl is a sequential
 * generator), concatenated in part order, keeping the clean events only (no `truth_bad`, no duplicate, at
 * least one object). Images go through the bundle's own preprocessing (sharp: EXIF rotate, flatten on white,
 * sRGB, squash to 64 x 64 with the cubic kernel, RGB, (v / 255 - 0.5) / 0.25, CHW), once, up front. The
 * held-out samples (retrieval metric) are the last ones.
 *
 * Captions: built from the truth objects, not the crawl's noisy captions (a third of which are wrong by
 * design), and drawn afresh each time a sample is used:
 * - 50%: the crawl's own correct-caption templates (`correctCaption`, e.g. "illustration of a red star and
 *   a blue ring on a striped background"), with the background word drawn at random. Captions thus look
 *   like real crawl captions, but the background carries no signal, so neither tower learns to attend to
 *   the background: the image attention (the saliency) has every reason to sit on the objects;
 * - 30%: the tag prompt form listing every kind, "a photo of a star and a ring";
 * - 20%: the tag prompt of one of the objects, "a photo of a star".
 * Augmentation: horizontal flips (no shape kind turns into another under a mirror), applied to the stem's
 * output (mirrorStem), so the stem runs once per image.
 *
 * Auxiliary tag loss (weight `tagWeight`, default 8): besides the contrastive loss, every image is scored
 * against the 14 tag prompts "a photo of a <kind>" with a sigmoid loss (label: the kind is among the image's
 * objects, i.e. named by its caption). The labels are what the captions say; no boxes are used, and nothing
 * supervises the attention (the saliency) directly. It gives each image 14 signals per step instead of one,
 * and trains exactly what zero-shot tagging does: threshold a cosine with a prompt.
 *
 * Parallelism (parallel.ts): with `workers` > 0 (default: 2 where there are 2 cores or more) the worker
 * threads generate the crawl parts and compute the stems as images are decoded, and every step runs the image tower on
 * IMAGE_SHARDS (2) fixed shards of the batch, the text tower, the losses and Adam staying on the main thread
 * (shardedLossAndGrad). The shards and the order in which their gradients are summed do not depend on the
 * number of workers, so 0 (everything in-thread), 1 or 2 workers give the same weights.
 *
 * Determinism: all randomness comes from seeded generators (no Math.random), batches are drawn in a fixed
 * order, every sum runs in a fixed order, and the image decoding (libvips) is deterministic; the same
 * options give byte-identical weights, whatever the number of workers.
 */
import sharp from 'sharp';
import { generateCrawl, OBJECT_KINDS, COLOURS, BACKGROUND_KINDS, type TruthObject } from '../../gen/index';
import type { CrawlPart, Sample } from './parallel';
import type { BackgroundKind } from '../../gen/shapes';
import { correctCaption } from '../../gen/captions';
import { hashSeed, Rng } from '../../gen/rng';
import type { ImagePreprocess } from '../../models/types';
import {
  Adam,
  centreProjections,
  clipLoss,
  encodeImages,
  encodeTexts,
  imageStem,
  initParams,
  mirrorStem,
  patchCount,
  patchDim,
  standardiseInputs,
  view,
  type StemOutput,
  type TinyClipConfig,
  type TinyClipParams,
} from './tiny-clip';
import { defaultWorkers, gatherStem, LocalShards, shardedLossAndGrad, shareParams, sharedStemTable, WorkerShards, type ShardRunner, type StemTable } from './parallel';

/** The zero-shot tag prompt; `{}` is the kind. */
export const TAG_PROMPT = 'a photo of a {}';

export const BUILTIN_PREPROCESS: ImagePreprocess = {
  size: [64, 64],
  resize: 'squash',
  mean: [0.5, 0.5, 0.5],
  std: [0.25, 0.25, 0.25],
  channels: 'RGB',
  scale: 1,
};

export const DEFAULT_CONFIG: Omit<TinyClipConfig, 'vocab'> = {
  image: 64,
  patch: 8,
  blur: 2,
  window: 1,
  hidden: 96,
  width: 64,
  embed: 32,
  context: 16,
};

/** Words of the crawl's English captions; everything else is "unknown" (1). 0 is padding. */
const TEMPLATE_WORDS = ['a', 'an', 'and', 'on', 'photo', 'of', 'against', 'illustration', 'close', 'up', 'side', 'by', 'picture', 'showing', 'background'];

/** The vocabulary: word -> id, ids from 2 in a fixed order (kinds, colours, backgrounds, template words). */
export function buildVocab(): Record<string, number> {
  const vocab: Record<string, number> = {};
  let id = 2;
  for (const w of [...OBJECT_KINDS, ...COLOURS, ...BACKGROUND_KINDS, ...TEMPLATE_WORDS]) {
    if (!(w in vocab)) vocab[w] = id++;
  }
  return vocab;
}

const NON_LETTERS = /\P{L}+/u;

/** The bundle's word tokenizer ("words"): lower-case, split on non-letters, 0 padding, 1 unknown. */
export function tokenize(text: string, vocab: Record<string, number>, context: number): { ids: number[]; mask: number[] } {
  const ids = new Array<number>(context).fill(0);
  const mask = new Array<number>(context).fill(0);
  const words = text.toLowerCase().split(NON_LETTERS).filter((w) => w.length > 0);
  for (let i = 0; i < Math.min(words.length, context); i++) {
    const id = Object.prototype.hasOwnProperty.call(vocab, words[i]) ? vocab[words[i]!] : undefined;
    ids[i] = typeof id === 'number' ? id : 1;
    mask[i] = 1;
  }
  return { ids, mask };
}

/** Tokenizes many texts into flat [n, context] arrays. */
export function tokenizeAll(texts: string[], vocab: Record<string, number>, context: number): { ids: Int32Array; mask: Float32Array } {
  const ids = new Int32Array(texts.length * context);
  const mask = new Float32Array(texts.length * context);
  texts.forEach((t, i) => {
    const e = tokenize(t, vocab, context);
    ids.set(e.ids, i * context);
    mask.set(e.mask, i * context);
  });
  return { ids, mask };
}

/** One image through the bundle's preprocessing (see BUILTIN_PREPROCESS): CHW float32. */
export async function preprocessBuiltin(bytes: Buffer, p: ImagePreprocess = BUILTIN_PREPROCESS): Promise<Float32Array> {
  const [H, W] = p.size;
  const { data, info } = await sharp(bytes, { failOn: 'none' })
    .rotate()
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb')
    .resize(W, H, { fit: 'fill', kernel: 'cubic', fastShrinkOnLoad: false })
    .removeAlpha()
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  const C = info.channels;
  if (info.width !== W || info.height !== H || C < 3) throw new Error(`preprocess: got ${info.width}x${info.height}x${C}`);
  const out = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) {
    const mean = p.mean[c]!;
    const inv = 1 / p.std[c]!;
    for (let i = 0; i < H * W; i++) out[c * H * W + i] = (data[i * C + c]! / 255 - mean) * inv;
  }
  return out;
}

/**
 * The clean samples of a generated crawl, preprocessed. `all` keeps images without objects too.
 * Decoding runs concurrently; the result is in crawl order.
 */
export async function loadSamples(opts: {
  n: number;
  seed: number;
  all?: boolean;
  preprocess?: ImagePreprocess;
  onProgress?: (done: number) => void;
  /** called as each sample is decoded, with its index in the result (training starts its stem at once) */
  onSample?: (sample: Sample, index: number) => void;
}): Promise<Sample[]> {
  const pending: Promise<Sample>[] = [];
  let seen = 0;
  for await (const ev of generateCrawl({ n: opts.n, seed: opts.seed })) {
    seen++;
    if (seen % 200 === 0) opts.onProgress?.(seen);
    const a = ev.attrs;
    if (!ev.image || a.truth_bad !== '' || a.truth_dup_kind !== '') continue;
    const objects = JSON.parse(a.truth_objects ?? '[]') as TruthObject[];
    if (objects.length === 0 && !opts.all) continue;
    const image = ev.image;
    const index = pending.length;
    pending.push(
      preprocessBuiltin(image, opts.preprocess).then((pixels) => {
        const sample: Sample = {
          id: ev.id,
          pixels,
          objects,
          caption: ev.caption ?? '',
          noise: a.truth_noise ?? '',
          background: a.truth_background ?? '',
          width: Number(a.truth_width),
          height: Number(a.truth_height),
        };
        opts.onSample?.(sample, index);
        return sample;
      }),
    );
  }
  return Promise.all(pending);
}

/** Crawls per training set: fixed, so the data never depends on the number of workers. */
export const DATA_PARTS = 2;

/** Events and seed of crawl part k of a training set of `samples` events (DATA_PARTS crawls of their own seeds). */
export function dataPart(samples: number, seed: number, k: number): { n: number; seed: number } {
  return { n: Math.floor(((k + 1) * samples) / DATA_PARTS) - Math.floor((k * samples) / DATA_PARTS), seed: hashSeed(seed, 0xda7a, k) };
}

/** One crawl part: its clean samples with objects, and their stems (entry 2i: sample i, 2i + 1: its mirror image). */
/** Generates and decodes one crawl part, computing every image's stem as soon as it is decoded. */
export async function crawlPart(config: TinyClipConfig, n: number, seed: number, onProgress?: (done: number) => void): Promise<CrawlPart> {
  const stems: [StemOutput, StemOutput][] = [];
  const samples = await loadSamples({
    n,
    seed,
    onProgress,
    onSample: (s, i) => {
      const st = imageStem(config, s.pixels, 1);
      stems[i] = [st, mirrorStem(config, st, 1)];
    },
  });
  const P = patchCount(config);
  const K = patchDim(config);
  const X = new Float32Array(2 * samples.length * P * K);
  const prior = new Float32Array(2 * samples.length * P);
  stems.forEach((pair, i) =>
    pair.forEach((st, f) => {
      X.set(st.X, (2 * i + f) * P * K);
      prior.set(st.prior, (2 * i + f) * P);
    }),
  );
  return { samples, X, prior };
}

/** A training caption for these objects (see the module comment for the mix). */
export function trainingCaption(rng: Rng, objects: readonly TruthObject[]): string {
  const ordered = rng.chance(0.5) ? [...objects].sort((a, b) => a.box[0] - b.box[0]) : rng.shuffle([...objects]);
  const u = rng.next();
  if (u < 0.5) return correctCaption(rng, ordered, rng.pick(BACKGROUND_KINDS));
  if (u < 0.8) return `a photo of ${ordered.map((o) => `a ${o.kind}`).join(' and ')}`;
  return `a photo of a ${rng.pick(ordered).kind}`;
}

export interface TrainProgress {
  phase: 'data' | 'train';
  done: number;
  total: number;
  loss?: number;
}

export interface TrainOptions {
  seed: number;
  /** crawl events generated (the clean ones with objects are used; about 85%) */
  samples: number;
  steps: number;
  batch: number;
  /** peak learning rate (Adam, linear warm-up then cosine decay) */
  lr: number;
  onProgress?: (p: TrainProgress) => void;
  /** architecture overrides (tests use smaller ones) */
  config?: Partial<Omit<TinyClipConfig, 'vocab'>>;
  /** samples held out for the retrieval metric, default min(256, 10% of the clean samples) */
  heldOut?: number;
  /** decoupled weight decay, default 1e-4 */
  weightDecay?: number;
  /** weight of the auxiliary tag loss (see the module comment), default 8; 0 turns it off */
  tagWeight?: number;
  /** start the projection biases centred on the data (centreProjections), default true */
  centre?: boolean;
  /** called after every step with the current parameters (monitoring) */
  onStep?: (step: number, params: TinyClipParams) => void | Promise<void>;
  /** already loaded samples (any crawl, e.g. `loadSamples`): skips the crawl parts */
  data?: Sample[];
  /**
   * worker threads for the image tower and the stems (parallel.ts), default `defaultWorkers()` (2 where there
   * are 2 cores or more); 0 runs everything on the calling thread. The weights do not depend on it.
   */
  workers?: number;
}

export interface TrainResult {
  params: TinyClipParams;
  vocab: Record<string, number>;
  metrics: {
    /** mean training loss of every 10 steps */
    loss: number[];
    /** held-out image -> text retrieval top-1 within batches of `batch` (captions from the crawl's templates) */
    heldOutTop1: number;
    trainSamples: number;
    heldOutSamples: number;
  };
}

export const MAX_LOGIT_SCALE = Math.log(100);
export const DEFAULT_TAG_WEIGHT = 8;

export async function trainTinyClip(opts: TrainOptions): Promise<TrainResult> {
  const { seed, steps, batch, lr } = opts;
  if (!(batch >= 2) || !Number.isInteger(batch)) throw new RangeError(`train: batch must be an integer >= 2, got ${batch}`);
  const workers = opts.workers ?? defaultWorkers();
  if (!(workers >= 0) || !Number.isInteger(workers)) throw new RangeError(`train: workers must be an integer >= 0, got ${workers}`);
  const vocab = buildVocab();
  const config: TinyClipConfig = { ...DEFAULT_CONFIG, ...opts.config, vocab: Object.keys(vocab).length + 2 };
  const S = config.image;
  if (S !== BUILTIN_PREPROCESS.size[0]) throw new Error(`train: image size ${S} does not match the preprocessing (${BUILTIN_PREPROCESS.size[0]})`);

  // float32 parameters, in shared memory when workers read them
  const init = initParams(config, hashSeed(seed, 0xc11b));
  const params = workers > 0 ? shareParams(init) : init;
  const pool = workers > 0 ? new WorkerShards(workers, params) : null;
  try {
    // The stem has no parameters: every training image (and its mirror image) goes through it once, as it
    // is decoded. The DATA_PARTS crawls run on the workers side by side (or here, one after the other).
    const P = patchCount(config);
    const K = patchDim(config);
    const stemJobs: Promise<[StemOutput, StemOutput]>[] = [];
    const stemOf = (s: Sample): Promise<[StemOutput, StemOutput]> => {
      if (pool) return pool.stem(s.pixels, 1);
      const st = imageStem(config, s.pixels, 1);
      return Promise.resolve([st, mirrorStem(config, st, 1)]);
    };
    let samples: Sample[];
    if (opts.data) samples = opts.data;
    else {
      const done = new Array<number>(DATA_PARTS).fill(0);
      const progress = (k: number) => (d: number) => {
        done[k] = d;
        opts.onProgress?.({ phase: 'data', done: done.reduce((a, b) => a + b, 0), total: opts.samples });
      };
      const parts: CrawlPart[] = [];
      if (pool) parts.push(...(await Promise.all(Array.from({ length: DATA_PARTS }, (_, k) => pool.crawl(k, dataPart(opts.samples, seed, k), progress(k))))));
      else for (let k = 0; k < DATA_PARTS; k++) { const d = dataPart(opts.samples, seed, k); parts.push(await crawlPart(config, d.n, d.seed, progress(k))); }
      samples = parts.flatMap((part) => part.samples);
      parts.forEach((part, k) => {
        const before = parts.slice(0, k).reduce((a, q) => a + q.samples.length, 0);
        part.samples.forEach((_, i) => {
          const pair = [0, 1].map((f) => ({ X: part.X.subarray((2 * i + f) * P * K, (2 * i + f + 1) * P * K), prior: part.prior.subarray((2 * i + f) * P, (2 * i + f + 1) * P) }));
          stemJobs[before + i] = Promise.resolve(pair as [StemOutput, StemOutput]);
        });
      });
    }
    const nHeld = Math.min(opts.heldOut ?? Math.min(256, Math.floor(samples.length / 10)), samples.length - batch);
    const train = samples.slice(0, samples.length - nHeld);
    const held = samples.slice(samples.length - nHeld);
    if (train.length < batch) throw new Error(`train: only ${train.length} training samples for batch ${batch}`);

    // the stem table: entry 2i is training image i, 2i + 1 its mirror image
    const table: StemTable = pool ? sharedStemTable(config, 2 * train.length) : { X: new Float32Array(2 * train.length * P * K), prior: new Float32Array(2 * train.length * P) };
    for (let i = 0; i < train.length; i++) stemJobs[i] ??= stemOf(train[i]!);
    for (let i = 0; i < train.length; i++) {
      const pair = await stemJobs[i]!;
      pair.forEach((st, f) => {
        table.X.set(st.X, (2 * i + f) * P * K);
        table.prior.set(st.prior, (2 * i + f) * P);
      });
    }
    {
      const rows = Math.min(train.length, 512);
      const X = new Float32Array(rows * P * K);
      for (let i = 0; i < rows; i++) X.set(table.X.subarray(2 * i * P * K, (2 * i + 1) * P * K), i * P * K);
      standardiseInputs(params, X, rows * P);
    }
    if (opts.centre ?? true) {
      const rng = new Rng(hashSeed(seed, 0xce27));
      const idx = Array.from({ length: Math.min(train.length, 128) }, (_, i) => i);
      const tok = tokenizeAll(idx.map((i) => trainingCaption(rng, train[i]!.objects)), vocab, config.context);
      centreProjections(params, { n: idx.length, stem: gatherStem(config, table, idx.map((i) => 2 * i)), ids: tok.ids, textMask: tok.mask });
    }
    const runner: ShardRunner = pool ?? new LocalShards(params, (entries) => gatherStem(config, table, entries));
    if (pool) await pool.setTable(table);
    const adam = new Adam(params.data.length);
    // Weight decay on the weight matrices and token embeddings only.
    const decayMask = new Uint8Array(params.data.length);
    for (const g of ['img.patch_w', 'img.w2', 'img.proj', 'txt.tok', 'txt.proj'] as const) decayMask.fill(1, params.layout[g].offset, params.layout[g].offset + params.layout[g].size);
    const decay = opts.weightDecay ?? 1e-4;
    const kinds = OBJECT_KINDS as readonly string[];
    const prompts = tokenizeAll(kinds.map((k) => TAG_PROMPT.replace('{}', k)), vocab, config.context);
    const tagWeight = opts.tagWeight ?? DEFAULT_TAG_WEIGHT;
    const labels = new Float32Array(batch * kinds.length);

    const order: number[] = train.map((_, i) => i);
    const shuffler = new Rng(hashSeed(seed, 0x5417));
    let cursor = order.length;
    const lossLog: number[] = [];
    let lossSum = 0;
    const warmup = Math.max(1, Math.round(steps * 0.05));
    for (let step = 0; step < steps; step++) {
      const rng = new Rng(hashSeed(seed, step, 0xba7c));
      const texts: string[] = [];
      const entries = new Int32Array(batch);
      for (let b = 0; b < batch; b++) {
        if (cursor >= order.length) {
          shuffler.shuffle(order);
          cursor = 0;
        }
        const i = order[cursor++]!;
        const s = train[i]!;
        entries[b] = 2 * i + (rng.chance(0.5) ? 1 : 0);
        texts.push(trainingCaption(rng, s.objects));
        labels.fill(0, b * kinds.length, (b + 1) * kinds.length);
        for (const o of s.objects) labels[b * kinds.length + kinds.indexOf(o.kind)] = 1;
      }
      const tok = tokenizeAll(texts, vocab, config.context);
      const tags = tagWeight > 0 ? { k: kinds.length, ids: prompts.ids, mask: prompts.mask, labels, weight: tagWeight } : null;
      const r = await shardedLossAndGrad(params, { n: batch, entries, ids: tok.ids, textMask: tok.mask, tags }, runner);
      const rate = step < warmup ? (lr * (step + 1)) / warmup : lr * (0.05 + 0.95 * 0.5 * (1 + Math.cos((Math.PI * (step - warmup)) / Math.max(1, steps - warmup))));
      adam.step(params.data, r.grad, rate, decay, decayMask);
      const ls = view(params, 'logit_scale');
      if (ls[0]! > MAX_LOGIT_SCALE) ls[0] = MAX_LOGIT_SCALE;
      lossSum += r.loss;
      if ((step + 1) % 10 === 0 || step === steps - 1) {
        lossLog.push(lossSum / ((step % 10) + 1));
        lossSum = 0;
        opts.onProgress?.({ phase: 'train', done: step + 1, total: steps, loss: lossLog[lossLog.length - 1] });
      }
      if (opts.onStep) await opts.onStep(step + 1, params);
    }

    const heldOutTop1 = retrievalTop1(params, vocab, held, batch, hashSeed(seed, 0x7e57));
    return { params, vocab, metrics: { loss: lossLog, heldOutTop1, trainSamples: train.length, heldOutSamples: held.length } };
  } finally {
    await pool?.close();
  }
}

/**
 * Image -> text top-1 within consecutive batches of held-out samples, each matched with a caption from the
 * crawl's correct-caption templates (true background word).
 */
export function retrievalTop1(params: TinyClipParams, vocab: Record<string, number>, held: Sample[], batch: number, seed: number): number {
  const c = params.config;
  const rng = new Rng(seed);
  let hits = 0;
  let total = 0;
  for (let start = 0; start + 2 <= held.length; start += batch) {
    const group = held.slice(start, start + batch);
    if (group.length < 2) break;
    const n = group.length;
    const px = new Float32Array(n * 3 * c.image * c.image);
    group.forEach((s, i) => px.set(s.pixels, i * 3 * c.image * c.image));
    const texts = group.map((s) => correctCaption(rng, s.objects, (BACKGROUND_KINDS as readonly string[]).includes(s.background) ? (s.background as BackgroundKind) : 'plain'));
    const tok = tokenizeAll(texts, vocab, c.context);
    const img = encodeImages(params, px, n);
    const txt = encodeTexts(params, tok.ids, tok.mask, n);
    const l = clipLoss(img.embeds, txt, n, c.embed, 0);
    hits += l.top1 * n;
    total += n;
  }
  return total === 0 ? 0 : hits / total;
}
