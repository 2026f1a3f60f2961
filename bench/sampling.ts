/**
 * Sampling with memory on a gen stream (issue 4): the share of noisy samples (mismatched or
 * boilerplate captions, duplicates; by truth) among the copies written, against their share in the
 * input, for sieving alone (drop below a score threshold) and for the full chain (exact and near
 * dedup, balance, soft-cap) at the same number of copies; plus time and state size per operator.
 *   npm run bench -- sampling          (BENCH_SAMPLING_EVENTS, default 2000)
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { firstValueFrom, from, toArray, type OperatorFunction } from 'rxjs';
import { BUILTIN_BUNDLE } from '../src/curate/models';
import { generateCrawl } from '../src/gen';
import { loadBundle } from '../src/models/bundle';
import { balance } from '../src/operators/balance';
import { decodeImage } from '../src/operators/decode-image';
import { dedupExact } from '../src/operators/dedup-exact';
import { dedupNear } from '../src/operators/dedup-near';
import { embed } from '../src/operators/embed';
import { DEFAULT_MIX_WEIGHTS, mix } from '../src/operators/mix';
import { newSample, partitionKey, type Batch, type Sample } from '../src/operators/sample';
import { scoreQuality } from '../src/operators/score-quality';
import { softCap } from '../src/operators/soft-cap';
import { StateRegistry } from '../src/operators/state';
import { tag } from '../src/operators/tag';
import { validateEvent } from '../src/operators/validate-event';
import { table, writeResult } from './lib';

const DECODE = { maxImageBytes: 20 << 20, maxPixels: 40e6, minSide: 32, maxAspect: 8, imageFormat: 'keep' as const, quality: 90 };
const BATCH = 128;

const isNoisy = (s: Sample): boolean => {
  const a = s.event?.attrs ?? {};
  return a.truth_noise === 'mismatched' || a.truth_noise === 'boilerplate' || (a.truth_dup_kind ?? '') !== '';
};

async function runStage(name: string, op: OperatorFunction<Batch, Batch>, batches: Batch[], timing: Record<string, number>): Promise<Batch[]> {
  const t0 = performance.now();
  const out = await firstValueFrom(from(batches).pipe(op, toArray()));
  timing[name] = (performance.now() - t0) / 1000;
  return out;
}

export async function benchSampling(): Promise<void> {
  const n = Number(process.env.BENCH_SAMPLING_EVENTS ?? 2000);
  // the built-in bundle when it exists; otherwise the model-free scores alone (as the curator does)
  const bundle = existsSync(join(BUILTIN_BUNDLE, 'bundle.json')) ? await loadBundle(BUILTIN_BUNDLE, { threads: 1 }) : null;
  const all: Sample[] = [];
  let offset = 0;
  for await (const ev of generateCrawl({ n, seed: 5151, badRate: 0 })) {
    const s = newSample({ topic: 'bench', partition: 0, offset: offset++ }, null);
    s.event = ev;
    s.caption = ev.caption;
    all.push(s);
  }
  let batches: Batch[] = [];
  for (let i = 0; i < all.length; i += BATCH) batches.push({ topic: 'bench', partition: 0, samples: all.slice(i, i + BATCH) });
  const timing: Record<string, number> = {};
  batches = await runStage('decode', (src) => src.pipe(validateEvent({ maxCaptionChars: 2000 }), decodeImage(DECODE)), batches, timing);
  if (bundle) {
    batches = await runStage('embed', embed({ bundle }), batches, timing);
    batches = await runStage('tag', tag({ bundle }), batches, timing);
  }
  batches = await runStage('score_quality', scoreQuality(), batches, timing);
  batches = await runStage('mix', mix({ weights: () => DEFAULT_MIX_WEIGHTS }), batches, timing);
  const scored = all.filter((s) => s.outcome.kind === 'keep' && s.mixed);
  const inputNoisy = scored.filter(isNoisy).length / scored.length;

  // the full stateful chain, each operator timed, state sizes from the registry
  const state = new StateRegistry();
  batches = await runStage('dedup_exact', dedupExact({ memory: 100_000, state }), batches, timing);
  batches = await runStage('dedup_near', dedupNear({ state }), batches, timing);
  batches = await runStage('balance', balance({ tau: 100, vocabulary: bundle?.tags.vocabulary ?? [], seed: 7, state }), batches, timing);
  batches = await runStage('soft_cap', softCap({ seed: 7, state, alpha: 0.15, rate: 1 }), batches, timing);
  const snap = state.snapshot(partitionKey('bench', 0));
  const written = scored.filter((s) => s.outcome.kind === 'keep');
  const copies = written.reduce((a, s) => a + s.copies, 0);
  const noisyCopies = written.filter(isNoisy).reduce((a, s) => a + s.copies, 0);

  // sieving alone: keep the top samples by mixed score, one copy each, as many as the chain wrote copies
  const byScore = [...scored].sort((a, b) => b.mixed!.score - a.mixed!.score).slice(0, copies);
  const sieveNoisy = byScore.filter(isNoisy).length / Math.max(1, byScore.length);

  const f3 = (x: number) => x.toFixed(3);
  table(`Noisy share (mismatched, boilerplate, duplicate by truth) among copies written, ${scored.length} scored gen events, scores: ${bundle ? bundle.version : 'model-free (caption_quality, image_quality)'}`, [
    { selection: 'input', samples_or_copies: scored.length, noisy_share: f3(inputNoisy) },
    { selection: 'sieving: top by mixed score, 1 copy each', samples_or_copies: byScore.length, noisy_share: f3(sieveNoisy) },
    { selection: 'full chain: dedup + balance + soft-cap', samples_or_copies: copies, noisy_share: f3(noisyCopies / Math.max(1, copies)) },
  ]);
  const ops = ['dedup_exact', 'dedup_near', 'balance', 'soft_cap'];
  table('Per operator: time over the stream and state snapshot size (one partition)', [
    ...['decode', 'embed', 'tag', 'score_quality', 'mix'].filter((k) => k in timing).map((k) => ({ operator: k, seconds: timing[k].toFixed(2), samples_per_s: (all.length / timing[k]).toFixed(0), state_bytes: 0 })),
    ...ops.map((k) => ({ operator: k, seconds: timing[k].toFixed(2), samples_per_s: (all.length / timing[k]).toFixed(0), state_bytes: JSON.stringify(snap[k] ?? null).length })),
  ]);
  await bundle?.close();
  console.log(`-> ${writeResult('sampling', { events: n, bundle: bundle?.version ?? 'none', scored: scored.length, inputNoisy, sieveNoisy, chain: { written: written.length, copies, noisyCopies }, timing, stateBytes: Object.fromEntries(ops.map((k) => [k, JSON.stringify(snap[k] ?? null).length])) })}`);
}
