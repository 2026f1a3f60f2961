/**
 * The built-in CLIP: a tiny image tower and text tower trained contrastively into one embedding space,
 * with a hand-written forward and backward in plain TypeScript (no autograd, no native code).
 *
 * Image tower (pixels CHW, normalised, `image` x `image`; P = (image / patch)^2 patches):
 *   stem      x_j = imageStem(pixels)_j: 52 fixed (parameter-free) features of patch j: edge-direction and
 *                   corner histograms of its neighbourhood, contrast, colour (see imageStem)    [P, 52]
 *   standard  x'_j = (x_j - shift) * scale (a buffer set from the training data, not trained)
 *   embed     z_j = W1 x'_j + b1 + pos_j             (patch embedding + position embedding)     [P, hidden]
 *   features  h_j = gelu(W2 gelu(z_j) + b2)           (per-patch MLP)                           [P, width]
 *   attention s_j = (q . h_j) / sqrt(width) + alpha * prior_j + (mask_j - 1) * 1e4, a = softmax(s)
 *             prior_j = log(mean contrast of patch j + 0.05), alpha learned (starts at 1: attention
 *             proportional to contrast, which puts it on the objects from the first step)
 *   pooled    g   = sum_j a_j h_j                                                               [width]
 *   embedding e   = normalise(Wp g + bp)                                                        [embed]
 * The attention weights a_j are the saliency: what the image embedding is made of.
 *
 * Text tower (word ids, `context` long, 0 = padding):
 *   t_i = tok[id_i] + pos_i; s_i = (q_t . t_i) / sqrt(width) + wb[id_i] + (mask_i - 1) * 1e4 (wb: a learned
 *   attention bias per word); a = softmax(s); embedding = normalise(Wt sum_i a_i t_i + bt).
 *
 * Loss: symmetric InfoNCE over the batch, logits = exp(logit_scale) * cos(image, text), logit_scale learned
 * (clamped to ln 100 by the trainer); plus, optionally, the auxiliary tag loss (tagLoss): a sigmoid loss of
 * each image against the tag prompts of every kind, which shapes the space for thresholded zero-shot tags.
 * The projection biases start centred on the data (centreProjections), so that learning starts at once.
 *
 * The mask term (mask - 1) * 1e4 is exactly what the ONNX export computes, so a kept patch (1) adds 0 and a
 * dropped one (0) gets a weight of exactly 0 (exp underflows) in both float32 and float64.
 *
 * Parameters live in one flat array (Float32Array for training and export; Float64Array works everywhere
 * too, which the gradient check uses). Activations are computed in the parameters' precision.
 *
 * lossAndGrad computes a whole batch on the calling thread (the gradient checks use it); training uses
 * parallel.ts's shardedLossAndGrad, the same loss with the image tower split into fixed shards of the batch
 * that worker threads run (imageForwardStem / imageBackward per shard, gradients summed in shard order).
 * Every image's forward is independent of the other rows of its batch (no product mixes rows), so only the
 * order of the image-tower gradient sums differs from lossAndGrad.
 */

export interface TinyClipConfig {
  /** square input side in pixels */
  image: number;
  /** square patch side in pixels; image must be a multiple */
  patch: number;
  /** stem: radius in pixels of the box blur of the edge maps before their products (corners) */
  blur: number;
  /** stem: radius in patches of the neighbourhood whose edge statistics describe a patch */
  window: number;
  /** patch embedding width (before GELU) */
  hidden: number;
  /** token width of both towers (attention pooling happens here) */
  width: number;
  /** joint embedding size */
  embed: number;
  /** vocabulary size, including padding (0) and unknown (1) */
  vocab: number;
  /** text context length in words */
  context: number;
}

export type Arr = Float32Array | Float64Array;

export const PARAM_GROUPS = [
  'img.in_shift',
  'img.in_scale',
  'img.patch_w',
  'img.patch_b',
  'img.pos',
  'img.w2',
  'img.b2',
  'img.query',
  'img.contrast',
  'img.proj',
  'img.proj_b',
  'txt.tok',
  'txt.pos',
  'txt.query',
  'txt.word_bias',
  'txt.proj',
  'txt.proj_b',
  'logit_scale',
  'tag.scale',
  'tag.bias',
] as const;
export type ParamGroup = (typeof PARAM_GROUPS)[number];
/**
 * Fixed after initialisation (no gradient): the standardisation of the stem features, x' = (x - shift) *
 * scale, set from the training data's feature means and deviations (`standardiseInputs`).
 */
export const BUFFER_GROUPS: readonly ParamGroup[] = ['img.in_shift', 'img.in_scale'];

export interface Layout {
  offset: number;
  size: number;
  shape: number[];
}

export interface TinyClipParams {
  config: TinyClipConfig;
  /** all parameters, flat, in PARAM_GROUPS order */
  data: Arr;
  layout: Record<ParamGroup, Layout>;
}

export const MASK_PENALTY = 1e4;
/** initial weight of the contrast prior in the image attention logits */
export const CONTRAST_INIT = 1;
export const CONTRAST_EPS = 1e-6;
/** the attention prior is log(mean contrast + PRIOR_EPS): weights proportional to contrast at weight 1 */
export const PRIOR_EPS = 0.05;
/** edge directions of the stem, every 45 degrees */
export const ORIENTATIONS = 8;
/** pairs k <= l of edge directions: the corner statistics */
export const PAIRS: readonly (readonly [number, number])[] = (() => {
  const out: [number, number][] = [];
  for (let k = 0; k < ORIENTATIONS; k++) for (let l = k; l < ORIENTATIONS; l++) out.push([k, l]);
  return out;
})();
/** stem features per patch: edge histogram, corner histogram, log edge amount, log contrast (the prior), colour, object colour */
export const STEM_FEATURES = ORIENTATIONS + PAIRS.length + 1 + 1 + 3 + 3;
/** index of the log-contrast feature (also the attention prior) */
export const PRIOR_FEATURE = ORIENTATIONS + PAIRS.length + 1;
export const EDGE_EPS = 0.05;
export const CORNER_EPS = 0.01;
export const COLOUR_EPS = 1e-3;
/** [cos, sin] of the edge directions, exact at the axes */
export const DIRECTIONS: readonly (readonly [number, number])[] = Array.from({ length: ORIENTATIONS }, (_, k) => {
  const r = (v: number) => (Math.abs(v) < 1e-12 ? 0 : Math.abs(Math.abs(v) - 1) < 1e-12 ? Math.sign(v) : v);
  return [r(Math.cos((k * 2 * Math.PI) / ORIENTATIONS)), r(Math.sin((k * 2 * Math.PI) / ORIENTATIONS))] as const;
});
/** sqrt(2 / pi), the GELU tanh approximation's constant */
export const GELU_C = 0.7978845608028654;
export const GELU_A = 0.044715;

export function gridOf(c: TinyClipConfig): number {
  return c.image / c.patch;
}

export function patchCount(c: TinyClipConfig): number {
  return gridOf(c) ** 2;
}

/** values per patch out of the stem (see imageStem) */
export function patchDim(_c?: TinyClipConfig): number {
  return STEM_FEATURES;
}

