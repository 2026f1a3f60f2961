/**
 * Data-parallel training of the tiny CLIP's image tower on worker threads (node:worker_threads), with
 * results that do not depend on how many threads run it.
 *
 * Every training batch is split into IMAGE_SHARDS (2) fixed shards of consecutive rows, however many workers
 * exist. A step (`shardedLossAndGrad`):
 * 1. each shard's image tower forward (imageForwardStem) runs on its worker (shard s on worker s mod W), from
 *    the shared stem table and the shared parameters; the worker keeps the activations;
 * 2. meanwhile the main thread runs the text tower on the captions and the tag prompts; then it joins the
 *    shards' image embeddings (row by row the same as one forward of the whole batch: no product mixes rows)
 *    and computes the contrastive loss and the tag loss, and their gradient per image embedding;
 * 3. each shard's rows of that gradient go back to its worker, which runs imageBackward into a zeroed
 *    gradient of its own; the main thread meanwhile runs the text backward;
 * 4. the image-tower gradient is the sum of the shard gradients, added in shard order.
 * A shard's computation is the same code on the same inputs wherever it runs (the WebAssembly kernel is
 * IEEE and sums in a fixed order), and the shards are summed in a fixed order, so 0 (in-thread), 1 or 2
 * workers give byte-identical gradients, hence byte-identical weights.
 *
 * Shared memory: the parameters live in a SharedArrayBuffer that the main thread updates (Adam) between
 * steps and the workers read; the stem outputs of every training image and its mirror image live in another,
 * written once, so a step sends only row indices, the shards' embeddings and their gradients (small).
 * Before training, the workers generate the training data's crawl parts side by side (`crawl`: train.ts
 * crawlPart, generation, decoding and the stem of every image as it is decoded); `stem` computes the stems
 * of given images (training on already loaded samples).
 *
 * The in-thread path (`LocalShards`) runs the same shard code on the main thread; it also runs in float64,
 * which the tests use to check the sharded gradient against lossAndGrad.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  clipLoss,
  imageBackward,
  imageForwardStem,
  imageStem,
  layoutOf,
  mirrorStem,
  patchCount,
  patchDim,
  tagLoss,
  textBackward,
  textForward,
  view,
  type Arr,
  type Batch,
  type ImageCache,
  type StemOutput,
  type TextCache,
  type TinyClipConfig,
  type TinyClipParams,
} from './tiny-clip';
import type { TruthObject } from '../../gen/index';

/** Shards per batch: fixed, so the gradient's summation order never depends on the number of workers. */
export const IMAGE_SHARDS = 2;

/** Rows [lo, hi) of shard s of a batch of n. */
export function shardRange(n: number, s: number, shards = IMAGE_SHARDS): [number, number] {
  return [Math.floor((s * n) / shards), Math.floor(((s + 1) * n) / shards)];
}

/** The stem outputs of many images, one row block per entry: X [count, P, K], prior [count, P]. */
export interface StemTable {
  X: Float32Array;
  prior: Float32Array;
}

/** A stem table in shared memory for `count` entries. */
export function sharedStemTable(config: TinyClipConfig, count: number): StemTable {
  const P = patchCount(config);
  const K = patchDim(config);
  return {
    X: new Float32Array(new SharedArrayBuffer(count * P * K * 4)),
    prior: new Float32Array(new SharedArrayBuffer(count * P * 4)),
  };
}

/** The batch stem of the given table entries. */
export function gatherStem(config: TinyClipConfig, table: StemTable, entries: ArrayLike<number>): StemOutput {
  const P = patchCount(config);
  const K = patchDim(config);
  const n = entries.length;
  const X = new Float32Array(n * P * K);
  const prior = new Float32Array(n * P);
  for (let b = 0; b < n; b++) {
    const e = entries[b]!;
    X.set(table.X.subarray(e * P * K, (e + 1) * P * K), b * P * K);
    prior.set(table.prior.subarray(e * P, (e + 1) * P), b * P);
  }
  return { X, prior };
}

/** The image-tower gradient lies in one contiguous range of the flat parameters (its groups come first). */
export function imageGradRange(p: Pick<TinyClipParams, 'layout'>): [number, number] {
  const l = p.layout;
  return [l['img.in_shift'].offset, l['img.proj_b'].offset + l['img.proj_b'].size];
}

