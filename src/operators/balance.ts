/**
 * balance: MetaCLIP-style concept balancing, online (research/algorithms.md D.1).
 *
 * Every sample has a set of concepts (default: its tag labels plus the caption words and short phrases that
 * are in a bounded `vocabulary`). Per concept e the operator keeps a running count c_e of its occurrences and
 * draws, per (sample id, seed, concept), a uniform U_e from a hash (never Math.random). Concept e *passes*
 * when U_e < p_e; a sample is kept when any of its concepts passes (MetaCLIP: P(keep) = 1 - prod(1 - p_e)),
 * otherwise it is filtered with reason `balanced_out`. Samples without concepts are kept (configurable).
 *
 * ## The rule: a decayed rate, with the first `tau` free
 * With sample clock t (samples this partition has seen here) and window T (`window`, in samples), c_e is the
 * exponentially decayed occurrence count, c_e(t) = sum over occurrences i <= t of exp(-(t - i) / T), current
 * sample included, and
 *
 *     p_e = 1                                    if c_e <= tau
 *     p_e = min(1, tau * (1 - exp(-t / T)) / c_e)  otherwise
 *
 * c_e / (1 - exp(-t/T)) is c_e projected to a full window (early in the stream the decayed mass of the clock is
 * only about t, not T), so p_e = tau / (occurrences per window): MetaCLIP's min(1, t / n_e) with n_e counted
 * per window of T samples.
 *
 * - **Tail, exact**: a concept seen at most `tau` times in total is kept in full (c_e <= n_e <= tau).
 * - **Cap**: for a concept at a steady rate lambda per sample, c_e(t) ~ lambda T (1 - exp(-t/T)), so once
 *   c_e > tau the expected passes per sample are tau / T: the number of times concept e passes over a stream
 *   of N samples is at most
 *
 *       cap(N) = tau * (1 + N / T)
 *
 *   (the first ~tau occurrences under the guard, then tau per window). Tolerance: passes are a sum of
 *   independent draws, so the excess over cap(N) is binomial noise, below 3 sqrt(cap(N)) with probability
 *   > 99.8 % per concept (plus a relative bias of about 1/tau from estimating the rate, negligible).
 *   A concept whose rate jumps (a burst of B occurrences well inside one window) may add up to about
 *   tau * ln(B / tau) more while c_e catches up: the bound above is for a stationary stream.
 * - **Kept count vs passes**: a sample is also kept when one of its *other* concepts passes, so a head
 *   concept's kept count is its passes plus that spill-over, exactly as in batch MetaCLIP. The cap bounds
 *   passes; `onDecision` reports them.
 *
 * Alternatives rejected: p = tau / (count so far) with no decay keeps about tau (1 + ln(n / tau)) of n
 * occurrences (no cap: it grows with the stream); p = tau / (kept so far) keeps about sqrt(2 tau n) (worse);
 * a hard "first tau only" cap stops sampling a head concept forever after tau, so a long-running curator
 * would end up with the tail only.
 *
 * ## Counters
 * Exact counters (a map, for a bounded vocabulary; at most `maxConcepts` distinct concepts are tracked, the
 * rest are ignored as concepts) or a count-min sketch (`sketch: { width, depth }`, seeded hashes,
 * conservative update) for open vocabularies. The sketch only over-estimates: passes stay under cap(N), but a
 * tail concept may be thinned when its estimate crosses tau; with probability >= 1 - exp(-depth) the
 * over-estimate is at most (e / width) * (decayed occurrence mass) <= (e / width) * (occurrences so far).
 * Decay uses one global scale (values stored as c_e * exp((t - base) / T), renormalised every 30 T samples),
 * so an update touches only the sample's concepts.
 *
 * State registers as `balance`: the clock and the counters (sketch cells as base64 Float64Array), exact to
 * the bit, so decisions after a restore equal an uninterrupted run.
 *
 * @example
 * batches$.pipe(tag(...), balance({ tau: 20_000, window: 400_000_000, vocabulary: bundle.tags, state }))
 */
import type { OperatorFunction } from 'rxjs';
import { z } from 'zod';
import { type Batch, filterOut, partitionKey, type Sample } from './sample';
import { stage } from './stage';
import { partitionState, type StateRegistry } from './state';

export interface BalanceOptions {
  /** per-concept passes per window (MetaCLIP's t), default 1000 */
  tau?: number;
  /** the window T in samples over which `tau` applies, default 1,000,000 */
  window?: number;
  /** concepts of a sample; default: tag labels plus caption words / phrases in `vocabulary`, lower case */
  concepts?: (s: Sample) => string[];
  /** bounded vocabulary for caption matching (single words or phrases up to 3 words) */
  vocabulary?: Iterable<string>;
  /** count-min sketch instead of exact counters (open vocabularies) */
  sketch?: { width: number; depth: number };
  /** exact counters track at most this many distinct concepts per partition, default 1,000,000 */
  maxConcepts?: number;
  /** seeds the draws and the sketch hashes, default 0 */
  seed?: number;
  /** keep samples that have no concept, default true */
  keepWithoutConcepts?: boolean;
  /** called for every sample the stage decides on (tests, telemetry) */
  onDecision?: (s: Sample, d: BalanceDecision) => void;
  state?: StateRegistry;
}