export function layoutOf(c: TinyClipConfig): { layout: Record<ParamGroup, Layout>; total: number } {
  if (!Number.isInteger(c.image / c.patch)) throw new Error(`tiny-clip: image ${c.image} is not a multiple of patch ${c.patch}`);
  const P = patchCount(c);
  const shapes: Record<ParamGroup, number[]> = {
    'img.in_shift': [patchDim(c)],
    'img.in_scale': [patchDim(c)],
    'img.patch_w': [c.hidden, patchDim(c)],
    'img.patch_b': [c.hidden],
    'img.pos': [P, c.hidden],
    'img.w2': [c.width, c.hidden],
    'img.b2': [c.width],
    'img.query': [c.width],
    'img.contrast': [1],
    'img.proj': [c.embed, c.width],
    'img.proj_b': [c.embed],
    'txt.tok': [c.vocab, c.width],
    'txt.pos': [c.context, c.width],
    'txt.query': [c.width],
    'txt.word_bias': [c.vocab],
    'txt.proj': [c.embed, c.width],
    'txt.proj_b': [c.embed],
    logit_scale: [1],
    'tag.scale': [1],
    'tag.bias': [1],
  };
  let offset = 0;
  const layout = {} as Record<ParamGroup, Layout>;
  for (const g of PARAM_GROUPS) {
    const size = shapes[g].reduce((a, b) => a * b, 1);
    layout[g] = { offset, size, shape: shapes[g] };
    offset += size;
  }
  return { layout, total: offset };
}

/** A view of one parameter group (shares memory with `p.data`, or with `flat` when given). */
export function view(p: TinyClipParams, g: ParamGroup, flat: Arr = p.data): Arr {
  const l = p.layout[g];
  return flat.subarray(l.offset, l.offset + l.size);
}

/** Seeded normal draws (mulberry32 + Box-Muller): the same seed gives the same parameters everywhere. */
export class SeededNormal {
  private state: number;
  private spare: number | null = null;
  constructor(seed: number) {
    this.state = (seed ^ 0x5bd1e995) >>> 0;
  }
  uniform(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const u = 1 - this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** Deterministic initial parameters. `precision` 64 gives a Float64Array (gradient checks). */
export function initParams(config: TinyClipConfig, seed: number, precision: 32 | 64 = 32): TinyClipParams {
  const { layout, total } = layoutOf(config);
  const data = precision === 64 ? new Float64Array(total) : new Float32Array(total);
  const p: TinyClipParams = { config, data, layout };
  const rng = new SeededNormal(seed);
  const fill = (g: ParamGroup, std: number) => {
    const v = view(p, g);
    for (let i = 0; i < v.length; i++) v[i] = rng.normal() * std;
  };
  const c = config;
  view(p, 'img.in_scale').fill(1);
  fill('img.patch_w', 1 / Math.sqrt(patchDim(c)));
  fill('img.patch_b', 0);
  fill('img.pos', 0.1);
  fill('img.w2', 1 / Math.sqrt(c.hidden));
  fill('img.b2', 0);
  fill('img.query', 0);
  view(p, 'img.contrast')[0] = CONTRAST_INIT;
  fill('img.proj', 1 / Math.sqrt(c.width));
  fill('txt.tok', 1);
  fill('txt.pos', 0.1);
  fill('txt.query', 0);
  fill('txt.proj', 1 / Math.sqrt(c.width));
  view(p, 'logit_scale')[0] = Math.log(10);
  view(p, 'tag.scale')[0] = Math.log(10);
  view(p, 'tag.bias')[0] = -5;
  return p;
}

/**
 * Data-dependent start for the projection biases: minus the mean projected embedding of a sample batch,
 * per tower. At random init every image embedding shares a large common component (the background
 * dominates the uniform attention) and every caption one (the common words), so all cosines start near 1;
 * centring removes that and learning starts at once instead of after a long plateau.
 */
export function centreProjections(p: TinyClipParams, batch: Pick<Batch, 'n' | 'pixels' | 'stem' | 'ids' | 'textMask'>): void {
  const e = p.config.embed;
  for (const [g, raw] of [
    ['img.proj_b', (batch.stem ? imageForwardStem(p, batch.stem, batch.n) : imageForward(p, batch.pixels!, batch.n)).raw],
    ['txt.proj_b', textForward(p, batch.ids, batch.textMask, batch.n).raw],
  ] as const) {
    const b = view(p, g);
    const mean = new Float64Array(e);
    for (let i = 0; i < batch.n; i++) for (let k = 0; k < e; k++) mean[k] += raw[i * e + k] / batch.n;
    for (let k = 0; k < e; k++) b[k] -= mean[k];
  }
}

/** Sets the stem-feature standardisation (a buffer) from sample stem outputs: mean and 1 / deviation per feature. */
export function standardiseInputs(p: TinyClipParams, X: ArrayLike<number>, rows: number): void {
  const K = patchDim(p.config);
  const shift = view(p, 'img.in_shift');
  const scale = view(p, 'img.in_scale');
  const mean = new Float64Array(K);
  const sq = new Float64Array(K);
  for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) mean[k] += X[r * K + k] / rows;
  for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) sq[k] += (X[r * K + k] - mean[k]) ** 2 / rows;
  for (let k = 0; k < K; k++) {
    shift[k] = mean[k];
    scale[k] = 1 / Math.sqrt(sq[k] + 1e-4);
  }
}

function alloc(like: Arr, n: number): Arr {
  return like instanceof Float64Array ? new Float64Array(n) : new Float32Array(n);
}

// ---------------------------------------------------------------------------------------------------
// Kernels

// WebAssembly SIMD kernel for float32 products ----------------------------------------------------------

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/**
 * The bytes of a WebAssembly module exporting mm(a, b, c, M, N, K): C[M, N] = A[M, K] . B[N, K]^T in float32,
 * A, B and C at byte offsets a, b, c of the imported memory env.mem; M even, N and K multiples of 4. Blocks of
 * 2 rows of A by 4 rows of B, f32x4 along K; every output is the sum of its 4 lanes in a fixed order, so the
 * results are the same on every run and machine (WebAssembly arithmetic is IEEE, with no fused multiply-add).
 */
