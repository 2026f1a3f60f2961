/**
 * Model bundles for tests, written as bundle directories: stand-ins with the names and shapes of a real
 * CLIP ONNX export (`vision_model.onnx`, `text_model.onnx`, shortest-crop preprocessing, no detector),
 * built as small ONNX graphs, with the real CLIP tokenizer when shared/ has it.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { Graph } from '../../src/models/onnx/graph';

export const SHARED = join(__dirname, '../../../../shared');
export const TOKENIZER = join(SHARED, 'models/clip_tokenizer');
export const YOLOX = join(SHARED, 'models/yolox_nano');
export const haveTokenizer = existsSync(join(TOKENIZER, 'tokenizer.json'));

export const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];
export const D = 8; // token width
export const E = 6; // embedding width
export const VOCAB = 49408;

const tmp = mkdtempSync(join(tmpdir(), 'squeeze-bundle-'));
/** Removes every bundle directory written here (call from a test file's `after`). */
export const removeBundles = (): void => rmSync(tmp, { recursive: true, force: true });

/** Deterministic pseudo-random weights in [-1, 1). */
export function weights(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

/**
 * Patch means [N, P, 3] of pixels [N, 3, H, W] for a rows x cols grid of square patches.
 */
export function patchMeans(g: Graph, pixels: string, size: number, grid: number): string {
  const ps = size / grid;
  const r = g.node('Reshape', [pixels, g.ints([-1, 3, grid, ps, grid, ps])]);
  const m = g.node('ReduceMean', [r], { axes: [3, 5], keepdims: 0 }); // [N, 3, grid, grid]
  const flat = g.node('Reshape', [m, g.ints([-1, 3, grid * grid])]);
  return g.node('Transpose', [flat], { perm: [0, 2, 1] }); // [N, P, 3]
}

/**
 * A stand-in for a real CLIP vision export with its names and shapes: `pixel_values` [N, 3, 224, 224]
 * -> `image_embeds` [N, E] and `last_hidden_state` [N, 1 + 49, D]. Patch tokens are tanh of a
 * projection of the 32x32 patch means; the CLS token is their per-feature max, so it is made of the
 * most distinctive patch's features and the CLS-patch saliency peaks there.
 */
export function clipVision(opts: { inputName?: string; pixelDims?: (number | string)[]; tokens?: number } = {}): Buffer {
  const g = new Graph('clip-vision');
  const px = g.input(opts.inputName ?? 'pixel_values', 'float', opts.pixelDims ?? ['batch', 3, 224, 224]);
  const pm = patchMeans(g, px, 224, 7);
  const w1 = g.initializer('w1', weights(3 * D, 1), [3, D]);
  const b1 = g.initializer('b1', weights(D, 2), [D]);
  const tokens = g.node('Tanh', [g.node('Add', [g.node('MatMul', [pm, w1]), b1])]); // [N, 49, D]
  const cls = g.node('ReduceMax', [tokens], { axes: [1], keepdims: 1 }); // [N, 1, D]
  const hidden = g.node('Concat', [cls, tokens], { axis: 1 });
  const pooled = g.node('ReduceMean', [tokens], { axes: [1], keepdims: 0 }); // [N, D]
  const w2 = g.initializer('w2', weights(D * E, 3), [D, E]);
  g.output(g.node('MatMul', [pooled, w2]), 'float', ['batch', E], 'image_embeds');
  g.output(hidden, 'float', ['batch', opts.tokens ?? 50, D], 'last_hidden_state');
  return g.toBytes();
}

/**
 * The built-in layout: `pixel_values` [N, 3, 64, 64] (+ optional `patch_mask` [N, 64]) ->
 * `image_embeds` and `patch_attention` [N, 64] = masked softmax of the patches' red mean.
 */
export function attentionVision(withMask: boolean): Buffer {
  const g = new Graph('pool-vision');
  const px = g.input('pixel_values', 'float', ['N', 3, 64, 64]);
  const pm = patchMeans(g, px, 64, 8); // [N, 64, 3]
  const score = g.node('Squeeze', [g.node('MatMul', [pm, g.initializer('red', [4, 0, 0], [3, 1])]), g.ints([2])]); // [N, 64]
  let ex = g.node('Exp', [score]);
  if (withMask) ex = g.node('Mul', [ex, g.input('patch_mask', 'float', ['N', 64])]);
  const attn = g.node('Div', [ex, g.node('ReduceSum', [ex, g.ints([1])], { keepdims: 1 })]);
  const tokens = g.node('Tanh', [g.node('MatMul', [pm, g.initializer('w1', weights(3 * D, 4), [3, D])])]);
  const pooled = g.node('Squeeze', [g.node('MatMul', [g.node('Unsqueeze', [attn, g.ints([1])]), tokens]), g.ints([1])]); // [N, D]
  g.output(g.node('MatMul', [pooled, g.initializer('w2', weights(D * E, 5), [D, E])]), 'float', ['N', E], 'image_embeds');
  g.output(attn, 'float', ['N', 64], 'patch_attention');
  return g.toBytes();
}

export const TABLE = weights(VOCAB * D, 6);
export const WT = weights(D * E, 7);

/**
 * A stand-in for a real CLIP text export: `input_ids` int64 [N, context] + `attention_mask` ->
 * `text_embeds` [N, E] = (masked mean of Gather(table, ids)) @ W.
 */
export function clipText(opts: { idsDims?: (number | string)[]; context?: number } = {}): Buffer {
  const L = opts.context ?? 77;
  const g = new Graph('clip-text');
  const ids = g.input('input_ids', 'int64', opts.idsDims ?? ['batch', L]);
  const mask = g.input('attention_mask', 'int64', ['batch', L]);
  const emb = g.node('Gather', [g.initializer('table', TABLE, [VOCAB, D]), ids], { axis: 0 }); // [N, L, D]
  const m = g.node('Cast', [mask], { to: 1 });
  const summed = g.node('ReduceSum', [g.node('Mul', [emb, g.node('Unsqueeze', [m, g.ints([2])])]), g.ints([1])], { keepdims: 0 });
  const mean = g.node('Div', [summed, g.node('ReduceSum', [m, g.ints([1])], { keepdims: 1 })]);
  g.output(g.node('MatMul', [mean, g.initializer('wt', WT, [D, E])]), 'float', ['batch', E], 'text_embeds');
  return g.toBytes();
}

/** What the text stand-in computes, in JS, for checking the wiring of ids and mask. */
export function expectedText(ids: number[], mask: number[]): Float32Array {
  const mean = new Float64Array(D);
  let n = 0;
  ids.forEach((id, j) => {
    if (!mask[j]) return;
    n++;
    for (let d = 0; d < D; d++) mean[d] += TABLE[id * D + d];
  });
  const out = new Float32Array(E);
  for (let e = 0; e < E; e++) for (let d = 0; d < D; d++) out[e] += (mean[d] / n) * WT[d * E + e];
  const norm = Math.hypot(...out);
  return out.map((v) => v / norm);
}

export function clipBundleJson(tokenizer: object): Record<string, unknown> {
  return {
    format: 'squeeze-bundle/1',
    version: 'test-clip-1',
    vision: {
      onnx: 'vision_model.onnx',
      kind: 'clip',
      preprocess: { size: [224, 224], resize: 'shortest-crop', mean: CLIP_MEAN, std: CLIP_STD, channels: 'RGB', scale: 1 },
      grid: { rows: 7, cols: 7 },
      inputs: { pixels: 'pixel_values' },
      outputs: { embeds: 'image_embeds', hidden: 'last_hidden_state' },
    },
    text: { onnx: 'text_model.onnx', tokenizer, inputs: { ids: 'input_ids', mask: 'attention_mask' }, outputs: { embeds: 'text_embeds' } },
    detector: null,
    tags: { vocabulary: ['cat', 'dog'], prompt: 'a photo of a {}', threshold: 0.25 },
  };
}

/** Writes a bundle directory; `files` maps names to contents. */
export function writeBundle(name: string, json: unknown, files: Record<string, Buffer | string>): string {
  const dir = join(tmp, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'bundle.json'), typeof json === 'string' ? json : JSON.stringify(json, null, 2));
  for (const [f, content] of Object.entries(files)) writeFileSync(join(dir, f), content);
  return dir;
}