/** Who computes the shards: the main thread (LocalShards) or workers (WorkerShards). */
export interface ShardRunner {
  readonly workers: number;
  /** Forward of shard s on these stem table entries; resolves to its image embeddings [rows, embed]. */
  forward(s: number, entries: Int32Array): Promise<Arr>;
  /** Backward of shard s's last forward with upstream dEmbeds [rows, embed]; resolves to its gradient (layout of p). */
  backward(s: number, dEmbeds: Arr): Promise<Arr>;
  close(): Promise<void>;
}

/** The shards on the calling thread, in any precision. `stems(entries)` gives a shard's batch stem. */
export class LocalShards implements ShardRunner {
  readonly workers = 0;
  private readonly caches = new Map<number, ImageCache>();
  constructor(
    private readonly p: TinyClipParams,
    private readonly stems: (entries: Int32Array) => StemOutput,
  ) {}
  async forward(s: number, entries: Int32Array): Promise<Arr> {
    const cache = imageForwardStem(this.p, this.stems(entries), entries.length);
    this.caches.set(s, cache);
    return cache.embeds;
  }
  async backward(s: number, dEmbeds: Arr): Promise<Arr> {
    const cache = this.caches.get(s);
    if (!cache) throw new Error(`tiny-clip: backward of shard ${s} without its forward`);
    this.caches.delete(s);
    const grad = this.p.data instanceof Float64Array ? new Float64Array(this.p.data.length) : new Float32Array(this.p.data.length);
    imageBackward(this.p, cache, dEmbeds, grad);
    return grad;
  }
  async close(): Promise<void> {
    this.caches.clear();
  }
}

/** Messages to the worker (see shard-worker.ts). */
export type ShardRequest =
  | { op: 'crawl'; id: number; n: number; seed: number }
  | { op: 'stem'; id: number; pixels: Float32Array; n: number }
  | { op: 'table'; id: number; X: Float32Array; prior: Float32Array }
  | { op: 'forward'; id: number; shard: number; entries: Int32Array }
  | { op: 'backward'; id: number; shard: number; dEmbeds: Float32Array };
export type ShardReply = { id: number; error?: string; stack?: string; out?: Float32Array[]; samples?: Omit<Sample, 'pixels'>[]; progress?: number };

export interface ShardWorkerData {
  config: TinyClipConfig;
  /** the parameters' SharedArrayBuffer (float32) */
  params: SharedArrayBuffer;
}

const WORKER_SCRIPT = join(__dirname, 'shard-worker.js');

/** Whether worker threads can run here (the compiled worker script exists: not under a TypeScript loader). */
export function workersAvailable(): boolean {
  return existsSync(WORKER_SCRIPT);
}

/** Workers used by default: one per shard, at most one per core, none on a single core. */
export function defaultWorkers(): number {
  const cores = availableParallelism();
  return cores < 2 || !workersAvailable() ? 0 : Math.min(IMAGE_SHARDS, cores);
}

/**
 * A pool of workers sharing float32 parameters in a SharedArrayBuffer (`params.data` must be one). Any worker
 * error rejects every pending call; `close` terminates the workers.
 */
export class WorkerShards implements ShardRunner {
  private readonly pool: Worker[];
  private readonly pending = new Map<number, { resolve: (m: ShardReply) => void; reject: (e: Error) => void; progress?: (done: number) => void }>();
  private nextId = 1;
  private failed: Error | null = null;
  private closed = false;
  private stemTurn = 0;

  constructor(
    readonly workers: number,
    p: TinyClipParams,
  ) {
    if (!(workers >= 1) || !Number.isInteger(workers)) throw new RangeError(`tiny-clip: workers must be an integer >= 1, got ${workers}`);
    if (!(p.data instanceof Float32Array) || !(p.data.buffer instanceof SharedArrayBuffer)) throw new Error('tiny-clip: worker shards need float32 parameters in a SharedArrayBuffer (shareParams)');
    const data: ShardWorkerData = { config: p.config, params: p.data.buffer };
    this.pool = Array.from({ length: workers }, () => {
      const w = new Worker(WORKER_SCRIPT, { workerData: data });
      w.on('message', (m: ShardReply) => this.reply(m));
      w.on('error', (e) => this.fail(e instanceof Error ? e : new Error(String(e))));
      w.on('exit', (code) => {
        if (!this.closed) this.fail(new Error(`tiny-clip: a shard worker exited (code ${code})`));
      });
      return w;
    });
  }