function matmulWasmBytes(): Uint8Array {
  const I32 = 0x7f;
  const V128 = 0x7b;
  const get = (i: number) => [0x20, i];
  const set = (i: number) => [0x21, i];
  const simd = (op: number, ...imm: number[]) => [0xfd, ...leb(op), ...imm];
  const [A, B, Cp, M, N, K, i, j, k, pa0, pa1, pb0, pb1, pb2, pb3, row, pc] = Array.from({ length: 17 }, (_, x) => x);
  const acc = (r: number, q: number) => 17 + r * 4 + q;
  const va = (r: number) => 25 + r;
  const vb = 27;
  const code: number[] = [];
  const emit = (...xs: (number | number[])[]) => {
    for (const x of xs) Array.isArray(x) ? code.push(...x) : code.push(x);
  };
  const hsum = (v: number) => [...get(v), ...simd(0x1f, 0), ...get(v), ...simd(0x1f, 1), 0x92, ...get(v), ...simd(0x1f, 2), 0x92, ...get(v), ...simd(0x1f, 3), 0x92];
  emit(get(K), 0x41, 2, 0x74, set(row)); // row = K << 2 (bytes per row)
  emit(0x41, 0, set(i));
  emit(0x02, 0x40, 0x03, 0x40); // block loop (i)
  emit(get(i), get(M), 0x4f, 0x0d, 1); // i >= M: break
  emit(get(A), get(i), get(row), 0x6c, 0x6a, set(pa0));
  emit(get(pa0), get(row), 0x6a, set(pa1));
  emit(0x41, 0, set(j));
  emit(0x02, 0x40, 0x03, 0x40); // block loop (j)
  emit(get(j), get(N), 0x4f, 0x0d, 1);
  emit(get(B), get(j), get(row), 0x6c, 0x6a, set(pb0));
  emit(get(pb0), get(row), 0x6a, set(pb1));
  emit(get(pb1), get(row), 0x6a, set(pb2));
  emit(get(pb2), get(row), 0x6a, set(pb3));
  for (let r = 0; r < 2; r++) for (let q = 0; q < 4; q++) emit(simd(0x0c, ...new Array<number>(16).fill(0)), set(acc(r, q)));
  emit(0x41, 0, set(k));
  emit(0x02, 0x40, 0x03, 0x40); // block loop (k)
  emit(get(k), get(row), 0x4f, 0x0d, 1);
  emit(get(pa0), get(k), 0x6a, simd(0x00, 2, 0), set(va(0)));
  emit(get(pa1), get(k), 0x6a, simd(0x00, 2, 0), set(va(1)));
  [pb0, pb1, pb2, pb3].forEach((pb, q) => {
    emit(get(pb), get(k), 0x6a, simd(0x00, 2, 0), set(vb));
    for (let r = 0; r < 2; r++) emit(get(acc(r, q)), get(va(r)), get(vb), simd(0xe6), simd(0xe4), set(acc(r, q)));
  });
  emit(get(k), 0x41, 16, 0x6a, set(k));
  emit(0x0c, 0, 0x0b, 0x0b); // br loop; end loop; end block
  // c + ((i * N + j) << 2), then the row below it
  emit(get(Cp), get(i), get(N), 0x6c, get(j), 0x6a, 0x41, 2, 0x74, 0x6a, set(pc));
  for (let r = 0; r < 2; r++) {
    for (let q = 0; q < 4; q++) emit(get(pc), hsum(acc(r, q)), 0x38, 2, ...leb(q * 4));
    if (r === 0) emit(get(pc), get(N), 0x41, 2, 0x74, 0x6a, set(pc));
  }
  emit(get(j), 0x41, 4, 0x6a, set(j));
  emit(0x0c, 0, 0x0b, 0x0b);
  emit(get(i), 0x41, 2, 0x6a, set(i));
  emit(0x0c, 0, 0x0b, 0x0b);
  emit(0x0b); // end function
  const locals = [2, ...leb(11), I32, ...leb(11), V128];
  const body = [...locals, ...code];
  const section = (id: number, bytes: number[]) => [id, ...leb(bytes.length), ...bytes];
  const name = (t: string) => [...leb(t.length), ...Buffer.from(t)];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 6, I32, I32, I32, I32, I32, I32, 0]),
    ...section(2, [1, ...name('env'), ...name('mem'), 0x02, 0x00, 1]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...name('mm'), 0x00, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

/** The few WebAssembly APIs used (the project's TypeScript libs do not declare WebAssembly). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Memory: new (descriptor: { initial: number }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}

interface WasmKernel {
  memory: WasmMemory;
  mm: (a: number, b: number, c: number, M: number, N: number, K: number) => void;
}

let wasmKernel: WasmKernel | null | undefined;

/** The SIMD kernel, or null where WebAssembly SIMD is unavailable (then the JS kernel runs). */
function kernel(): WasmKernel | null {
  if (wasmKernel === undefined) {
    try {
      const api = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
      if (!api) throw new Error('no WebAssembly');
      const memory = new api.Memory({ initial: 16 });
      const instance = new api.Instance(new api.Module(matmulWasmBytes()), { env: { mem: memory } });
      wasmKernel = { memory, mm: instance.exports.mm as WasmKernel['mm'] };
    } catch {
      wasmKernel = null;
    }
  }
  return wasmKernel;
}

/** Whether float32 products run on the WebAssembly SIMD kernel. */
export function simdAvailable(): boolean {
  return kernel() !== null;
}

function matmulWasm(w: WasmKernel, A: Float32Array, B: Float32Array, C: Float32Array, M: number, K: number, N: number, accumulate: boolean): void {
  const Kp = (K + 3) & ~3;
  const Mp = (M + 1) & ~1;
  const Np = (N + 3) & ~3;
  const aOff = 0;
  const bOff = aOff + Mp * Kp;
  const cOff = bOff + Np * Kp;
  const need = (cOff + Mp * Np) * 4;
  if (need > w.memory.buffer.byteLength) w.memory.grow(Math.ceil((need - w.memory.buffer.byteLength) / 65536));
  const mem = new Float32Array(w.memory.buffer);
  if (Kp === K) {
    mem.set(A.subarray(0, M * K), aOff);
    mem.set(B.subarray(0, N * K), bOff);
    mem.fill(0, aOff + M * K, aOff + Mp * Kp);
    mem.fill(0, bOff + N * K, bOff + Np * Kp);
  } else {
    mem.fill(0, aOff, cOff);
    for (let r = 0; r < M; r++) mem.set(A.subarray(r * K, r * K + K), aOff + r * Kp);
    for (let r = 0; r < N; r++) mem.set(B.subarray(r * K, r * K + K), bOff + r * Kp);
  }
  w.mm(aOff * 4, bOff * 4, cOff * 4, Mp, Np, Kp);
  for (let r = 0; r < M; r++) {
    const src = cOff + r * Np;
    const dst = r * N;
    if (accumulate) for (let c = 0; c < N; c++) C[dst + c] += mem[src + c];
    else if (Np === N) C.set(mem.subarray(src, src + N), dst);
    else for (let c = 0; c < N; c++) C[dst + c] = mem[src + c];
  }
}

/**
 * C[M,N] (+)= A[M,K] . B[N,K]^T. Float32 operands run on a WebAssembly SIMD kernel (float32 sums); others
 * on a JS loop with 4 x 2 register blocks (float64 sums, used by the gradient check). Both have a fixed
 * summation order, so results are reproducible bit for bit.
 */
export function matmulNT(A: Arr, B: Arr, C: Arr, M: number, K: number, N: number, accumulate = false): void {
  if (A instanceof Float32Array && B instanceof Float32Array && C instanceof Float32Array && M * N * K >= 4096) {
    const w = kernel();
    if (w) {
      matmulWasm(w, A, B, C, M, K, N, accumulate);
      return;
    }
  }
  matmulJs(A, B, C, M, K, N, accumulate);
}

function matmulJs(A: Arr, B: Arr, C: Arr, M: number, K: number, N: number, accumulate: boolean): void {
  const M4 = M - (M % 4);
  const N2 = N - (N % 2);
  for (let i = 0; i < M4; i += 4) {
    const a0 = i * K;
    const a1 = a0 + K;
    const a2 = a1 + K;
    const a3 = a2 + K;
    for (let j = 0; j < N2; j += 2) {
      const b0 = j * K;
      const b1 = b0 + K;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
      for (let k = 0; k < K; k++) {
        const y0 = B[b0 + k];
        const y1 = B[b1 + k];
        const x0 = A[a0 + k];
        const x1 = A[a1 + k];
        const x2 = A[a2 + k];
        const x3 = A[a3 + k];
        s00 += x0 * y0;
        s01 += x0 * y1;
        s10 += x1 * y0;
        s11 += x1 * y1;
        s20 += x2 * y0;
        s21 += x2 * y1;
        s30 += x3 * y0;
        s31 += x3 * y1;
      }
      const c = i * N + j;
      if (accumulate) {
        C[c] += s00; C[c + 1] += s01; C[c + N] += s10; C[c + N + 1] += s11;
        C[c + 2 * N] += s20; C[c + 2 * N + 1] += s21; C[c + 3 * N] += s30; C[c + 3 * N + 1] += s31;
      } else {
        C[c] = s00; C[c + 1] = s01; C[c + N] = s10; C[c + N + 1] = s11;
        C[c + 2 * N] = s20; C[c + 2 * N + 1] = s21; C[c + 3 * N] = s30; C[c + 3 * N + 1] = s31;
      }
    }
    for (let j = N2; j < N; j++) {
      for (let r = 0; r < 4; r++) {
        const a = (i + r) * K;
        const b = j * K;
        let s = 0;
        for (let k = 0; k < K; k++) s += A[a + k] * B[b + k];
        if (accumulate) C[(i + r) * N + j] += s;
        else C[(i + r) * N + j] = s;
      }
    }
  }
  for (let i = M4; i < M; i++) {
    const a = i * K;
    for (let j = 0; j < N; j++) {
      const b = j * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += A[a + k] * B[b + k];
      if (accumulate) C[i * N + j] += s;
      else C[i * N + j] = s;
    }
  }
}

/** out[N,M] = A[M,N]^T */
export function transpose(A: Arr, M: number, N: number, out: Arr): Arr {
  for (let i = 0; i < M; i++) {
    const r = i * N;
    for (let j = 0; j < N; j++) out[j * M + i] = A[r + j];
  }
  return out;
}

function addBias(x: Arr, b: Arr, n: number, d: number): void {
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) x[i * d + k] += b[k];
}

