/**
 * LiT ("locked-image text tuning") for the photo bundle: the image network is frozen (SqueezeNet features,
 * squeezenet-tower.ts), and a text tower plus a linear image projection are trained with the symmetric
 * InfoNCE loss so that a caption lands next to the features of its photo.
 *
 *   image  e_i = normalise(W x_i + b)         x_i the standardised locked feature [D], W [E, D]
 *   text   a = softmax_k(wb[id_k] + (mask_k - 1) * 1e4); g = sum_k a_k tok[id_k]; e_t = normalise(g)
 *          (a learned per-word weight, like a learned idf, and word vectors tok [V, E])
 *   loss   symmetric cross-entropy of exp(ls) * cos over the batch, ls learned, clamped to [ln 1, ln 100]
 *
 * Forward and backward are plain TypeScript with a fixed summation order (tiny-clip.ts's matmul kernel), so
 * the same seed and data always give the same weights.
 */
import { Rng } from '../../gen/rng';
import { Adam, clipLoss, MASK_PENALTY, matmulNT, normaliseBackward, normaliseRows, SeededNormal, transpose } from '../../train/clip/tiny-clip';

export interface LitConfig {
  vocab: number;
  context: number;
  feature: number;
  embed: number;
}

export interface LitParams {
  config: LitConfig;
  data: Float32Array;
  tok: Float32Array;
  wordBias: Float32Array;
  weight: Float32Array;
  bias: Float32Array;
  logScale: Float32Array;
}

function layout(c: LitConfig, data: Float32Array): Omit<LitParams, 'config' | 'data'> {
  let o = 0;
  const take = (n: number) => {
    const v = data.subarray(o, o + n);
    o += n;
    return v;
  };
  return { tok: take(c.vocab * c.embed), wordBias: take(c.vocab), weight: take(c.embed * c.feature), bias: take(c.embed), logScale: take(1) };
}

export function paramCount(c: LitConfig): number {
  return c.vocab * c.embed + c.vocab + c.embed * c.feature + c.embed + 1;
}

export function initLit(c: LitConfig, seed: number): LitParams {
  const data = new Float32Array(paramCount(c));
  const p = { config: c, data, ...layout(c, data) };
  const rnd = new SeededNormal(seed);
  for (let i = 0; i < p.tok.length; i++) p.tok[i] = rnd.normal() * 0.1;
  const s = 1 / Math.sqrt(c.feature);
  for (let i = 0; i < p.weight.length; i++) p.weight[i] = rnd.normal() * s;
  p.logScale[0] = Math.log(10);
  return p;
}

/** Image embeddings [n, E] (unit rows) of standardised features [n, D]. */
export function encodeFeatures(p: LitParams, X: Float32Array, n: number): Float32Array {
  const { feature: D, embed: E } = p.config;
  const Y = new Float32Array(n * E);
  matmulNT(X, p.weight, Y, n, D, E);
  for (let r = 0; r < n; r++) for (let e = 0; e < E; e++) Y[r * E + e] += p.bias[e];
  normaliseRows(Y, n, E, Y);
  return Y;
}

interface TextForward {
  emb: Float32Array;
  norms: Float64Array;
  attn: Float64Array;
}

function textForward(p: LitParams, ids: Int32Array, mask: Uint8Array, n: number): TextForward {
  const { context: L, embed: E } = p.config;
  const emb = new Float32Array(n * E);
  const attn = new Float64Array(n * L);
  for (let r = 0; r < n; r++) {
    let max = -Infinity;
    for (let k = 0; k < L; k++) {
      const v = p.wordBias[ids[r * L + k]] + (mask[r * L + k] - 1) * MASK_PENALTY;
      attn[r * L + k] = v;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let k = 0; k < L; k++) sum += attn[r * L + k] = Math.exp(attn[r * L + k] - max);
    for (let k = 0; k < L; k++) {
      const a = (attn[r * L + k] /= sum);
      if (a === 0) continue;
      const t = ids[r * L + k] * E;
      for (let e = 0; e < E; e++) emb[r * E + e] += a * p.tok[t + e];
    }
  }
  const norms = normaliseRows(emb, n, E, emb);
  return { emb, norms, attn };
}

/** Text embeddings [n, E] (unit rows) of token ids [n, L] with their mask. */
export function encodeTokens(p: LitParams, ids: Int32Array, mask: Uint8Array, n: number): Float32Array {
  return textForward(p, ids, mask, n).emb;
}

export interface LitBatch {
  n: number;
  /** standardised features [n, D] */
  X: Float32Array;
  ids: Int32Array;
  mask: Uint8Array;
}

