/**
 * Exports the built-in CLIP's two towers to ONNX with the project's graph writer (onnx/graph.ts).
 *
 * vision.onnx: `pixel_values` float32 [N, 3, S, S] (preprocessed, CHW) and `patch_mask` float32 [N, P]
 *   (1 keep, 0 drop; feed ones to keep every patch). The mask is a required input: an input with a default
 *   initializer would be optional in ONNX, but onnxruntime-node leaves such inputs out of `inputNames` and
 *   silently ignores them when fed.
 *   -> `image_embeds` [N, E] (unit length) and `patch_attention` [N, P] (softmax over the patches: the
 *   saliency). Patchified in-graph with Reshape/Transpose.
 * text.onnx: `input_ids` int64 [N, C], `attention_mask` int64 [N, C] -> `text_embeds` [N, E] (unit length).
 *
 * The graphs compute exactly what tiny-clip.ts computes (same op order up to float32 rounding); the bytes
 * depend on the parameters only, so the same weights always give the same files.
 */
import { Graph } from '../../models/onnx/graph';
import {
  COLOUR_EPS,
  CONTRAST_EPS,
  CORNER_EPS,
  DIRECTIONS,
  EDGE_EPS,
  GELU_A,
  GELU_C,
  gridOf,
  MASK_PENALTY,
  ORIENTATIONS,
  PAIRS,
  patchCount,
  patchDim,
  PRIOR_EPS,
  STEM_FEATURES,
  transpose,
  view,
  type TinyClipParams,
} from './tiny-clip';

export const VISION_IO = { pixels: 'pixel_values', mask: 'patch_mask', embeds: 'image_embeds', attention: 'patch_attention' } as const;
export const TEXT_IO = { ids: 'input_ids', mask: 'attention_mask', embeds: 'text_embeds' } as const;

function f32(a: ArrayLike<number>): Float32Array {
  return Float32Array.from(a);
}

/** Column-major copy of a [rows, cols] matrix, i.e. the [cols, rows] matrix MatMul wants for x . W^T. */
function transposed(p: TinyClipParams, g: Parameters<typeof view>[1], rows: number, cols: number): Float32Array {
  return f32(transpose(view(p, g), rows, cols, new Float64Array(rows * cols)));
}

function scalar(g: Graph, name: string, v: number): string {
  return g.initializer(name, [v], []);
}

/** y / (sqrt(sum y^2) + 1e-12) over the last axis of [N, E]. */
function normalise(g: Graph, y: string): string {
  const sq = g.node('Mul', [y, y]);
  const sum = g.node('ReduceSum', [sq, g.ints([1], 'norm_axes')], { keepdims: 1 });
  const norm = g.node('Add', [g.node('Sqrt', [sum]), scalar(g, 'norm_eps', 1e-12)]);
  return g.node('Div', [y, norm]);
}

/** logits [N, L] (+ extra [N, L]) + (mask - 1) * MASK_PENALTY, softmax, and the weighted sum of tokens [N, L, D] -> [N, D]. */
function attentionPool(g: Graph, tokens: string, query: Float32Array, mask: string, L: number, D: number, prefix: string, extra?: string): { weights: string; pooled: string } {
  const scaledQuery = g.initializer(`${prefix}.query_scaled`, query.map((v) => v / Math.sqrt(D)), [D, 1]);
  let logits = g.node('Reshape', [g.node('MatMul', [tokens, scaledQuery]), g.ints([-1, L], `${prefix}.logit_shape`)]);
  if (extra) logits = g.node('Add', [logits, extra]);
  const penalty = g.node('Mul', [g.node('Sub', [mask, scalar(g, `${prefix}.one`, 1)]), scalar(g, `${prefix}.penalty`, MASK_PENALTY)]);
  const weights = g.node('Softmax', [g.node('Add', [logits, penalty])], { axis: -1 });
  const pooled3 = g.node('MatMul', [g.node('Unsqueeze', [weights, g.ints([1], `${prefix}.unsqueeze_axes`)]), tokens]);
  const pooled = g.node('Reshape', [pooled3, g.ints([-1, D], `${prefix}.pooled_shape`)]);
  return { weights, pooled };
}

/** GELU, tanh form: 0.5 z (1 + tanh(c (z + a z^3))) */
const geluCount = new WeakMap<Graph, number>();
function gelu(g: Graph, z: string): string {
  const i = geluCount.get(g) ?? 0;
  geluCount.set(g, i + 1);
  const z3 = g.node('Mul', [g.node('Mul', [z, z]), z]);
  const inner = g.node('Mul', [g.node('Add', [z, g.node('Mul', [z3, scalar(g, `gelu_a${i}`, GELU_A)])]), scalar(g, `gelu_c${i}`, GELU_C)]);
  const gate = g.node('Add', [g.node('Tanh', [inner]), scalar(g, `gelu_one${i}`, 1)]);
  return g.node('Mul', [g.node('Mul', [z, gate]), scalar(g, `gelu_half${i}`, 0.5)]);
}

