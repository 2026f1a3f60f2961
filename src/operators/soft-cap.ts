/**
 * softCap: online Soft Cap Sampling (OSCS, research/algorithms.md A.5–A.7). Gives every kept
 * sample a number of copies so that, over the stream, the copies per input meet a target rate `rate`,
 * while high scores are only "soft-capped": the expected copies of a sample with score s are
 *
 *     E[copies] = softplus(s + λ) / α
 *
 * (pure softmax sampling for low scores, only 1/α more copies per extra unit of score for high ones). This
 * is the fluid limit of FLYT's batch SCS (softmax over the pool, draws without replacement per block,
 * penalty α per draw), which equals independent birth processes with rates e^(s − α·j) stopped at a common
 * time T = e^λ / α.
 *
 * λ is tracked per partition: a bounded score histogram (2048 bins over [−20, 20] by default, scores
 * outside go to the edge bins; optional exponential decay with a half-life in items) is solved by bisection
 * for mean softplus(s' + λ) = α·r on a fixed schedule (at n = 1, 2, 4, 8, … and every `solveEvery` items),
 * and a small feedback term on the realised rate corrects what the fluid limit (about 1 % high for the
 * birth process), the warm-up and drift leave: λ = λ_hist − gain·err / sens, where err is a leaky mean
 * (half-life 3000 items) of copies/r − 1, sens = d ln(rate)/dλ at the last solve, and the correction is
 * clamped to ±1.
 *
 * Draws: `faithful` simulates the birth process exactly (the SCS count law given λ); `systematic` rounds
 * the mean with a carried accumulator (least variance, more unique samples). All randomness comes from a
 * hash of (sample id, seed, draw index) and the state, so a replay over the same input from the same
 * restored state gives identical copies. Samples with 0 copies are filtered (`zero_copies`), kept samples
 * without a finite score are filtered (`no_score`), the others get `s.copies = k` (k ≤ `maxCopies`).
 *
 * The draw key is the event id (else the record's topic/partition/offset). Spreading the copies so two never
 * share a training batch is left to the trainer (docs/TRAINER.md): this operator only sets the `copies` column.
 *
 * Warm-up: a fresh stream has no history, and λ solved on its first few scores treats them unlike later ones
 * (the first score alone gets E[copies] = r whatever it is; a small sample lacks the upper tail that sets λ,
 * so early events get too many copies). With `warmup`, every solve also counts `items` pseudo-items of frozen
 * statistics of the score, N(mean, sd²) (as 24-point Gauss-Hermite quadrature, exact far into the tails), so
 * the first events are sampled with about the λ of later ones, and the stream's own scores take over as they
 * accumulate (the pseudo-items are 1 % of the weight after 100 000 items; with a half-life they keep their
 * weight while old items decay). The statistics must fit the scores: λ shifts one for one with the score
 * mean, so a prior mean 1 too low gives early events e^1 times the copies. Estimating them from the stream
 * itself does not work as a warm-up: the noise of a few scores' mean and spread moves λ as much as the cold
 * start does. The prior is configuration, not state, so snapshots and restores stay exact.
 * The per-partition state (histogram, λ, feedback error, counters, systematic accumulator) registers as
 * `soft_cap`. Histogram bins hold integers (1 per item without decay; 1024 per item with decay, multiplied
 * by 2^(−solveEvery/halfLife) and rounded down every `solveEvery` items), stored as base64 of varints:
 * about 2 KB without decay and 3.5 KB with it for Gaussian scores of sd 2.5.
 *
 * @example
 * batches$.pipe(mix({ weights: () => store.current() }), softCap({ alpha: 0.15, rate: 1, seed: 7, halfLife: 50_000, state }))
 */
import { fmix32 } from '../util/hash';
import type { OperatorFunction } from 'rxjs';
import { z } from 'zod';
import { type Batch, filterOut, partitionKey, type Sample } from './sample';
import { stage } from './stage';
import { partitionState, type StateRegistry } from './state';