  private reply(m: ShardReply): void {
    const job = this.pending.get(m.id);
    if (!job) return;
    if (m.progress !== undefined && m.error === undefined) {
      job.progress?.(m.progress);
      return;
    }
    this.pending.delete(m.id);
    if (m.error !== undefined) {
      const e = new Error(`tiny-clip shard worker: ${m.error}`);
      if (m.stack) e.stack = `${e.message}\n(worker) ${m.stack}`;
      job.reject(e);
    } else job.resolve(m);
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    for (const job of this.pending.values()) job.reject(e);
    this.pending.clear();
  }

  private request(worker: number, req: ShardRequest, transfer: ArrayBuffer[] = [], progress?: (done: number) => void): Promise<ShardReply> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed) return Promise.reject(new Error('tiny-clip: worker shards are closed'));
    return new Promise((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject, progress });
      this.pool[worker]!.postMessage(req, transfer);
    });
  }

  private async call(worker: number, req: ShardRequest, transfer: ArrayBuffer[] = []): Promise<Float32Array[]> {
    return (await this.request(worker, req, transfer)).out ?? [];
  }

  /** Crawl part k (train.ts crawlPart) on worker k mod W: generation, decoding and stems. */
  async crawl(k: number, part: { n: number; seed: number }, progress?: (done: number) => void): Promise<CrawlPart> {
    const m = await this.request(k % this.workers, { op: 'crawl', id: this.nextId++, n: part.n, seed: part.seed }, [], progress);
    const [pixels, X, prior] = m.out!;
    const meta = m.samples!;
    const per = meta.length === 0 ? 0 : pixels!.length / meta.length;
    return { samples: meta.map((s, i) => ({ ...s, pixels: pixels!.subarray(i * per, (i + 1) * per) })), X: X!, prior: prior! };
  }

  /** Stem and mirrored stem of n images [n, 3, S, S] (float32), on the workers in turn. */
  async stem(pixels: Float32Array, n: number): Promise<[StemOutput, StemOutput]> {
    const w = this.stemTurn++ % this.workers;
    const copy = pixels.slice();
    const [X, prior, mX, mPrior] = await this.call(w, { op: 'stem', id: this.nextId++, pixels: copy, n }, [copy.buffer as ArrayBuffer]);
    return [
      { X: X!, prior: prior! },
      { X: mX!, prior: mPrior! },
    ];
  }

  /** Hands every worker the shared stem table that `forward` entries index. */
  async setTable(table: StemTable): Promise<void> {
    await Promise.all(this.pool.map((_, w) => this.call(w, { op: 'table', id: this.nextId++, X: table.X, prior: table.prior })));
  }

  async forward(s: number, entries: Int32Array): Promise<Arr> {
    const [embeds] = await this.call(s % this.workers, { op: 'forward', id: this.nextId++, shard: s, entries });
    return embeds!;
  }

  async backward(s: number, dEmbeds: Arr): Promise<Arr> {
    const d = Float32Array.from(dEmbeds);
    const [grad] = await this.call(s % this.workers, { op: 'backward', id: this.nextId++, shard: s, dEmbeds: d }, [d.buffer]);
    return grad!;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new Error('tiny-clip: worker shards are closed'));
    await Promise.all(this.pool.map((w) => w.terminate()));
  }
}

/** Moves float32 parameters into a SharedArrayBuffer (same values), so that workers can read them. */
export function shareParams(p: TinyClipParams): TinyClipParams {
  if (p.data.buffer instanceof SharedArrayBuffer) return p;
  if (!(p.data instanceof Float32Array)) throw new Error('tiny-clip: only float32 parameters are shared');
  const data = new Float32Array(new SharedArrayBuffer(p.data.length * 4));
  data.set(p.data);
  return { config: p.config, layout: p.layout, data };
}

/** A step's batch for shardedLossAndGrad: like Batch, with the images given as stem table entries. */
export interface ShardedBatch extends Omit<Batch, 'pixels' | 'stem' | 'patchMask'> {
  /** [n] stem table entries of the images */
  entries: Int32Array;
}

/**
 * Loss and gradient of a batch, the image tower split into IMAGE_SHARDS shards (see the module comment).
 * Same loss as lossAndGrad; the gradient differs from it only in the order of the image-tower sums.
 */