/** out[d] += sum over rows of x [n, d] */
function sumRows(x: Arr, n: number, d: number, out: Arr): void {
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) out[k] += x[i * d + k];
}



/** tanh through exp: about twice as fast as Math.tanh in V8, within 1e-16 of it. */
function tanh(x: number): number {
  return 1 - 2 / (Math.exp(2 * x) + 1);
}

/** Rows of `x` [n, d] scaled to unit length; returns the norms. */
export function normaliseRows(x: Arr, n: number, d: number, out: Arr): Float64Array {
  const norms = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += x[i * d + k] * x[i * d + k];
    const norm = Math.sqrt(s) + 1e-12;
    norms[i] = norm;
    for (let k = 0; k < d; k++) out[i * d + k] = x[i * d + k] / norm;
  }
  return norms;
}

/** d(normalise)/dx applied to the upstream gradient `dy`, rows of length d. */
export function normaliseBackward(y: Arr, norms: Float64Array, dy: Arr, n: number, d: number, dx: Arr): void {
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let k = 0; k < d; k++) dot += y[i * d + k] * dy[i * d + k];
    for (let k = 0; k < d; k++) dx[i * d + k] = (dy[i * d + k] - y[i * d + k] * dot) / norms[i];
  }
}

/**
 * Attention pooling of n sets of L tokens [n, L, d]: logits = q . x / sqrt(d) + (mask - 1) * 1e4,
 * weights = softmax, pooled = sum weights * x.
 */
function attentionPool(x: Arr, q: Arr, mask: ArrayLike<number> | null, n: number, L: number, d: number, weights: Arr, pooled: Arr, prior: { values: Arr; weight: number } | null = null): void {
  const inv = 1 / Math.sqrt(d);
  const penalty = MASK_PENALTY;
  for (let b = 0; b < n; b++) {
    let max = -Infinity;
    for (let j = 0; j < L; j++) {
      const xo = (b * L + j) * d;
      let s = 0;
      for (let k = 0; k < d; k++) s += q[k] * x[xo + k];
      s *= inv;
      if (prior) s += prior.weight * prior.values[b * L + j];
      if (mask) s += (mask[b * L + j] - 1) * penalty;
      weights[b * L + j] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let j = 0; j < L; j++) {
      const e = Math.exp(weights[b * L + j] - max);
      weights[b * L + j] = e;
      sum += e;
    }
    for (let k = 0; k < d; k++) pooled[b * d + k] = 0;
    for (let j = 0; j < L; j++) {
      const w = (weights[b * L + j] /= sum);
      if (w === 0) continue;
      const xo = (b * L + j) * d;
      for (let k = 0; k < d; k++) pooled[b * d + k] += w * x[xo + k];
    }
  }
}