export type SoftCapMode = 'faithful' | 'systematic';

export interface SoftCapOptions {
  /** repetition penalty α per copy; default 0.15 (FLYT's medium-scale setting) */
  alpha?: number;
  /** target copies per input sample (N/P); default 1 */
  rate?: number;
  /** how the count is drawn; default 'faithful' */
  mode?: SoftCapMode;
  /** most copies of one sample; default 1000 */
  maxCopies?: number;
  /** seed of every draw (with the sample id and the draw index) */
  seed: number | string;
  /** histogram decay half-life in items (track drifting scores); default none (all history weighs the same) */
  halfLife?: number;
  /** prior score distribution a fresh partition's histogram starts with (see the module comment); default none */
  warmup?: SoftCapWarmup | null;
  /** the score sampled on; default `s.mixed?.score`, falling back to `s.scores.clip_score` */
  scoreOf?: (s: Sample) => number | null | undefined;
  state?: StateRegistry;
  /** tuning; the defaults are what the tests measure */
  tuning?: Partial<SoftCapTuning>;
}

/** `items` pseudo-items of scores distributed N(mean, sd²): frozen statistics of the score sampled on */
export interface SoftCapWarmup {
  mean: number;
  sd: number;
  items: number;
}

export interface SoftCapTuning {
  /** histogram bins over [min, max]; default 2048 over [−20, 20] */
  bins: number;
  min: number;
  max: number;
  /** re-solve λ (and decay the histogram) every this many items, besides n = 1, 2, 4, …; default 1000 */
  solveEvery: number;
  /** loop gain of the rate feedback (dimensionless); default 2 */
  gain: number;
  /** half-life in items of the leaky realised-rate error; default 3000 */
  errHalfLife: number;
  /** largest feedback correction of λ; default 1 */
  maxCorrection: number;
}

export const DEFAULT_SOFT_CAP_TUNING: SoftCapTuning = {
  bins: 2048,
  min: -20,
  max: 20,
  solveEvery: 1000,
  gain: 2,
  errHalfLife: 3000,
  maxCorrection: 1,
};

/** Everything the sampler needs, defaults filled in. */
export interface SoftCapConfig extends SoftCapTuning {
  alpha: number;
  rate: number;
  mode: SoftCapMode;
  maxCopies: number;
  seed: string;
  halfLife: number | null;
  warmup: SoftCapWarmup | null;
}