export interface BalanceDecision {
  concepts: string[];
  /** the concepts whose own draw passed */
  passed: string[];
  kept: boolean;
}

/** Renormalise the decay scale after this many windows (exp(30) keeps every stored value well inside float64). */
const RENORM_WINDOWS = 30;
/** Exact counters whose decayed count falls below this are forgotten at renormalisation. */
const FORGET_BELOW = 1e-6;

/** 53-bit string hash (cyrb53), seeded: deterministic and well mixed. */
export function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** The uniform draw in [0, 1) for one (sample id, seed, concept). */
export function balanceDraw(id: string, seed: number, concept: string): number {
  return hash53(`${id}\u0000${concept}`, seed) / 2 ** 53;
}

/** Lower-cased words of a caption (letters and digits, any script). */
function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/gu) ?? [];
}

/** Default concepts: tag labels plus caption words and phrases (up to 3 words) found in the vocabulary. */
export function defaultConcepts(vocabulary: Iterable<string> = []): (s: Sample) => string[] {
  const vocab = new Set<string>();
  let longest = 1;
  for (const v of vocabulary) {
    const w = words(v);
    if (w.length === 0 || w.length > 3) continue;
    vocab.add(w.join(' '));
    longest = Math.max(longest, w.length);
  }
  return (s) => {
    const out = new Set<string>();
    for (const t of s.tags ?? []) {
      const label = t.label.trim().toLowerCase();
      if (label) out.add(label);
    }
    if (vocab.size > 0) {
      const w = words(s.caption);
      for (let i = 0; i < w.length; i++) {
        let phrase = '';
        for (let n = 0; n < longest && i + n < w.length; n++) {
          phrase = n === 0 ? w[i] : `${phrase} ${w[i + n]}`;
          if (vocab.has(phrase)) out.add(phrase);
        }
      }
    }
    return [...out];
  };
}

/** Decayed counts under one global scale g = exp((t - base) / T): stored value = count * g. */
interface Counter {
  /** adds one occurrence at scale g; false when the concept is not tracked (exact counters full) */
  add(concept: string, g: number): boolean;
  /** stored value (divide by g for the count) */
  stored(concept: string): number;
  /** divides every stored value by `by` (renormalisation) */
  rescale(by: number): void;
  snapshot(): unknown;
}

class ExactCounter implements Counter {
  readonly values = new Map<string, number>();
  constructor(private readonly max: number) {}
  add(concept: string, g: number): boolean {
    const v = this.values.get(concept);
    if (v !== undefined) this.values.set(concept, v + g);
    else if (this.values.size < this.max) this.values.set(concept, g);
    else return false;
    return true;
  }
  stored(concept: string): number {
    return this.values.get(concept) ?? 0;
  }
  rescale(by: number): void {
    for (const [k, v] of this.values) {
      const nv = v / by;
      if (nv < FORGET_BELOW) this.values.delete(k);
      else this.values.set(k, nv);
    }
  }
  snapshot(): unknown {
    const keys = [...this.values.keys()];
    const vals = Float64Array.from(keys, (k) => this.values.get(k)!);
    return { keys, values: b64(vals) };
  }
  static restore(max: number, s: { keys: string[]; values: string }): ExactCounter {
    const c = new ExactCounter(max);
    const vals = new Float64Array(unb64(s.values, 8));
    s.keys.forEach((k, i) => c.values.set(k, vals[i]));
    return c;
  }
}

class SketchCounter implements Counter {
  readonly cells: Float64Array;
  private readonly idx: Int32Array;
  constructor(
    readonly width: number,
    readonly depth: number,
    private readonly seed: number,
    cells?: Float64Array,
  ) {
    this.cells = cells ?? new Float64Array(width * depth);
    this.idx = new Int32Array(depth);
  }
  private locate(concept: string): void {
    for (let r = 0; r < this.depth; r++) this.idx[r] = r * this.width + (hash53(concept, this.seed + 0x9e3779b1 * (r + 1)) % this.width);
  }
  add(concept: string, g: number): boolean {
    // conservative update: raise only the cells below the new estimate
    this.locate(concept);
    let est = Infinity;
    for (let r = 0; r < this.depth; r++) est = Math.min(est, this.cells[this.idx[r]]);
    const next = est + g;
    for (let r = 0; r < this.depth; r++) if (this.cells[this.idx[r]] < next) this.cells[this.idx[r]] = next;
    return true;
  }
  stored(concept: string): number {
    this.locate(concept);
    let est = Infinity;
    for (let r = 0; r < this.depth; r++) est = Math.min(est, this.cells[this.idx[r]]);
    return est;
  }
  rescale(by: number): void {
    for (let i = 0; i < this.cells.length; i++) this.cells[i] /= by;
  }
  snapshot(): unknown {
    return { width: this.width, depth: this.depth, cells: b64(this.cells) };
  }
}