/** Backward of attentionPool: adds into dx [n, L, d] and dq [d], and writes the gradient of every logit into dLogits [n, L]. */
function attentionPoolBackward(x: Arr, q: Arr, weights: Arr, dPooled: Arr, n: number, L: number, d: number, dx: Arr, dq: Arr, dLogits: Float64Array): void {
  const inv = 1 / Math.sqrt(d);
  const da = new Float64Array(L);
  for (let b = 0; b < n; b++) {
    let dot = 0;
    for (let j = 0; j < L; j++) {
      const xo = (b * L + j) * d;
      let s = 0;
      for (let k = 0; k < d; k++) s += dPooled[b * d + k] * x[xo + k];
      da[j] = s;
      dot += weights[b * L + j] * s;
    }
    for (let j = 0; j < L; j++) {
      const a = weights[b * L + j];
      dLogits[b * L + j] = a * (da[j] - dot);
      const ds = a * (da[j] - dot) * inv;
      const xo = (b * L + j) * d;
      for (let k = 0; k < d; k++) {
        dx[xo + k] += a * dPooled[b * d + k] + ds * q[k];
        dq[k] += ds * x[xo + k];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Image tower

export interface StemOutput {
  /** patch features [n * P, STEM_FEATURES] */
  X: Arr;
  /** the attention prior of every patch [n * P]: log(mean contrast + 0.05) */
  prior: Arr;
  /**
   * FLIP-style training on a subset of each image's patches (gatherPatches): T tokens per image instead of P,
   * `index` [n * T] the grid position of each token (its position embedding). Padding tokens are masked out.
   */
  tokens?: number;
  index?: ArrayLike<number>;
}

/**
 * The stem output of only the listed patches of each image, padded to the longest list with masked tokens:
 * the tower then costs in proportion to the kept patches (FLIP). `keep[b]` lists image b's grid positions.
 * Returns the gathered stem and the token mask [n, T].
 */
export function gatherPatches(c: TinyClipConfig, stem: StemOutput, n: number, keep: readonly (readonly number[])[]): { stem: StemOutput; mask: Float32Array } {
  const P = patchCount(c);
  const K = patchDim(c);
  const T = Math.max(1, ...keep.map((k) => k.length));
  const X = alloc(stem.X, n * T * K);
  const prior = alloc(stem.prior, n * T);
  const index = new Int32Array(n * T);
  const mask = new Float32Array(n * T);
  for (let b = 0; b < n; b++) {
    keep[b]!.forEach((j, t) => {
      if (!(j >= 0 && j < P)) throw new RangeError(`gatherPatches: patch ${j} outside the ${P}-patch grid`);
      X.set(stem.X.subarray((b * P + j) * K, (b * P + j + 1) * K), (b * T + t) * K);
      prior[b * T + t] = stem.prior[b * P + j]!;
      index[b * T + t] = j;
      mask[b * T + t] = 1;
    });
  }
  return { stem: { X, prior, tokens: T, index }, mask };
}

/** Mean over the valid pixels of a (2r+1)-square window around each pixel of a plane (ONNX AveragePool, count_include_pad=0), separably. */
function boxMean(src: Float64Array, off: number, H: number, W: number, r: number, dst: Float64Array, tmp: Float64Array): void {
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const x0 = x - r < 0 ? 0 : x - r;
      const x1 = x + r > W - 1 ? W - 1 : x + r;
      let v = 0;
      for (let xx = x0; xx <= x1; xx++) v += src[off + y * W + xx];
      tmp[y * W + x] = v / (x1 - x0 + 1);
    }
  }
  for (let y = 0; y < H; y++) {
    const y0 = y - r < 0 ? 0 : y - r;
    const y1 = y + r > H - 1 ? H - 1 : y + r;
    for (let x = 0; x < W; x++) {
      let v = 0;
      for (let yy = y0; yy <= y1; yy++) v += tmp[yy * W + x];
      dst[off + y * W + x] = v / (y1 - y0 + 1);
    }
  }
}

/**
 * The fixed (parameter-free) stem of the image tower: normalised pixels [n, 3, S, S] to patch features
 * [n * P, STEM_FEATURES]. Everything learned comes after it. Per image:
 * 1. contrast: d = sqrt(mean over channels of (x_c - m_c)^2), m_c the image's channel means (each pixel's
 *    colour distance from the image's average colour); s = d / (mean d + 1e-6): about 1 on average, high on
 *    the objects whatever their colours (a colour-blind silhouette);
 * 2. edges: gx, gy central differences of s (edge-replicated), e_k = relu(gx cos t_k + gy sin t_k) for the
 *    8 directions t_k = k * 45 deg (signed, so the inside of a shape is known);
 * 3. corners: b_k = e_k box-blurred over (2 blur + 1)^2 pixels, and b_k * b_l for the 36 pairs k <= l: which
 *    edge directions meet where (a square's corners pair axis directions, a star's tips pair directions 144
 *    deg apart, a circle pairs neighbours only);
 * 4. patch means of e_k, the corner products, s, the colour x_c and s * x_c;
 * 5. the edge and corner means averaged again over the patch's neighbourhood of (2 window + 1)^2 patches, so a
 *    patch describes the shape it is part of, not just its fragment.
 * Features (52): the neighbourhood edge histogram e / (sum e + 0.05) (8), corner histogram c / (sum c + 0.01)
 * (36), log(sum e + 0.05), log(mean s + 0.05) (the attention prior), mean colour (3), contrast-weighted colour
 * mean(s x) / (mean s + 1e-3) (3: the object's colour rather than the background's).
 * Histograms are shift- and scale-tolerant: one object's patches describe it alike wherever it is.
 */
export function imageStem(c: TinyClipConfig, pixels: ArrayLike<number>, n: number, precision: 32 | 64 = 32): StemOutput {
  const S = c.image;
  const A = S * S;
  const p = c.patch;
  const G = S / p;
  const P = G * G;
  const F = STEM_FEATURES;
  const O = ORIENTATIONS;
  const Q = PAIRS.length;
  const X = precision === 64 ? new Float64Array(n * P * F) : new Float32Array(n * P * F);
  const prior = precision === 64 ? new Float64Array(n * P) : new Float32Array(n * P);
  const s = new Float64Array(A);
  const e = new Float64Array(O * A);
  const blurred = new Float64Array(O * A);
  const tmp = new Float64Array(A);
  // per patch: edge means (O), corner means (Q), s, rgb (3), s*rgb (3)
  const PM = O + Q + 7;
  const pm = new Float64Array(PM * P);
  const win = new Float64Array((O + Q) * P);
  const tmpG = new Float64Array(P);
  // every array in the loops below is a Float64Array (monomorphic element access); the pixels are copied
  // into one per image (exact), the directions into two
  const px = new Float64Array(3 * A);
  const dirX = Float64Array.from(DIRECTIONS, (d) => d[0]);
  const dirY = Float64Array.from(DIRECTIONS, (d) => d[1]);
  for (let b = 0; b < n; b++) {
    const base = b * 3 * A;
    for (let i = 0; i < 3 * A; i++) px[i] = pixels[base + i];
    const m = [0, 0, 0];
    for (let ch = 0; ch < 3; ch++) {
      let sum = 0;
      for (let i = 0; i < A; i++) sum += px[ch * A + i];
      m[ch] = sum / A;
    }
    let total = 0;
    for (let i = 0; i < A; i++) {
      let u = 0;
      for (let ch = 0; ch < 3; ch++) {
        const v = px[ch * A + i] - m[ch];
        u += v * v;
      }
      const d = Math.sqrt(u / 3);
      s[i] = d;
      total += d;
    }
    const norm = total / A + CONTRAST_EPS;
    for (let i = 0; i < A; i++) s[i] /= norm;
    for (let y = 0; y < S; y++) {
      const up = (y > 0 ? y - 1 : 0) * S;
      const down = (y < S - 1 ? y + 1 : S - 1) * S;
      for (let x = 0; x < S; x++) {
        const gx = s[y * S + (x < S - 1 ? x + 1 : S - 1)] - s[y * S + (x > 0 ? x - 1 : 0)];
        const gy = s[down + x] - s[up + x];
        for (let k = 0; k < O; k++) {
          const v = gx * dirX[k] + gy * dirY[k];
          e[k * A + y * S + x] = v > 0 ? v : 0;
        }
      }
    }
    for (let k = 0; k < O; k++) boxMean(e, k * A, S, S, c.blur, blurred, tmp);
    pm.fill(0);
    const inv = 1 / (p * p);
    // patch means, plane by plane: f < O edges, then the corner products, then s, colour, s * colour
    for (let f = 0; f < PM; f++) {
      let pa: Float64Array = e;
      let pb: Float64Array | null = null;
      let oa = 0;
      let ob = 0;
      if (f < O) oa = f * A;
      else if (f < O + Q) {
        pa = blurred;
        pb = blurred;
        oa = PAIRS[f - O]![0] * A;
        ob = PAIRS[f - O]![1] * A;
      } else if (f === O + Q) pa = s;
      else if (f < O + Q + 4) {
        pa = px;
        oa = (f - O - Q - 1) * A;
      } else {
        pa = px;
        oa = (f - O - Q - 4) * A;
        pb = s;
      }
      for (let gy = 0; gy < G; gy++) {
        for (let gx = 0; gx < G; gx++) {
          let v = 0;
          for (let y = gy * p; y < (gy + 1) * p; y++) {
            const row = y * S + gx * p;
            if (pb) for (let x = 0; x < p; x++) v += pa[oa + row + x] * pb[ob + row + x];
            else for (let x = 0; x < p; x++) v += pa[oa + row + x];
          }
          pm[(gy * G + gx) * PM + f] = v * inv;
        }
      }
    }
    // neighbourhood means of the edge and corner statistics
    for (let f = 0; f < O + Q; f++) {
      const plane = new Float64Array(P);
      for (let j = 0; j < P; j++) plane[j] = pm[j * PM + f];
      const out = new Float64Array(P);
      boxMean(plane, 0, G, G, c.window, out, tmpG);
      for (let j = 0; j < P; j++) win[j * (O + Q) + f] = out[j];
    }
    for (let j = 0; j < P; j++) {
      const o = (b * P + j) * F;
      const w = j * (O + Q);
      let eSum = 0;
      for (let k = 0; k < O; k++) eSum += win[w + k];
      let cSum = 0;
      for (let q = 0; q < Q; q++) cSum += win[w + O + q];
      for (let k = 0; k < O; k++) X[o + k] = win[w + k] / (eSum + EDGE_EPS);
      for (let q = 0; q < Q; q++) X[o + O + q] = win[w + O + q] / (cSum + CORNER_EPS);
      X[o + O + Q] = Math.log(eSum + EDGE_EPS);
      const sBar = pm[j * PM + O + Q];
      const logContrast = Math.log(sBar + PRIOR_EPS);
      X[o + O + Q + 1] = logContrast;
      prior[b * P + j] = logContrast;
      for (let ch = 0; ch < 3; ch++) {
        X[o + O + Q + 2 + ch] = pm[j * PM + O + Q + 1 + ch];
        X[o + O + Q + 5 + ch] = pm[j * PM + O + Q + 4 + ch] / (sBar + COLOUR_EPS);
      }
    }
  }
  return { X, prior };
}

/** The stem output of the left-right mirrored images, by permuting patches, directions and corner pairs (exact up to rounding). */
export function mirrorStem(c: TinyClipConfig, stem: StemOutput, n: number): StemOutput {
  const G = gridOf(c);
  const P = G * G;
  const F = STEM_FEATURES;
  const O = ORIENTATIONS;
  // direction k (angle k * 45 deg) mirrors to 180 - angle
  const dir = Array.from({ length: O }, (_, k) => (O / 2 - k + O) % O);
  const pairIndex = new Map(PAIRS.map(([k, l], q) => [k * O + l, q]));
  const pairMap = PAIRS.map(([k, l]) => {
    const a = Math.min(dir[k]!, dir[l]!);
    const b = Math.max(dir[k]!, dir[l]!);
    return pairIndex.get(a * O + b)!;
  });
  const X = stem.X instanceof Float64Array ? new Float64Array(stem.X.length) : new Float32Array(stem.X.length);
  const prior = stem.prior instanceof Float64Array ? new Float64Array(stem.prior.length) : new Float32Array(stem.prior.length);
  for (let b = 0; b < n; b++) {
    for (let gy = 0; gy < G; gy++) {
      for (let gx = 0; gx < G; gx++) {
        const src = b * P + gy * G + gx;
        const dst = b * P + gy * G + (G - 1 - gx);
        prior[dst] = stem.prior[src];
        for (let k = 0; k < O; k++) X[dst * F + dir[k]!] = stem.X[src * F + k];
        for (let q = 0; q < PAIRS.length; q++) X[dst * F + O + pairMap[q]!] = stem.X[src * F + O + q];
        for (let f = O + PAIRS.length; f < F; f++) X[dst * F + f] = stem.X[src * F + f];
      }
    }
  }
  return { X, prior };
}

export interface ImageCache {
  n: number;
  /** tokens per image: the grid's patches, or the gathered ones */
  P: number;
  index: ArrayLike<number> | null;
  X: Arr;
  Z1: Arr;
  H1: Arr;
  /** gelu'(second-layer pre-activation); Z1 likewise holds gelu' of the first layer's */
  Z2: Arr;
  H: Arr;
  contrast: Arr;
  attention: Arr;
  pooled: Arr;
  raw: Arr;
  embeds: Arr;
  norms: Float64Array;
}

/**
 * Image tower forward for n images. `mask` [n, P] (1 keep, 0 drop) is optional.
 * Returns embeddings [n, embed] (unit length) and attention [n, P] with everything backward needs.
 */
export function imageForward(p: TinyClipParams, pixels: ArrayLike<number>, n: number, mask: ArrayLike<number> | null = null): ImageCache {
  return imageForwardStem(p, imageStem(p.config, pixels, n, p.data instanceof Float64Array ? 64 : 32), n, mask);
}

/** Image tower forward from the stem's output (training precomputes the stem once per image). */
export function imageForwardStem(p: TinyClipParams, stem: StemOutput, n: number, mask: ArrayLike<number> | null = null): ImageCache {
  const c = p.config;
  const P = stem.tokens ?? patchCount(c);
  const index = stem.index ?? null;
  const K = patchDim(c);
  const like = p.data;
  const { prior: contrast } = stem;
  // local copies: the compiled module would otherwise read exported constants off `exports` in the loops
  const gc = GELU_C;
  const ga = GELU_A;
  const shift = view(p, 'img.in_shift');
  const scale = view(p, 'img.in_scale');
  const X = alloc(like, n * P * K);
  for (let r = 0; r < n * P; r++) for (let k = 0; k < K; k++) X[r * K + k] = (stem.X[r * K + k] - shift[k]) * scale[k];
  const Z1 = alloc(like, n * P * c.hidden);
  matmulNT(X, view(p, 'img.patch_w'), Z1, n * P, K, c.hidden);
  const b1 = view(p, 'img.patch_b');
  const pos = view(p, 'img.pos');
  const H1 = alloc(like, n * P * c.hidden);
  for (let b = 0; b < n; b++) {
    for (let j = 0; j < P; j++) {
      const o = (b * P + j) * c.hidden;
      for (let k = 0; k < c.hidden; k++) {
        const z = Z1[o + k] + b1[k] + pos[(index ? index[b * P + j]! : j) * c.hidden + k];
        const t = tanh(gc * (z + ga * z * z * z));
        H1[o + k] = 0.5 * z * (1 + t);
        Z1[o + k] = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * gc * (1 + 3 * ga * z * z);
      }
    }
  }
  const H = alloc(like, n * P * c.width);
  matmulNT(H1, view(p, 'img.w2'), H, n * P, c.hidden, c.width);
  const b2 = view(p, 'img.b2');
  const Z2 = alloc(like, n * P * c.width);
  for (let r = 0; r < n * P; r++) {
    for (let k = 0; k < c.width; k++) {
      const z = H[r * c.width + k] + b2[k];
      const t = tanh(gc * (z + ga * z * z * z));
      H[r * c.width + k] = 0.5 * z * (1 + t);
      Z2[r * c.width + k] = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * gc * (1 + 3 * ga * z * z);
    }
  }
  const attention = alloc(like, n * P);
  const pooled = alloc(like, n * c.width);
  attentionPool(H, view(p, 'img.query'), mask, n, P, c.width, attention, pooled, { values: contrast, weight: view(p, 'img.contrast')[0] });
  const raw = alloc(like, n * c.embed);
  matmulNT(pooled, view(p, 'img.proj'), raw, n, c.width, c.embed);
  addBias(raw, view(p, 'img.proj_b'), n, c.embed);
  const embeds = alloc(like, n * c.embed);
  const norms = normaliseRows(raw, n, c.embed, embeds);
  return { n, P, index, X, Z1, H1, Z2, H, contrast, attention, pooled, raw, embeds, norms };
}

/** Adds the image tower's parameter gradients for upstream dEmbeds [n, embed] into `grad` (layout of p). */
export function imageBackward(p: TinyClipParams, cache: ImageCache, dEmbeds: Arr, grad: Arr): void {
  const c = p.config;
  const { n, P, index } = cache;
  const K = patchDim(c);
  const like = p.data;
  const dRaw = alloc(like, n * c.embed);
  normaliseBackward(cache.embeds, cache.norms, dEmbeds, n, c.embed, dRaw);
  // raw = pooled . proj^T: dproj[e, w] += sum_b dRaw[b, e] pooled[b, w]; dPooled = dRaw . proj
  const dRawT = transpose(dRaw, n, c.embed, alloc(like, n * c.embed));
  const pooledT = transpose(cache.pooled, n, c.width, alloc(like, n * c.width));
  matmulNT(dRawT, pooledT, view(p, 'img.proj', grad), c.embed, n, c.width, true);
  sumRows(dRaw, n, c.embed, view(p, 'img.proj_b', grad));
  const projT = transpose(view(p, 'img.proj'), c.embed, c.width, alloc(like, c.embed * c.width));
  const dPooled = alloc(like, n * c.width);
  matmulNT(dRaw, projT, dPooled, n, c.embed, c.width);
  const dH = alloc(like, n * P * c.width);
  const dLogits = new Float64Array(n * P);
  attentionPoolBackward(cache.H, view(p, 'img.query'), cache.attention, dPooled, n, P, c.width, dH, view(p, 'img.query', grad), dLogits);
  let dContrast = 0;
  for (let i = 0; i < n * P; i++) dContrast += dLogits[i] * cache.contrast[i];
  view(p, 'img.contrast', grad)[0] += dContrast;
  // H = gelu(Z2), Z2 = H1 . w2^T + b2
  const db2 = view(p, 'img.b2', grad);
  for (let r = 0; r < n * P; r++) {
    for (let k = 0; k < c.width; k++) {
      const g = dH[r * c.width + k] * cache.Z2[r * c.width + k];
      dH[r * c.width + k] = g;
      db2[k] += g;
    }
  }
  const dHT = transpose(dH, n * P, c.width, alloc(like, n * P * c.width));
  const H1T = transpose(cache.H1, n * P, c.hidden, alloc(like, n * P * c.hidden));
  matmulNT(dHT, H1T, view(p, 'img.w2', grad), c.width, n * P, c.hidden, true);
  const w2T = transpose(view(p, 'img.w2'), c.width, c.hidden, alloc(like, c.width * c.hidden));
  const dZ1 = alloc(like, n * P * c.hidden);
  matmulNT(dH, w2T, dZ1, n * P, c.width, c.hidden);
  const db1 = view(p, 'img.patch_b', grad);
  const dpos = view(p, 'img.pos', grad);
  for (let b = 0; b < n; b++) {
    for (let j = 0; j < P; j++) {
      const o = (b * P + j) * c.hidden;
      for (let k = 0; k < c.hidden; k++) {
        const g = dZ1[o + k] * cache.Z1[o + k];
        dZ1[o + k] = g;
        db1[k] += g;
        dpos[(index ? index[b * P + j]! : j) * c.hidden + k] += g;
      }
    }
  }
  const dZ1T = transpose(dZ1, n * P, c.hidden, alloc(like, n * P * c.hidden));
  const XT = transpose(cache.X, n * P, K, alloc(like, n * P * K));
  matmulNT(dZ1T, XT, view(p, 'img.patch_w', grad), c.hidden, n * P, K, true);
}

// ---------------------------------------------------------------------------------------------------
// Text tower

export interface TextCache {
  n: number;
  ids: ArrayLike<number>;
  T: Arr;
  attention: Arr;
  pooled: Arr;
  /** projected, before normalisation */
  raw: Arr;
  embeds: Arr;
  norms: Float64Array;
}

/** Text tower forward: ids [n, context], mask [n, context] (1 token, 0 padding). */
export function textForward(p: TinyClipParams, ids: ArrayLike<number>, mask: ArrayLike<number>, n: number): TextCache {
  const c = p.config;
  const L = c.context;
  const d = c.width;
  const like = p.data;
  const tok = view(p, 'txt.tok');
  const pos = view(p, 'txt.pos');
  const T = alloc(like, n * L * d);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < L; i++) {
      const id = ids[b * L + i];
      if (!(id >= 0 && id < c.vocab)) throw new RangeError(`tiny-clip: token id ${id} outside the vocabulary (${c.vocab})`);
      const o = (b * L + i) * d;
      for (let k = 0; k < d; k++) T[o + k] = tok[id * d + k] + pos[i * d + k];
    }
  }
  const attention = alloc(like, n * L);
  const pooled = alloc(like, n * d);
  const wordBias = view(p, 'txt.word_bias');
  const bias = alloc(like, n * L);
  for (let i = 0; i < n * L; i++) bias[i] = wordBias[ids[i]];
  attentionPool(T, view(p, 'txt.query'), mask, n, L, d, attention, pooled, { values: bias, weight: 1 });
  const raw = alloc(like, n * c.embed);
  matmulNT(pooled, view(p, 'txt.proj'), raw, n, d, c.embed);
  addBias(raw, view(p, 'txt.proj_b'), n, c.embed);
  const embeds = alloc(like, n * c.embed);
  const norms = normaliseRows(raw, n, c.embed, embeds);
  return { n, ids, T, attention, pooled, raw, embeds, norms };
}