/** Loss and gradient (same layout as p.data) of one batch; row i's caption belongs to row i's image. */
export function litLossAndGrad(p: LitParams, b: LitBatch): { loss: number; grad: Float32Array; accuracy: number } {
  const { feature: D, embed: E, context: L } = p.config;
  const n = b.n;
  const grad = new Float32Array(p.data.length);
  const g = layout(p.config, grad);
  // image tower
  const Y = new Float32Array(n * E);
  matmulNT(b.X, p.weight, Y, n, D, E);
  for (let r = 0; r < n; r++) for (let e = 0; e < E; e++) Y[r * E + e] += p.bias[e];
  const yNorms = normaliseRows(Y, n, E, Y);
  const t = textForward(p, b.ids, b.mask, n);
  // the symmetric InfoNCE of the built-in CLIP (float64 copies: its gradients come back in float64)
  const c = clipLoss(Float64Array.from(Y), Float64Array.from(t.emb), n, E, p.logScale[0]);
  g.logScale[0] = c.dLogitScale;
  const dY = c.dImage as Float64Array;
  const dT = c.dText as Float64Array;
  normaliseBackward(Y, yNorms, dY, n, E, dY);
  normaliseBackward(t.emb, t.norms, dT, n, E, dT);
  // image projection: dW [E, D] = dY^T X, db = sum dY
  const dYt = new Float32Array(E * n);
  for (let r = 0; r < n; r++) for (let e = 0; e < E; e++) dYt[e * n + r] = dY[r * E + e];
  const Xt = transpose(b.X, n, D, new Float32Array(D * n)) as Float32Array;
  matmulNT(dYt, Xt, g.weight, E, n, D);
  for (let r = 0; r < n; r++) for (let e = 0; e < E; e++) g.bias[e] += dY[r * E + e];
  // text tower
  for (let r = 0; r < n; r++) {
    let mean = 0;
    const da = new Float64Array(L);
    for (let k = 0; k < L; k++) {
      const a = t.attn[r * L + k];
      if (a === 0) continue;
      const id = b.ids[r * L + k] * E;
      let dot = 0;
      for (let e = 0; e < E; e++) {
        g.tok[id + e] += a * dT[r * E + e];
        dot += p.tok[id + e] * dT[r * E + e];
      }
      da[k] = dot;
      mean += a * dot;
    }
    for (let k = 0; k < L; k++) {
      const a = t.attn[r * L + k];
      if (a !== 0) g.wordBias[b.ids[r * L + k]] += a * (da[k] - mean);
    }
  }
  return { loss: c.loss, grad, accuracy: c.top1 };
}

export interface LitData {
  /** standardised features of the training images [images * views, D]; view v of image i at row i * views + v */
  X: Float32Array;
  images: number;
  views: number;
  /** token ids [captions, L] and masks, with the image each caption belongs to */
  ids: Int32Array;
  mask: Uint8Array;
  captionImage: Int32Array;
}

export interface LitTrainOptions {
  seed: number;
  steps: number;
  batch: number;
  lr: number;
  decay: number;
  warmup?: number;
  onStep?: (step: number, loss: number, accuracy: number) => void;
}

/**
 * Trains from `initLit(config, seed)`. Each step draws `batch` distinct images (a fresh shuffle per epoch),
 * one random view and one random caption of each, so a batch never holds two captions of one photo.
 */
export function trainLit(config: LitConfig, data: LitData, o: LitTrainOptions): LitParams {
  const p = initLit(config, o.seed);
  const rng = new Rng(o.seed ^ 0x5bd1e995);
  const { feature: D, context: L } = config;
  const byImage: number[][] = Array.from({ length: data.images }, () => []);
  data.captionImage.forEach((img, c) => byImage[img].push(c));
  const adam = new Adam(p.data.length);
  const decayMask = new Uint8Array(p.data.length);
  const tokEnd = p.tok.length;
  decayMask.fill(1, 0, tokEnd);
  const wStart = tokEnd + p.wordBias.length;
  decayMask.fill(1, wStart, wStart + p.weight.length);
  const order = Array.from({ length: data.images }, (_, i) => i);
  let cursor = order.length;
  const warmup = o.warmup ?? Math.min(50, Math.floor(o.steps / 10));
  const n = Math.min(o.batch, data.images);
  for (let step = 0; step < o.steps; step++) {
    const X = new Float32Array(n * D);
    const ids = new Int32Array(n * L);
    const mask = new Uint8Array(n * L);
    for (let r = 0; r < n; r++) {
      if (cursor >= order.length) {
        for (let i = order.length - 1; i > 0; i--) {
          const j = rng.int(0, i);
          [order[i], order[j]] = [order[j], order[i]];
        }
        cursor = 0;
      }
      const img = order[cursor++];
      const view = rng.int(0, data.views - 1);
      X.set(data.X.subarray((img * data.views + view) * D, (img * data.views + view + 1) * D), r * D);
      const caps = byImage[img];
      const c = caps[rng.int(0, caps.length - 1)];
      ids.set(data.ids.subarray(c * L, (c + 1) * L), r * L);
      mask.set(data.mask.subarray(c * L, (c + 1) * L), r * L);
    }
    const res = litLossAndGrad(p, { n, X, ids, mask });
    const rate = step < warmup ? (o.lr * (step + 1)) / warmup : o.lr * 0.5 * (1 + Math.cos((Math.PI * (step - warmup)) / Math.max(1, o.steps - warmup)));
    adam.step(p.data, res.grad, rate, o.decay, decayMask);
    p.logScale[0] = Math.min(Math.log(100), Math.max(0, p.logScale[0]));
    o.onStep?.(step, res.loss, res.accuracy);
  }
  return p;
}