function b64(a: ArrayBufferView): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

/** base64 to a fresh, aligned ArrayBuffer whose length is a multiple of `unit` */
function unb64(s: string, unit: number): ArrayBuffer {
  const buf = Buffer.from(s, 'base64');
  if (buf.length % unit !== 0) throw new Error('balance: corrupt state snapshot');
  const out = new ArrayBuffer(buf.length);
  new Uint8Array(out).set(buf);
  return out;
}

interface PartitionState {
  /** samples seen (the clock) */
  t: number;
  /** clock value at the last renormalisation */
  base: number;
  counter: Counter;
}

const BalanceSnapshot = z.object({
  v: z.literal(1),
  t: z.number(),
  base: z.number(),
  exact: z.object({ keys: z.array(z.string()), values: z.string() }).optional(),
  sketch: z.object({ width: z.number().int(), depth: z.number().int(), cells: z.string() }).optional(),
});
type Snapshot = z.infer<typeof BalanceSnapshot>;

export function balance(options: BalanceOptions = {}): OperatorFunction<Batch, Batch> {
  const tau = options.tau ?? 1000;
  const T = options.window ?? 1_000_000;
  const seed = options.seed ?? 0;
  const maxConcepts = options.maxConcepts ?? 1_000_000;
  const keepWithout = options.keepWithoutConcepts ?? true;
  const conceptsOf = options.concepts ?? defaultConcepts(options.vocabulary);
  if (!(tau > 0)) throw new RangeError(`balance: tau must be > 0, got ${tau}`);
  if (!(T >= 1)) throw new RangeError(`balance: window must be >= 1 sample, got ${T}`);
  const sk = options.sketch;
  if (sk && !(Number.isInteger(sk.width) && sk.width >= 1 && Number.isInteger(sk.depth) && sk.depth >= 1)) {
    throw new RangeError('balance: sketch width and depth must be whole numbers >= 1');
  }
  const newCounter = (): Counter => (sk ? new SketchCounter(sk.width, sk.depth, seed) : new ExactCounter(maxConcepts));

  const forPartition = partitionState(options.state, 'balance', {
    empty: (): PartitionState => ({ t: 0, base: 0, counter: newCounter() }),
    schema: BalanceSnapshot,
    toJson: (p): Snapshot => {
      const snap: Snapshot = { v: 1, t: p.t, base: p.base };
      if (p.counter instanceof SketchCounter) snap.sketch = p.counter.snapshot() as Snapshot['sketch'];
      else snap.exact = p.counter.snapshot() as Snapshot['exact'];
      return snap;
    },
    fromJson: (s): PartitionState => {
      let counter: Counter;
      if (sk) {
        if (!s.sketch || s.sketch.width !== sk.width || s.sketch.depth !== sk.depth) {
          throw new Error(`balance: snapshot sketch does not match the configured ${sk.width} x ${sk.depth} sketch`);
        }
        counter = new SketchCounter(sk.width, sk.depth, seed, new Float64Array(unb64(s.sketch.cells, 8)));
      } else {
        if (!s.exact) throw new Error('balance: snapshot holds a sketch but exact counters are configured');
        counter = ExactCounter.restore(maxConcepts, s.exact);
      }
      return { t: s.t, base: s.base, counter };
    },
  });

  return stage('balance', (batch) => {
    const p = forPartition(partitionKey(batch.topic, batch.partition));
    for (const s of batch.samples) {
      if (s.outcome.kind !== 'keep') continue;
      p.t++;
      if (p.t - p.base >= RENORM_WINDOWS * T) {
        p.counter.rescale(Math.exp((p.t - p.base) / T));
        p.base = p.t;
      }
      const g = Math.exp((p.t - p.base) / T);
      const concepts = [...new Set(conceptsOf(s))].filter((e) => p.counter.add(e, g));
      if (concepts.length === 0) {
        if (!keepWithout) filterOut(s, 'balanced_out');
        options.onDecision?.(s, { concepts, passed: [], kept: keepWithout });
        continue;
      }
      const windowShare = -Math.expm1(-p.t / T);
      const id = s.event?.id ?? `${s.coord.topic}:${s.coord.partition}:${s.coord.offset}`;
      const passed: string[] = [];
      for (const e of concepts) {
        const c = p.counter.stored(e) / g;
        const prob = c <= tau ? 1 : Math.min(1, (tau * windowShare) / c);
        if (balanceDraw(id, seed, e) < prob) passed.push(e);
      }
      const kept = passed.length > 0;
      if (!kept) filterOut(s, 'balanced_out');
      options.onDecision?.(s, { concepts, passed, kept });
    }
    return batch;
  });
}