export function textBackward(p: TinyClipParams, cache: TextCache, dEmbeds: Arr, grad: Arr): void {
  const c = p.config;
  const { n } = cache;
  const L = c.context;
  const d = c.width;
  const like = p.data;
  const dRaw = alloc(like, n * c.embed);
  normaliseBackward(cache.embeds, cache.norms, dEmbeds, n, c.embed, dRaw);
  const dRawT = transpose(dRaw, n, c.embed, alloc(like, n * c.embed));
  const pooledT = transpose(cache.pooled, n, d, alloc(like, n * d));
  matmulNT(dRawT, pooledT, view(p, 'txt.proj', grad), c.embed, n, d, true);
  sumRows(dRaw, n, c.embed, view(p, 'txt.proj_b', grad));
  const projT = transpose(view(p, 'txt.proj'), c.embed, d, alloc(like, c.embed * d));
  const dPooled = alloc(like, n * d);
  matmulNT(dRaw, projT, dPooled, n, c.embed, d);
  const dT = alloc(like, n * L * d);
  const dLogits = new Float64Array(n * L);
  attentionPoolBackward(cache.T, view(p, 'txt.query'), cache.attention, dPooled, n, L, d, dT, view(p, 'txt.query', grad), dLogits);
  const dWordBias = view(p, 'txt.word_bias', grad);
  for (let i = 0; i < n * L; i++) dWordBias[cache.ids[i]] += dLogits[i];
  const dtok = view(p, 'txt.tok', grad);
  const dpos = view(p, 'txt.pos', grad);
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < L; i++) {
      const o = (b * L + i) * d;
      const id = cache.ids[b * L + i];
      for (let k = 0; k < d; k++) {
        dtok[id * d + k] += dT[o + k];
        dpos[i * d + k] += dT[o + k];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Loss

export interface ClipLoss {
  loss: number;
  /** image -> text top-1 accuracy within the batch */
  top1: number;
  dImage: Arr;
  dText: Arr;
  dLogitScale: number;
}

/** Symmetric InfoNCE of n matched pairs (row i of each is a pair), both inputs unit length [n, e]. */
export function clipLoss(img: Arr, txt: Arr, n: number, e: number, logitScale: number): ClipLoss {
  const scale = Math.exp(logitScale);
  const S = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < e; k++) s += img[i * e + k] * txt[j * e + k];
      S[i * n + j] = s * scale;
    }
  }
  const dS = new Float64Array(n * n);
  let loss = 0;
  let hits = 0;
  // rows: image -> text
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    let arg = 0;
    for (let j = 0; j < n; j++) {
      if (S[i * n + j] > max) {
        max = S[i * n + j];
        arg = j;
      }
    }
    if (arg === i) hits++;
    let sum = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(S[i * n + j] - max);
    loss += (max + Math.log(sum) - S[i * n + i]) / (2 * n);
    for (let j = 0; j < n; j++) dS[i * n + j] += (Math.exp(S[i * n + j] - max) / sum - (i === j ? 1 : 0)) / (2 * n);
  }
  // columns: text -> image
  for (let j = 0; j < n; j++) {
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, S[i * n + j]);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(S[i * n + j] - max);
    loss += (max + Math.log(sum) - S[j * n + j]) / (2 * n);
    for (let i = 0; i < n; i++) dS[i * n + j] += (Math.exp(S[i * n + j] - max) / sum - (i === j ? 1 : 0)) / (2 * n);
  }
  const dImage = img instanceof Float64Array ? new Float64Array(n * e) : new Float32Array(n * e);
  const dText = img instanceof Float64Array ? new Float64Array(n * e) : new Float32Array(n * e);
  let dLogitScale = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const g = dS[i * n + j];
      dLogitScale += g * S[i * n + j];
      const gs = g * scale;
      for (let k = 0; k < e; k++) {
        dImage[i * e + k] += gs * txt[j * e + k];
        dText[j * e + k] += gs * img[i * e + k];
      }
    }
  }
  return { loss, top1: hits / n, dImage, dText, dLogitScale };
}

