import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, from, toArray } from 'rxjs';
import { balance, type BalanceOptions } from '../../src/operators/balance';
import { type Batch, newSample, partitionKey } from '../../src/operators/sample';
import { StateRegistry } from '../../src/operators/state';
import { event } from '../helpers/samples';

/** mulberry32: the test's own seeded randomness */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const N = 100_000;
const CONCEPTS = 200;
const TAU = 1000;
const WINDOW = 50_000;
/** cap(N) = tau (1 + N / T) passes per concept, see balance.ts */
const CAP = TAU * (1 + N / WINDOW);
/** binomial noise: 3 standard deviations at the cap */
const TOLERANCE = 3 * Math.sqrt(CAP);

/** 1-3 distinct concepts per sample, each Zipf(s = 1.1) over 200 concepts */
function zipfStream(seed: number): string[][] {
  const r = rng(seed);
  const w = Array.from({ length: CONCEPTS }, (_, k) => 1 / (k + 1) ** 1.1);
  const total = w.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  let acc = 0;
  for (const x of w) cdf.push((acc += x / total));
  const draw = (): number => {
    const u = r();
    let lo = 0;
    let hi = CONCEPTS - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const out: string[][] = [];
  for (let i = 0; i < N; i++) {
    const k = 1 + Math.floor(r() * 3);
    const set = new Set<number>();
    while (set.size < k) set.add(draw());
    out.push([...set].map((c) => `c${String(c).padStart(3, '0')}`));
  }
  return out;
}

const STREAM = zipfStream(2024);
const TOTALS = new Map<string, number>();
for (const cs of STREAM) for (const c of cs) TOTALS.set(c, (TOTALS.get(c) ?? 0) + 1);

/** Fresh batches of 1000 samples carrying the stream's concepts as tags (the default concept source). */
function batches(from_ = 0, to = N, partition = 0): Batch[] {
  const out: Batch[] = [];
  for (let start = from_; start < to; start += 1000) {
    const samples = [];
    for (let i = start; i < Math.min(to, start + 1000); i++) {
      const s = newSample({ topic: 't', partition, offset: i }, Buffer.from('raw'));
      s.event = event(`s${i}`);
      s.caption = '';
      s.tags = STREAM[i].map((label) => ({ label, score: 1 }));
      samples.push(s);
    }
    out.push({ topic: 't', partition, samples });
  }
  return out;
}

interface Run {
  kept: boolean[];
  passes: Map<string, number>;
  keptPer: Map<string, number>;
}

async function run(opts: BalanceOptions, input: Batch[] = batches()): Promise<Run> {
  const passes = new Map<string, number>();
  const op = balance({
    ...opts,
    onDecision: (s, d) => {
      for (const c of d.passed) passes.set(c, (passes.get(c) ?? 0) + 1);
      opts.onDecision?.(s, d);
    },
  });
  const out = await firstValueFrom(from(input).pipe(op, toArray()));
  const kept = out.flatMap((b) => b.samples.map((s) => s.outcome.kind === 'keep'));
  const keptPer = new Map<string, number>();
  out.forEach((b) =>
    b.samples.forEach((s) => {
      if (s.outcome.kind === 'keep') for (const t of s.tags!) keptPer.set(t.label, (keptPer.get(t.label) ?? 0) + 1);
    }),
  );
  return { kept, passes, keptPer };
}

const base: BalanceOptions = { tau: TAU, window: WINDOW, seed: 7 };

test('exact counters: no concept passes more than cap(N) + tolerance; the tail is kept in full', async (t) => {
  const r = await run(base);
  let headOver = 0;
  for (const [c, n] of TOTALS) {
    const p = r.passes.get(c) ?? 0;
    assert.ok(p <= CAP + TOLERANCE, `${c}: ${p} passes, cap ${CAP} + ${TOLERANCE.toFixed(0)}`);
    if (n <= TAU) assert.equal(r.keptPer.get(c), n, `${c} (${n} in total) must be kept in full`);
    if (n > 3 * CAP) headOver++;
  }
  // the cap is reached, not undershot: the most frequent concept passes close to cap(N)
  const top = r.passes.get('c000') ?? 0;
  assert.ok(top >= 0.9 * CAP, `top concept passes ${top}, expected near ${CAP}`);
  assert.ok(headOver >= 3, 'the stream has several concepts far above the cap');
  const keptShare = r.kept.filter(Boolean).length / N;
  const tail = [...TOTALS.values()].filter((n) => n <= TAU).length;
  t.diagnostic(
    `N=${N} tau=${TAU} T=${WINDOW} cap=${CAP}±${TOLERANCE.toFixed(0)}; top concept: ${TOTALS.get('c000')} occurrences, ` +
      `${top} passes, ${r.keptPer.get('c000')} kept (with spill-over); ${tail} tail concepts kept in full; kept ${(100 * keptShare).toFixed(1)}% of samples`,
  );
});

test('count-min sketch: passes stay under the cap; tail kept in full within the sketch error allowance', async (t) => {
  const width = 1024;
  const depth = 4;
  const occurrences = [...TOTALS.values()].reduce((a, b) => a + b, 0);
  // with probability >= 1 - e^-depth per concept the estimate exceeds the count by at most (e / width) * mass
  const allowance = (Math.E / width) * occurrences;
  const r = await run({ ...base, sketch: { width, depth } });
  let thinned = 0;
  for (const [c, n] of TOTALS) {
    const p = r.passes.get(c) ?? 0;
    assert.ok(p <= CAP + TOLERANCE, `${c}: ${p} passes over cap ${CAP}`);
    if (n <= TAU - allowance) assert.equal(r.keptPer.get(c), n, `${c} (${n} in total) must be kept in full`);
    else if (n <= TAU && r.keptPer.get(c) !== n) thinned++;
  }
  t.diagnostic(`sketch ${width}x${depth}: allowance ${allowance.toFixed(0)}; tail concepts within the allowance band thinned: ${thinned}`);
});

test('the sketch over-estimates only: it never passes a concept more often than exact counters would by more than noise', async () => {
  const exact = await run(base);
  const sketch = await run({ ...base, sketch: { width: 64, depth: 2 } });
  for (const [c] of TOTALS) {
    const e = exact.passes.get(c) ?? 0;
    const s = sketch.passes.get(c) ?? 0;
    assert.ok(s <= e + 3 * Math.sqrt(e + 1), `${c}: sketch ${s} vs exact ${e}`);
  }
});

test('deterministic: the same input, seed and options decide the same; another seed decides differently', async () => {
  const a = await run(base);
  const b = await run(base);
  assert.deepEqual(a.kept, b.kept);
  const c = await run({ ...base, seed: 8 });
  assert.notDeepEqual(a.kept, c.kept);
});

for (const variant of [
  { name: 'exact counters', opts: base },
  { name: 'sketch', opts: { ...base, sketch: { width: 512, depth: 3 } } },
  { name: 'exact counters, short window (renormalises the decay scale)', opts: { ...base, window: 500, tau: 20 } },
] as const) {
  test(`snapshot/restore mid-stream into a fresh operator equals an uninterrupted run (${variant.name})`, async (t) => {
    const M = 40_000;
    const all = batches(0, M);
    const whole = await run(variant.opts, all);
    const cut = 23_000;
    const state = new StateRegistry();
    const first = await run({ ...variant.opts, state }, batches(0, cut));
    const snap = JSON.parse(JSON.stringify(state.snapshot(partitionKey('t', 0))));
    const fresh = new StateRegistry();
    const op2Opts = { ...variant.opts, state: fresh };
    // the second operator registers on `fresh` when built inside run(); restore must happen before its first batch
    const rest = batches(cut, M);
    const passes = new Map<string, number>();
    const op2 = balance({ ...op2Opts, onDecision: (_s, d) => d.passed.forEach((c) => passes.set(c, (passes.get(c) ?? 0) + 1)) });
    fresh.restore(partitionKey('t', 0), snap);
    const out = await firstValueFrom(from(rest).pipe(op2, toArray()));
    const resumed = [...first.kept, ...out.flatMap((b) => b.samples.map((s) => s.outcome.kind === 'keep'))];
    assert.deepEqual(resumed, whole.kept);
    t.diagnostic(`snapshot after ${cut} samples: ${JSON.stringify(snap).length} bytes of JSON`);
  });
}

test('partitions keep separate counts; drop forgets one', async () => {
  const state = new StateRegistry();
  const op = balance({ tau: 1, window: 1e9, state, concepts: () => ['x'] });
  const mk = (partition: number, n: number): Batch => ({
    topic: 't',
    partition,
    samples: Array.from({ length: n }, (_, i) => {
      const s = newSample({ topic: 't', partition, offset: i }, Buffer.from('r'));
      s.event = event(`p${partition}-${i}`);
      return s;
    }),
  });
  const out = await firstValueFrom(from([mk(0, 1), mk(1, 1)]).pipe(op, toArray()));
  // the first occurrence in each partition is under the guard
  assert.deepEqual(out.map((b) => b.samples[0].outcome.kind), ['keep', 'keep']);
  const snap = state.snapshot(partitionKey('t', 0)) as { balance: { t: number } };
  assert.equal(snap.balance.t, 1);
  state.drop(partitionKey('t', 0));
  assert.equal((state.snapshot(partitionKey('t', 0)) as { balance: unknown }).balance, null, 'a dropped partition has no state (restores empty)');
});

test('default concepts: tag labels plus vocabulary words and phrases in the caption; no concept -> kept unless configured', async () => {
  const seen: string[][] = [];
  const mk = (caption: string, tags: string[] = []) => {
    const s = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('r'));
    s.event = event(caption);
    s.caption = caption;
    s.tags = tags.map((label) => ({ label, score: 0.9 }));
    return s;
  };
  const batch: Batch = {
    topic: 't',
    partition: 0,
    samples: [mk('A Red Circle next to a hot-air balloon', ['Star']), mk('nothing known here'), mk('an ice cream cone')],
  };
  const op = balance({ vocabulary: ['circle', 'hot-air balloon', 'ice cream', 'square'], onDecision: (_s, d) => seen.push(d.concepts.sort()) });
  const out = await firstValueFrom(from([batch]).pipe(op));
  assert.deepEqual(seen, [['circle', 'hot-air balloon', 'star'], [], ['ice cream']]);
  assert.deepEqual(out.samples.map((s) => s.outcome.kind), ['keep', 'keep', 'keep']);

  const strict = balance({ keepWithoutConcepts: false, concepts: () => [] });
  const s = mk('x');
  const o2 = await firstValueFrom(from([{ topic: 't', partition: 0, samples: [s] }]).pipe(strict));
  assert.deepEqual(o2.samples[0].outcome, { kind: 'filtered', reason: 'balanced_out', stage: 'balance' });
});

test('samples already dropped upstream are neither counted nor decided', async () => {
  const seen: number[] = [];
  const mk = (i: number) => {
    const s = newSample({ topic: 't', partition: 0, offset: i }, Buffer.from('r'));
    s.event = event(`d${i}`);
    return s;
  };
  const dead = mk(0);
  dead.outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  const op = balance({ tau: 1, concepts: () => ['x'], onDecision: (s) => seen.push(s.coord.offset) });
  const out = await firstValueFrom(from([{ topic: 't', partition: 0, samples: [dead, mk(1)] }]).pipe(op));
  assert.deepEqual(seen, [1]);
  assert.deepEqual(out.samples.map((s) => s.outcome.kind), ['filtered', 'keep']);
});