/** Channels [from, to) of an NCHW tensor. */
function channels(g: Graph, x: string, from: number, to: number, name: string): string {
  return g.node('Slice', [x, g.ints([from], `${name}.from`), g.ints([to], `${name}.to`), g.ints([1], `${name}.axis`)]);
}

/** The image stem (tiny-clip.ts imageStem) in ONNX: pixels [N, 3, S, S] -> features [N, P, F] and prior [N, P]. */
function stem(g: Graph, pixels: string, p: TinyClipParams): { features: string; prior: string } {
  const c = p.config;
  const S = c.image;
  const G = gridOf(c);
  const P = patchCount(c);
  const O = ORIENTATIONS;
  const Q = PAIRS.length;
  const F = STEM_FEATURES;
  // contrast
  const mean = g.node('ReduceMean', [pixels], { axes: [2, 3], keepdims: 1 });
  const dev = g.node('Sub', [pixels, mean]);
  const d = g.node('Sqrt', [g.node('ReduceMean', [g.node('Mul', [dev, dev])], { axes: [1], keepdims: 1 })]);
  const s = g.node('Div', [d, g.node('Add', [g.node('ReduceMean', [d], { axes: [2, 3], keepdims: 1 }), scalar(g, 'stem.contrast_eps', CONTRAST_EPS)])]);
  // signed edges in 8 directions: central differences with replicated borders
  const padded = g.node('Pad', [s, g.ints([0, 0, 1, 1, 0, 0, 1, 1], 'stem.edge_pads')], { mode: 'edge' });
  const kernels = new Float32Array(O * 9);
  DIRECTIONS.forEach(([cos, sin], k) => {
    kernels[k * 9 + 1 * 3 + 2] = cos;
    kernels[k * 9 + 1 * 3 + 0] = -cos;
    kernels[k * 9 + 2 * 3 + 1] = sin;
    kernels[k * 9 + 0 * 3 + 1] = -sin;
  });
  const edges = g.node('Relu', [g.node('Conv', [padded, g.initializer('stem.directions', kernels, [O, 1, 3, 3])], { kernel_shape: [3, 3] })]);
  // corners: products of the blurred edge maps, pairs k <= l
  const r = c.blur;
  const blurred = g.node('AveragePool', [edges], { kernel_shape: [2 * r + 1, 2 * r + 1], strides: [1, 1], pads: [r, r, r, r], count_include_pad: 0 });
  const outer = g.node('Mul', [g.node('Unsqueeze', [blurred, g.ints([2], 'stem.unsq2')]), g.node('Unsqueeze', [blurred, g.ints([1], 'stem.unsq1')])]);
  const flat = g.node('Reshape', [outer, g.ints([-1, O * O, S, S], 'stem.pairs_shape')]);
  const corners = g.node('Gather', [flat, g.initializer('stem.pairs', PAIRS.map(([k, l]) => k * O + l), [Q], 'int64')], { axis: 1 });
  // patch means of [edges, corners, s, colour, s * colour]
  const all = g.node('Concat', [edges, corners, s, pixels, g.node('Mul', [pixels, s])], { axis: 1 });
  const pm = g.node('AveragePool', [all], { kernel_shape: [c.patch, c.patch], strides: [c.patch, c.patch] });
  // neighbourhood means of the edge and corner statistics
  const w = c.window;
  const win = g.node('AveragePool', [channels(g, pm, 0, O + Q, 'stem.shape_stats')], {
    kernel_shape: [2 * w + 1, 2 * w + 1],
    strides: [1, 1],
    pads: [w, w, w, w],
    count_include_pad: 0,
  });
  const e = channels(g, win, 0, O, 'stem.e');
  const co = channels(g, win, O, O + Q, 'stem.co');
  const axis1 = g.ints([1], 'stem.sum_axes');
  const eSum = g.node('Add', [g.node('ReduceSum', [e, axis1], { keepdims: 1 }), scalar(g, 'stem.edge_eps', EDGE_EPS)]);
  const cSum = g.node('Add', [g.node('ReduceSum', [co, axis1], { keepdims: 1 }), scalar(g, 'stem.corner_eps', CORNER_EPS)]);
  const sBar = channels(g, pm, O + Q, O + Q + 1, 'stem.s');
  const logContrast = g.node('Log', [g.node('Add', [sBar, scalar(g, 'stem.prior_eps', PRIOR_EPS)])]);
  const colour = channels(g, pm, O + Q + 1, O + Q + 4, 'stem.rgb');
  const objectColour = g.node('Div', [channels(g, pm, O + Q + 4, O + Q + 7, 'stem.srgb'), g.node('Add', [sBar, scalar(g, 'stem.colour_eps', COLOUR_EPS)])]);
  const feat = g.node('Concat', [g.node('Div', [e, eSum]), g.node('Div', [co, cSum]), g.node('Log', [eSum]), logContrast, colour, objectColour], { axis: 1 });
  const features = g.node('Transpose', [g.node('Reshape', [feat, g.ints([-1, F, P], 'stem.feat_shape')])], { perm: [0, 2, 1] });
  const prior = g.node('Reshape', [logContrast, g.ints([-1, P], 'stem.prior_shape')]);
  if (G * G !== P) throw new Error('export: grid mismatch');
  return { features, prior };
}