/**
 * The auxiliary tag loss (training only): a sigmoid (SigLIP-style) loss of every image against a set of
 * prompt texts, logit = exp(tagScale) * cos(image, prompt) + tagBias, label 1 when the prompt's kind is
 * named by the image's caption. Mean over images and prompts.
 */
export function tagLoss(img: Arr, prompts: Arr, labels: ArrayLike<number>, n: number, k: number, e: number, tagScale: number, tagBias: number): { loss: number; dImage: Arr; dPrompts: Arr; dScale: number; dBias: number } {
  const scale = Math.exp(tagScale);
  const dImage = img instanceof Float64Array ? new Float64Array(n * e) : new Float32Array(n * e);
  const dPrompts = img instanceof Float64Array ? new Float64Array(k * e) : new Float32Array(k * e);
  let loss = 0;
  let dScale = 0;
  let dBias = 0;
  const norm = 1 / (n * k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      let c = 0;
      for (let d = 0; d < e; d++) c += img[i * e + d] * prompts[j * e + d];
      const z = scale * c + tagBias;
      const y = labels[i * k + j];
      // -[y log s(z) + (1 - y) log(1 - s(z))] = softplus(z) - y z
      loss += (Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z))) - y * z) * norm;
      const g = (1 / (1 + Math.exp(-z)) - y) * norm;
      dBias += g;
      dScale += g * scale * c;
      const gs = g * scale;
      for (let d = 0; d < e; d++) {
        dImage[i * e + d] += gs * prompts[j * e + d];
        dPrompts[j * e + d] += gs * img[i * e + d];
      }
    }
  }
  return { loss, dImage, dPrompts, dScale, dBias };
}