/** A 672x448 photo-like image: a soft gradient with a red square exactly on patch (3, 5) after CLIP's shortest-crop. */
export async function photo(): Promise<Buffer> {
  const w = 672;
  const h = 448;
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      // resize 0.5 -> 336x224, crop left 56: model x = x / 2 - 56, patch col 5 = model x 160..192 = source x 432..496; row 3 = y 192..256
      const red = x >= 432 && x < 496 && y >= 192 && y < 256;
      raw.set(red ? [230, 20, 20] : [110 + (x * 40) / w, 120 + (y * 30) / h, 130], (y * w + x) * 3);
    }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 95 }).toBuffer();
}

export const norm = (v: Float32Array) => Math.hypot(...v);
export const sum = (v: Float32Array) => v.reduce((s, x) => s + x, 0);
export const argmax = (v: Float32Array) => v.indexOf(Math.max(...v));

export async function clipBundleDir(): Promise<string> {
  if (haveTokenizer) {
    return writeBundle('clip', clipBundleJson({ kind: 'clip-bpe', file: 'tokenizer.json', context: 77 }), {
      'vision_model.onnx': clipVision(),
      'text_model.onnx': clipText(),
      'tokenizer.json': readFileSync(join(TOKENIZER, 'tokenizer.json')),
      'tokenizer_config.json': readFileSync(join(TOKENIZER, 'tokenizer_config.json')),
    });
  }
  console.log('skipped: ../shared/models/clip_tokenizer absent (the clip bundle uses a words tokenizer instead)');
  return writeBundle('clip', clipBundleJson({ kind: 'words', vocab: 'words.json', context: 77 }), {
    'vision_model.onnx': clipVision(),
    'text_model.onnx': clipText(),
    'words.json': JSON.stringify({ a: 2, photo: 3, of: 4, cat: 5, dog: 6 }),
  });
}