export async function shardedLossAndGrad(p: TinyClipParams, batch: ShardedBatch, runner: ShardRunner): Promise<{ loss: number; clip: number; tag: number; top1: number; grad: Arr }> {
  const c = p.config;
  const n = batch.n;
  const e = c.embed;
  if (batch.entries.length !== n) throw new Error(`tiny-clip: ${batch.entries.length} entries for a batch of ${n}`);
  const forwards = Array.from({ length: IMAGE_SHARDS }, (_, s) => {
    const [lo, hi] = shardRange(n, s);
    return runner.forward(s, batch.entries.slice(lo, hi));
  });
  // the text tower meanwhile
  const txt = textForward(p, batch.ids, batch.textMask, n);
  const t = batch.tags;
  const prompts: TextCache | null = t && t.weight > 0 ? textForward(p, t.ids, t.mask, t.k) : null;
  const parts = await Promise.all(forwards);
  const embeds = p.data instanceof Float64Array ? new Float64Array(n * e) : new Float32Array(n * e);
  parts.forEach((part, s) => embeds.set(part, shardRange(n, s)[0] * e));
  const l = clipLoss(embeds, txt.embeds, n, e, view(p, 'logit_scale')[0]!);
  let tag = 0;
  const w = t?.weight ?? 0;
  let tl: ReturnType<typeof tagLoss> | null = null;
  if (t && prompts) {
    tl = tagLoss(embeds, prompts.embeds, t.labels, n, t.k, e, view(p, 'tag.scale')[0]!, view(p, 'tag.bias')[0]!);
    tag = tl.loss;
    for (let i = 0; i < l.dImage.length; i++) l.dImage[i] += w * tl.dImage[i]!;
  }
  const backwards = Array.from({ length: IMAGE_SHARDS }, (_, s) => {
    const [lo, hi] = shardRange(n, s);
    return runner.backward(s, l.dImage.subarray(lo * e, hi * e));
  });
  const grad = p.data instanceof Float64Array ? new Float64Array(p.data.length) : new Float32Array(p.data.length);
  if (tl && prompts) {
    for (let i = 0; i < tl.dPrompts.length; i++) tl.dPrompts[i] *= w;
    textBackward(p, prompts, tl.dPrompts, grad);
    view(p, 'tag.scale', grad)[0] += w * tl.dScale;
    view(p, 'tag.bias', grad)[0] += w * tl.dBias;
  }
  textBackward(p, txt, l.dText, grad);
  view(p, 'logit_scale', grad)[0] += l.dLogitScale;
  const shardGrads = await Promise.all(backwards);
  const [from, to] = imageGradRange(p);
  for (const g of shardGrads) for (let i = from; i < to; i++) grad[i] += g[i]!;
  return { loss: l.loss + w * tag, clip: l.loss, tag, top1: l.top1, grad };
}

/** The worker side: one request at a time, replies in order. Runs in shard-worker.ts. */
export function serveShards(data: ShardWorkerData, post: (m: ShardReply, transfer?: ArrayBuffer[]) => void): (req: ShardRequest) => void {
  const { config } = data;
  const p: TinyClipParams = { config, layout: layoutOf(config).layout, data: new Float32Array(data.params) };
  let table: StemTable | null = null;
  const caches = new Map<number, ImageCache>();
  return (req) => {
    try {
      if (req.op === 'stem') {
        const st = imageStem(config, req.pixels, req.n);
        const m = mirrorStem(config, st, req.n);
        const out = [st.X, st.prior, m.X, m.prior] as Float32Array[];
        post({ id: req.id, out }, out.map((a) => a.buffer as ArrayBuffer));
      } else if (req.op === 'table') {
        table = { X: req.X, prior: req.prior };
        post({ id: req.id });
      } else if (req.op === 'forward') {
        if (!table) throw new Error('forward before the stem table');
        const cache = imageForwardStem(p, gatherStem(config, table, req.entries), req.entries.length);
        caches.set(req.shard, cache);
        post({ id: req.id, out: [cache.embeds as Float32Array] });
      } else if (req.op === 'backward') {
        const cache = caches.get(req.shard);
        if (!cache) throw new Error(`backward of shard ${req.shard} without its forward`);
        caches.delete(req.shard);
        const grad = new Float32Array(p.data.length);
        imageBackward(p, cache, req.dEmbeds, grad);
        post({ id: req.id, out: [grad] }, [grad.buffer]);
      } else throw new Error(`unknown request ${(req as { op: string }).op}`);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      post({ id: req.id, error: err.message, stack: err.stack });
    }
  };
}

/** One decoded training sample of the generated crawl. */
export interface Sample {
  id: string;
  /** CHW, preprocessed */
  pixels: Float32Array;
  objects: TruthObject[];
  /** the crawl's caption and its truth */
  caption: string;
  noise: string;
  background: string;
  width: number;
  height: number;
}

/** A generated crawl part: its samples, their image stems and priors. */
export interface CrawlPart {
  samples: Sample[];
  X: Float32Array;
  prior: Float32Array;
}