/** Prompts and labels of the auxiliary tag loss. */
export interface TagTargets {
  k: number;
  /** [k, context] */
  ids: ArrayLike<number>;
  mask: ArrayLike<number>;
  /** [n, k], 1 when prompt j applies to image i */
  labels: ArrayLike<number>;
  weight: number;
}

export interface Batch {
  n: number;
  /** [n, 3, S, S] normalised; or `stem`, the stem's output for them */
  pixels?: ArrayLike<number>;
  stem?: StemOutput;
  /** [n, context] */
  ids: ArrayLike<number>;
  /** [n, context] */
  textMask: ArrayLike<number>;
  /** optional image keep mask [n, P] */
  patchMask?: ArrayLike<number> | null;
  /** optional auxiliary tag loss */
  tags?: TagTargets | null;
}

/** Loss and the gradient of every parameter (same layout as p.data, same precision). */
export function lossAndGrad(p: TinyClipParams, batch: Batch): { loss: number; clip: number; tag: number; top1: number; grad: Arr } {
  return run(p, batch, true) as { loss: number; clip: number; tag: number; top1: number; grad: Arr };
}

/** Loss only (finite differences). */
export function lossOnly(p: TinyClipParams, batch: Batch): number {
  return run(p, batch, false).loss;
}

function run(p: TinyClipParams, batch: Batch, backward: boolean): { loss: number; clip: number; tag: number; top1: number; grad?: Arr } {
  const c = p.config;
  const img = batch.stem ? imageForwardStem(p, batch.stem, batch.n, batch.patchMask ?? null) : imageForward(p, batch.pixels!, batch.n, batch.patchMask ?? null);
  const txt = textForward(p, batch.ids, batch.textMask, batch.n);
  const l = clipLoss(img.embeds, txt.embeds, batch.n, c.embed, view(p, 'logit_scale')[0]);
  let tag = 0;
  let tl: ReturnType<typeof tagLoss> | null = null;
  let prompts: TextCache | null = null;
  const t = batch.tags;
  if (t && t.weight > 0) {
    prompts = textForward(p, t.ids, t.mask, t.k);
    tl = tagLoss(img.embeds, prompts.embeds, t.labels, batch.n, t.k, c.embed, view(p, 'tag.scale')[0], view(p, 'tag.bias')[0]);
    tag = tl.loss;
  }
  const w = t?.weight ?? 0;
  const out = { loss: l.loss + w * tag, clip: l.loss, tag, top1: l.top1 };
  if (!backward) return out;
  const grad = alloc(p.data, p.data.length);
  if (tl && prompts) {
    for (let i = 0; i < l.dImage.length; i++) l.dImage[i] += w * tl.dImage[i];
    for (let i = 0; i < tl.dPrompts.length; i++) tl.dPrompts[i] *= w;
    textBackward(p, prompts, tl.dPrompts, grad);
    view(p, 'tag.scale', grad)[0] += w * tl.dScale;
    view(p, 'tag.bias', grad)[0] += w * tl.dBias;
  }
  imageBackward(p, img, l.dImage, grad);
  textBackward(p, txt, l.dText, grad);
  view(p, 'logit_scale', grad)[0] += l.dLogitScale;
  return { ...out, grad };
}

// ---------------------------------------------------------------------------------------------------
// Optimiser

export class Adam {
  private readonly m: Float64Array;
  private readonly v: Float64Array;
  private t = 0;
  constructor(
    size: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly eps = 1e-8,
  ) {
    this.m = new Float64Array(size);
    this.v = new Float64Array(size);
  }

  /** The moments and the step count, for checkpoints (views, not copies). */
  snapshot(): { t: number; m: Float64Array; v: Float64Array } {
    return { t: this.t, m: this.m, v: this.v };
  }

  /** Continues from a snapshot of an optimiser of the same size. */
  restore(s: { t: number; m: ArrayLike<number>; v: ArrayLike<number> }): void {
    if (s.m.length !== this.m.length || s.v.length !== this.v.length) throw new RangeError(`Adam.restore: state of ${s.m.length} values for ${this.m.length} parameters`);
    this.t = s.t;
    this.m.set(s.m);
    this.v.set(s.v);
  }

  /** One step on `params` with gradient `grad`; `decay` is decoupled weight decay (AdamW) per element mask. */
  step(params: Arr, grad: Arr, lr: number, decay = 0, decayMask?: Uint8Array): void {
    this.t++;
    const c1 = 1 - this.beta1 ** this.t;
    const c2 = 1 - this.beta2 ** this.t;
    const { m, v, beta1, beta2, eps } = this;
    for (let i = 0; i < params.length; i++) {
      const g = grad[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      let x = params[i] - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
      if (decay > 0 && (!decayMask || decayMask[i])) x -= lr * decay * params[i];
      params[i] = x;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Inference helpers (float32 outputs, like the ONNX export)

export function encodeImages(p: TinyClipParams, pixels: ArrayLike<number>, n: number, mask: ArrayLike<number> | null = null): { embeds: Float32Array; attention: Float32Array } {
  const out = imageForward(p, pixels, n, mask);
  return { embeds: Float32Array.from(out.embeds), attention: Float32Array.from(out.attention) };
}

export function encodeTexts(p: TinyClipParams, ids: ArrayLike<number>, mask: ArrayLike<number>, n: number): Float32Array {
  return Float32Array.from(textForward(p, ids, mask, n).embeds);
}