export function softCapConfig(o: Omit<SoftCapOptions, 'scoreOf' | 'state'>): SoftCapConfig {
  const c: SoftCapConfig = {
    ...DEFAULT_SOFT_CAP_TUNING,
    ...o.tuning,
    alpha: o.alpha ?? 0.15,
    rate: o.rate ?? 1,
    mode: o.mode ?? 'faithful',
    maxCopies: o.maxCopies ?? 1000,
    seed: String(o.seed),
    halfLife: o.halfLife ?? null,
    warmup: o.warmup && o.warmup.items > 0 ? { ...o.warmup } : null,
  };
  const bad = (what: string): never => {
    throw new Error(`softCap: ${what}`);
  };
  if (!(c.alpha > 0 && Number.isFinite(c.alpha))) bad(`alpha must be a positive number, got ${c.alpha}`);
  if (!(c.rate > 0 && Number.isFinite(c.rate))) bad(`rate must be a positive number, got ${c.rate}`);
  if (c.mode !== 'faithful' && c.mode !== 'systematic') bad(`mode must be 'faithful' or 'systematic', got ${String(c.mode)}`);
  if (!Number.isInteger(c.maxCopies) || c.maxCopies < 1) bad(`maxCopies must be an integer >= 1, got ${c.maxCopies}`);
  if (c.halfLife !== null && !(c.halfLife > 0)) bad(`halfLife must be positive, got ${c.halfLife}`);
  if (!Number.isInteger(c.bins) || c.bins < 2 || !(c.max > c.min)) bad('histogram needs bins >= 2 and max > min');
  if (!Number.isInteger(c.solveEvery) || c.solveEvery < 1) bad(`solveEvery must be an integer >= 1, got ${c.solveEvery}`);
  const w = c.warmup;
  if (w && !(Number.isInteger(w.items) && Number.isFinite(w.mean) && w.sd > 0 && Number.isFinite(w.sd))) {
    bad(`warmup needs a finite mean, sd > 0 and whole items, got ${JSON.stringify(w)}`);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------
// maths

/** log(1 + e^x), without overflow */
export function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/**
 * λ with Σ w·softplus(v + λ) / Σ w = target (the fluid-limit budget equation, monotone in λ), by
 * bisection to 1e-10. `weights` null means all 1. Entries with weight 0 are skipped. Throws on an empty
 * input or a target ≤ 0.
 */
export function solveLambda(values: ArrayLike<number>, weights: ArrayLike<number> | null, target: number): number {
  if (!(target > 0)) throw new Error(`solveLambda: target must be > 0, got ${target}`);
  let total = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const w = weights ? weights[i] : 1;
    if (!(w > 0)) continue;
    total += w;
    if (values[i] < lo) lo = values[i];
    if (values[i] > hi) hi = values[i];
  }
  if (!(total > 0)) throw new Error('solveLambda: no values');
  const goal = target * total;
  const f = (lambda: number): number => {
    let sum = 0;
    for (let i = 0; i < values.length; i++) {
      const w = weights ? weights[i] : 1;
      if (w > 0) sum += w * softplus(values[i] + lambda);
    }
    return sum - goal;
  };
  // softplus(x) <= e^x  and  softplus(x) >= x bracket the root
  let a = Math.log(target) - hi - 1;
  let b = target + 1 - lo;
  for (let it = 0; it < 200 && b - a > 1e-10; it++) {
    const m = 0.5 * (a + b);
    if (f(m) < 0) a = m;
    else b = m;
  }
  return 0.5 * (a + b);
}

// ---------------------------------------------------------------------------------------------------
// deterministic randomness: a counter-based generator keyed by (seed, sample id)

/** MurmurHash3 (x86, 32-bit) over the UTF-16 code units of a string */
function murmur32(str: string, seed: number): number {
  let h = seed | 0;
  for (let i = 0; i < str.length; i++) {
    let k = Math.imul(str.charCodeAt(i), 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  return fmix32(h ^ str.length);
}

/** Uniform draws in (0, 1) that depend only on (seed, key, index). */
export class DrawKey {
  private readonly h1: number;
  private readonly h2: number;
  constructor(seed: string, key: string) {
    const s = `${seed}\u0000${key}`;
    this.h1 = murmur32(s, 0x2545f491);
    this.h2 = murmur32(s, 0x9e3779b9);
  }
  /** the index-th uniform in (0, 1), 53 bits */
  uniform(index: number): number {
    const a = fmix32(this.h1 ^ Math.imul(index + 1, 0x9e3779b9));
    const b = fmix32((this.h2 + Math.imul(index + 1, 0x7feb352d)) ^ a);
    return ((a >>> 5) * 67108864 + (b >>> 6) + 0.5) / 9007199254740992;
  }
}

/**
 * Copies of one sample under SCS given λ: the number of events of a birth process with rates
 * e^(score − α·j) (j = events so far) up to time T = e^λ / α, at most `maxCopies`. Event j's waiting time
 * is −ln(U_j)·e^(α·j − score) with U_j = key.uniform(j).
 */
export function birthProcessCount(score: number, lambda: number, alpha: number, maxCopies: number, key: DrawKey): number {
  const horizon = Math.exp(lambda) / alpha;
  let t = 0;
  for (let j = 0; j < maxCopies; j++) {
    t += -Math.log(key.uniform(j)) * Math.exp(alpha * j - score);
    if (!(t <= horizon)) return j;
  }
  return maxCopies;
}

// ---------------------------------------------------------------------------------------------------
// the bounded score histogram

/**
 * Gauss-Hermite quadrature for N(0, 1), 24 points (Numerical Recipes' gauher, rescaled): the warm-up's
 * Gaussian enters each solve as these weighted points, exact for smooth functions far into the tails.
 */
const HERMITE = ((n: number): { z: number[]; p: number[] } => {
  const x = new Array<number>(n).fill(0);
  const w = new Array<number>(n).fill(0);
  let z = 0;
  for (let i = 0; i < (n + 1) >> 1; i++) {
    if (i === 0) z = Math.sqrt(2 * n + 1) - 1.85575 * Math.pow(2 * n + 1, -0.16667);
    else if (i === 1) z -= (1.14 * Math.pow(n, 0.426)) / z;
    else if (i === 2) z = 1.86 * z - 0.86 * x[0];
    else if (i === 3) z = 1.91 * z - 0.91 * x[1];
    else z = 2 * z - x[i - 2];
    let pp = 1;
    for (let it = 0; it < 100; it++) {
      let p1 = 0.7511255444649425; // π^(−1/4)
      let p2 = 0;
      for (let j = 0; j < n; j++) {
        const p3 = p2;
        p2 = p1;
        p1 = z * Math.sqrt(2 / (j + 1)) * p2 - Math.sqrt(j / (j + 1)) * p3;
      }
      pp = Math.sqrt(2 * n) * p2;
      const prev = z;
      z = prev - p1 / pp;
      if (Math.abs(z - prev) <= 3e-14) break;
    }
    x[i] = z;
    x[n - 1 - i] = -z;
    w[i] = w[n - 1 - i] = 2 / (pp * pp);
  }
  return { z: x.map((v) => v * Math.SQRT2), p: w.map((v) => v / Math.sqrt(Math.PI)) };
})(24);

/** Integer units one item adds: 1 without decay; with decay 1024, so rounding down on decay costs little. */
const DECAYED_UNIT = 1024;

export class ScoreHistogram {
  readonly counts: Float64Array;
  readonly width: number;
  constructor(
    readonly bins: number,
    readonly min: number,
    readonly max: number,
    /** what one item adds (an integer) */
    readonly unit: number,
  ) {
    this.counts = new Float64Array(bins);
    this.width = (max - min) / bins;
  }

  add(score: number): void {
    let i = Math.floor((score - this.min) / this.width);
    if (!(i >= 0)) i = 0;
    else if (i >= this.bins) i = this.bins - 1;
    this.counts[i] += this.unit;
  }

  /** multiplies every bin by `factor` < 1, rounding down (counts stay integers, small bins empty out) */
  decay(factor: number): void {
    const c = this.counts;
    for (let i = 0; i < c.length; i++) if (c[i] > 0) c[i] = Math.floor(c[i] * factor);
  }

  center(i: number): number {
    return this.min + (i + 0.5) * this.width;
  }

  total(): number {
    let t = 0;
    for (let i = 0; i < this.counts.length; i++) t += this.counts[i];
    return t;
  }

  /** λ with the mean softplus(s + λ) = target over the histogram (plus `extra` weighted points), and d ln(mean)/dλ there; null when empty */
  solve(target: number, extra: { xs: number[]; ws: number[] } | null = null): { lambda: number; sensitivity: number } | null {
    const xs: number[] = extra ? [...extra.xs] : [];
    const ws: number[] = extra ? [...extra.ws] : [];
    for (let i = 0; i < this.counts.length; i++) {
      if (this.counts[i] > 0) {
        xs.push(this.center(i));
        ws.push(this.counts[i]);
      }
    }
    if (!xs.length) return null;
    const lambda = solveLambda(xs, ws, target);
    let sp = 0;
    let sg = 0;
    for (let i = 0; i < xs.length; i++) {
      sp += ws[i] * softplus(xs[i] + lambda);
      sg += ws[i] * sigmoid(xs[i] + lambda);
    }
    return { lambda, sensitivity: sp > 0 ? sg / sp : 1 };
  }

  /** compact form: the first non-empty bin and base64 of the varint counts from there to the last */
  encode(): { o: number; c: string } {
    let first = 0;
    let last = this.counts.length - 1;
    while (first <= last && this.counts[first] === 0) first++;
    while (last >= first && this.counts[last] === 0) last--;
    const bytes: number[] = [];
    for (let i = first; i <= last; i++) {
      let v = this.counts[i];
      while (v >= 128) {
        bytes.push((v % 128) + 128);
        v = Math.floor(v / 128);
      }
      bytes.push(v);
    }
    return { o: first > last ? 0 : first, c: Buffer.from(bytes).toString('base64') };
  }

  decode(e: { o: number; c: string }): void {
    this.counts.fill(0);
    const bytes = Buffer.from(e.c, 'base64');
    let i = e.o;
    let v = 0;
    let scale = 1;
    for (const b of bytes) {
      v += (b & 127) * scale;
      if (b < 128) {
        if (i < 0 || i >= this.bins) throw new Error('soft_cap: histogram state does not fit the configured bins');
        this.counts[i++] = v;
        v = 0;
        scale = 1;
      } else scale *= 128;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// the sampler (one per partition)

/** The JSON state of one partition's sampler (what goes into commit records). */
export const SoftCapSnapshot = z.object({
  v: z.literal(1),
  /** histogram layout: bins, min, max, unit; a mismatch on restore starts the histogram empty */
  hl: z.string(),
  h: z.object({ o: z.number(), c: z.string() }),
  /** scored items seen */
  n: z.number(),
  /** λ from the histogram at the last solve, and d ln(rate)/dλ there */
  lam: z.number(),
  sens: z.number(),
  /** leaky mean of copies/rate − 1 */
  err: z.number(),
  /** systematic rounding accumulator in [0, 1) */
  acc: z.number(),
  /** copies given, samples given none, samples cut by maxCopies */
  copies: z.number(),
  zero: z.number(),
  capped: z.number(),
});
export type SoftCapState = z.infer<typeof SoftCapSnapshot>;

export class SoftCapSampler {
  private readonly hist: ScoreHistogram;
  private readonly layout: string;
  private readonly decayFactor: number;
  private readonly errRho: number;
  private n = 0;
  private lam = 0;
  private sens = 1;
  private err = 0;
  private acc: number;
  private copies = 0;
  private zero = 0;
  private capped = 0;

  /** `stream` (e.g. the partition key) seeds the systematic accumulator, so partitions do not move in step */
  constructor(readonly config: SoftCapConfig, state?: SoftCapState | null, stream = '') {
    const c = config;
    const unit = c.halfLife === null ? 1 : DECAYED_UNIT;
    this.hist = new ScoreHistogram(c.bins, c.min, c.max, unit);
    this.layout = `${c.bins},${c.min},${c.max},${unit}`;
    this.decayFactor = c.halfLife === null ? 1 : Math.pow(2, -c.solveEvery / c.halfLife);
    this.errRho = 1 - Math.pow(2, -1 / c.errHalfLife);
    this.acc = new DrawKey(c.seed, `systematic\u0000${stream}`).uniform(0);
    if (state) this.restore(state);
  }

  private restore(s: SoftCapState): void {
    if (s.hl === this.layout) this.hist.decode(s.h);
    this.n = s.n;
    this.lam = s.lam;
    this.sens = s.sens;
    this.err = s.err;
    this.acc = s.acc;
    this.copies = s.copies;
    this.zero = s.zero;
    this.capped = s.capped;
  }

  snapshot(): SoftCapState {
    return {
      v: 1,
      hl: this.layout,
      h: this.hist.encode(),
      n: this.n,
      lam: this.lam,
      sens: this.sens,
      err: this.err,
      acc: this.acc,
      copies: this.copies,
      zero: this.zero,
      capped: this.capped,
    };
  }

  /** λ from the histogram alone */
  get lambdaHist(): number {
    return this.lam;
  }

  /** λ in use: the histogram's, corrected by the realised-rate feedback */
  get lambda(): number {
    const c = this.config;
    const corr = (c.gain * this.err) / Math.max(this.sens, 1e-3);
    return this.lam - Math.max(-c.maxCorrection, Math.min(c.maxCorrection, corr));
  }

  get stats(): { items: number; copies: number; zero: number; capped: number; rate: number } {
    return { items: this.n, copies: this.copies, zero: this.zero, capped: this.capped, rate: this.n ? this.copies / this.n : 0 };
  }

  /** expected copies of a score at the current λ (before the maxCopies cap) */
  expected(score: number): number {
    return softplus(score + this.lambda) / this.config.alpha;
  }

  /** copies for the next sample (score, id); updates the state */
  next(score: number, id: string): number {
    const c = this.config;
    this.hist.add(score);
    const n = ++this.n;
    if (n % c.solveEvery === 0) {
      if (this.decayFactor < 1) this.hist.decay(this.decayFactor);
      this.solve();
    } else if ((n & (n - 1)) === 0) this.solve();

    const lambda = this.lambda;
    let k: number;
    if (c.mode === 'faithful') {
      k = birthProcessCount(score, lambda, c.alpha, c.maxCopies, new DrawKey(c.seed, id));
      if (k === c.maxCopies) this.capped++;
    } else {
      const m = softplus(score + lambda) / c.alpha;
      if (!Number.isFinite(m) || m >= c.maxCopies + 1) {
        k = c.maxCopies;
        this.capped++;
      } else {
        const x = this.acc + m;
        k = Math.floor(x);
        this.acc = x - k;
        if (k > c.maxCopies) {
          k = c.maxCopies;
          this.capped++;
        }
      }
    }
    this.err += this.errRho * (k / c.rate - 1 - this.err);
    this.copies += k;
    if (k === 0) this.zero++;
    return k;
  }

  private solve(): void {
    const w = this.config.warmup;
    const extra = w ? { xs: HERMITE.z.map((z) => w.mean + w.sd * z), ws: HERMITE.p.map((p) => w.items * this.hist.unit * p) } : null;
    const r = this.hist.solve(this.config.alpha * this.config.rate, extra);
    if (r) {
      this.lam = r.lambda;
      this.sens = r.sensitivity;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// the operator

export const defaultScoreOf = (s: Sample): number | undefined => s.mixed?.score ?? s.scores.clip_score;

/** The id draws are keyed by: the event id, else the record's coordinates. */
export const drawId = (s: Sample): string => s.event?.id ?? `${s.coord.topic}/${s.coord.partition}/${s.coord.offset}`;

export function softCap(options: SoftCapOptions): OperatorFunction<Batch, Batch> {
  const config = softCapConfig(options);
  const scoreOf = options.scoreOf ?? defaultScoreOf;
  const forPartition = partitionState(options.state, 'soft_cap', {
    empty: (key) => new SoftCapSampler(config, null, key),
    schema: SoftCapSnapshot,
    fromJson: (json, key) => new SoftCapSampler(config, json, key),
    toJson: (sampler) => sampler.snapshot(),
  });
  return stage('soft_cap', (batch) => {
    const sampler = forPartition(partitionKey(batch.topic, batch.partition));
    for (const s of batch.samples) {
      if (s.outcome.kind !== 'keep') continue;
      const score = scoreOf(s);
      if (typeof score !== 'number' || !Number.isFinite(score)) {
        filterOut(s, 'no_score');
        continue;
      }
      const k = sampler.next(score, drawId(s));
      if (k === 0) filterOut(s, 'zero_copies');
      else s.copies = k;
    }
    return batch;
  });
}