export function exportVision(p: TinyClipParams, metadata: Record<string, string> = {}): Buffer {
  const c = p.config;
  const S = c.image;
  const G = gridOf(c);
  const P = patchCount(c);
  const K = patchDim(c);
  const g = new Graph('squeeze_builtin_clip_vision');
  const pixels = g.input(VISION_IO.pixels, 'float', ['N', 3, S, S]);
  const mask = g.input(VISION_IO.mask, 'float', ['N', P]);
  const { features, prior } = stem(g, pixels, p);
  const patches = g.node('Mul', [
    g.node('Sub', [features, g.initializer('img.in_shift', f32(view(p, 'img.in_shift')), [K])]),
    g.initializer('img.in_scale', f32(view(p, 'img.in_scale')), [K]),
  ]);
  const w1 = g.initializer('img.patch_w_t', transposed(p, 'img.patch_w', c.hidden, K), [K, c.hidden]);
  const b1 = view(p, 'img.patch_b');
  const pos = view(p, 'img.pos');
  const posBias = new Float32Array(P * c.hidden);
  for (let j = 0; j < P; j++) for (let k = 0; k < c.hidden; k++) posBias[j * c.hidden + k] = b1[k]! + pos[j * c.hidden + k]!;
  const z = g.node('Add', [g.node('MatMul', [patches, w1]), g.initializer('img.pos_bias', posBias, [P, c.hidden])]);
  const h1 = gelu(g, z);
  const w2 = g.initializer('img.w2_t', transposed(p, 'img.w2', c.width, c.hidden), [c.hidden, c.width]);
  const h = gelu(g, g.node('Add', [g.node('MatMul', [h1, w2]), g.initializer('img.b2', f32(view(p, 'img.b2')), [c.width])]));
  const priorTerm = g.node('Mul', [prior, scalar(g, 'img.contrast', view(p, 'img.contrast')[0]!)]);
  const { weights, pooled } = attentionPool(g, h, f32(view(p, 'img.query')), mask, P, c.width, 'img', priorTerm);
  const proj = g.initializer('img.proj_t', transposed(p, 'img.proj', c.embed, c.width), [c.width, c.embed]);
  const raw = g.node('Add', [g.node('MatMul', [pooled, proj]), g.initializer('img.proj_b', f32(view(p, 'img.proj_b')), [c.embed])]);
  const embeds = normalise(g, raw);
  g.output(embeds, 'float', ['N', c.embed], VISION_IO.embeds);
  g.output(weights, 'float', ['N', P], VISION_IO.attention);
  return g.toBytes({ model: 'squeeze builtin-clip', tower: 'vision', grid: `${G}x${G}`, ...metadata });
}

export function exportText(p: TinyClipParams, metadata: Record<string, string> = {}): Buffer {
  const c = p.config;
  const L = c.context;
  const g = new Graph('squeeze_builtin_clip_text');
  const ids = g.input(TEXT_IO.ids, 'int64', ['N', L]);
  const maskInt = g.input(TEXT_IO.mask, 'int64', ['N', L]);
  const mask = g.node('Cast', [maskInt], { to: 1 /* FLOAT */ });
  const tok = g.initializer('txt.tok', f32(view(p, 'txt.tok')), [c.vocab, c.width]);
  const tokens = g.node('Add', [g.node('Gather', [tok, ids], { axis: 0 }), g.initializer('txt.pos', f32(view(p, 'txt.pos')), [L, c.width])]);
  const wordBias = g.node('Gather', [g.initializer('txt.word_bias', f32(view(p, 'txt.word_bias')), [c.vocab]), ids], { axis: 0 });
  const { pooled } = attentionPool(g, tokens, f32(view(p, 'txt.query')), mask, L, c.width, 'txt', wordBias);
  const proj = g.initializer('txt.proj_t', transposed(p, 'txt.proj', c.embed, c.width), [c.width, c.embed]);
  const raw = g.node('Add', [g.node('MatMul', [pooled, proj]), g.initializer('txt.proj_b', f32(view(p, 'txt.proj_b')), [c.embed])]);
  const embeds = normalise(g, raw);
  g.output(embeds, 'float', ['N', c.embed], TEXT_IO.embeds);
  return g.toBytes({ model: 'squeeze builtin-clip', tower: 'text', ...metadata });
}
