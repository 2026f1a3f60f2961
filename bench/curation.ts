/**
 * `npm run bench -- curation`: does curation make the model better per step? One generated crawl with its
 * ground truth (the generator's own noise: mismatched, partial, foreign-language, file-name, HTML and
 * boilerplate captions, empty captions, exact and near duplicates, broken, tiny and blank images), curated
 * twice with the built-in shapes bundle:
 *
 *   raw      every stage that drops or repeats samples off (dedup, near-dedup, balance, soft-cap,
 *            condensation, enrichment): the trainer sees every decodable image, all 64 patches;
 *   sieving  the raw rows with clip_score in the top 30% (the DataComp CLIP-score baseline), all patches;
 *   squeeze  the full default chain: dedup, balance, soft-cap copies, condensation (kept patches), enrichment.
 *
 * The same model (the built-in CLIP from a fresh initialisation, the bundle's input standardisation) is
 * trained for the same number of steps on each, for BENCH_CURATION_SEEDS trainer seeds (default 3), and
 * evaluated on the trainer's held-out set (generated images of their own seed). Reports mean recall@5,
 * zero-shot accuracy, image tokens consumed and the noisy share of what the trainer saw.
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateCrawl, writeGenJsonl } from '../src/gen';
import { BUILTIN_BUNDLE } from '../src/curate/models';
import { readParquetRows } from '../src/streams/shards/parquet-rows';
import { runTrainer, TRAINER_DEFAULTS } from '../src/train/trainer';
import { machine, runSqueeze, table, writeResult } from './lib';

const NOISY = new Set(['mismatched', 'boilerplate', 'empty', 'filename', 'foreign']);

async function shardRows(dir: string): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const t of readdirSync(dir).filter((d) => d.startsWith('topic='))) {
    for (const p of readdirSync(join(dir, t))) {
      for (const f of readdirSync(join(dir, t, p)).filter((n) => n.endsWith('.parquet') && !n.startsWith('.'))) rows.push(...(await readParquetRows(join(dir, t, p, f))));
    }
  }
  return rows;
}

export async function benchCuration(): Promise<void> {
  const n = Number(process.env.BENCH_CURATION_EVENTS ?? 4000);
  const steps = Number(process.env.BENCH_CURATION_STEPS ?? 150);
  const seeds = Array.from({ length: Number(process.env.BENCH_CURATION_SEEDS ?? 3) }, (_, i) => i + 1);
  const dir = mkdtempSync(join(tmpdir(), 'bench-curation-'));
  const input = join(dir, 'crawl.jsonl');
  await writeGenJsonl(input, { n, seed: 4001 });
  const noisy = new Map<string, boolean>();
  const kinds: Record<string, number> = {};
  for await (const ev of generateCrawl({ n, seed: 4001 })) {
    const a = ev.attrs;
    const bad = NOISY.has(a.truth_noise ?? '') || (a.truth_dup_kind ?? '') !== '';
    noisy.set(ev.id, bad);
    for (const k of [a.truth_noise ?? '', a.truth_dup_kind ? `dup_${a.truth_dup_kind}` : '', a.truth_bad ? `bad_${a.truth_bad}` : ''].filter(Boolean)) kinds[k] = (kinds[k] ?? 0) + 1;
  }
  const common = ['--input', input, '--models', 'builtin-shapes', '--progress', 'off', '--shard-rows', '500'];
  const raw = join(dir, 'raw');
  const full = join(dir, 'squeeze');
  const variant = join(dir, 'variant');
  const variantArgs = (process.env.BENCH_CURATION_VARIANT ?? '').split(' ').filter(Boolean);
  const curations: [string, string[]][] = [[raw, ['--no-dedup', '--no-near-dedup', '--no-balance', '--no-soft-cap', '--no-condense', '--no-enrich']], [full, []]];
  if (variantArgs.length) curations.push([variant, variantArgs]);
  for (const [out, extra] of curations) {
    const r = await runSqueeze(['curate', ...common, '--out', out, ...extra]);
    if (r.code !== 0) throw new Error(r.stderr);
  }
  const rawRows = await shardRows(raw);
  const scores = rawRows.map((r) => Number(r.clip_score)).filter(Number.isFinite).sort((a, b) => a - b);
  const threshold = scores[Math.floor(scores.length * 0.7)]!;
  const conditions = [
    { name: 'raw', from: raw, rowFilter: undefined, flip: false },
    { name: 'sieving (clip_score top 30%)', from: raw, rowFilter: (r: Record<string, unknown>) => Number(r.clip_score) >= threshold, flip: false },
    { name: 'squeeze (full chain)', from: full, rowFilter: undefined, flip: true },
    ...(variantArgs.length ? [{ name: `squeeze ${variantArgs.join(' ')}`, from: variant, rowFilter: undefined, flip: process.env.BENCH_CURATION_VARIANT_FLIP !== '0' }] : []),
  ].filter((c) => !process.env.BENCH_CURATION_ONLY || c.name.startsWith(process.env.BENCH_CURATION_ONLY));
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const c of conditions) {
    const runs: { r5: number; zs: number; tokens: number; noisy: number; curve: { step: number; mean_r5: number }[] }[] = [];
    for (const seed of seeds) {
      let seen = 0;
      let bad = 0;
      const r = await runTrainer({
        ...TRAINER_DEFAULTS,
        from: c.from,
        checkpoints: mkdtempSync(join(dir, 'ck-')),
        bundle: BUILTIN_BUNDLE,
        publishDir: join(dir, 'bundles'),
        init: 'scratch',
        seed,
        lr: 0.005,
        until: steps,
        passes: 50,
        evalEvery: Math.max(1, Math.floor(steps / 5)),
        checkpointEvery: steps,
        flip: c.flip,
        fullEvery: Number(process.env.BENCH_CURATION_FULL_EVERY ?? TRAINER_DEFAULTS.fullEvery),
        rowFilter: c.rowFilter,
        onStep: (s) => {
          seen += s.ids.length;
          bad += s.ids.filter((id) => noisy.get(id)).length;
        },
      });
      const last = r.state.evals[r.state.evals.length - 1]!;
      runs.push({ r5: last.mean_r5, zs: last.zero_shot, tokens: r.state.tokens, noisy: bad / Math.max(1, seen), curve: r.state.evals.map((e) => ({ step: e.step, mean_r5: e.mean_r5 })) });
      if (r.step < steps) throw new Error(`${c.name}: stopped at step ${r.step} of ${steps}`);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const spread = (xs: number[]) => Math.max(...xs) - Math.min(...xs);
    const r5 = runs.map((x) => x.r5);
    const zs = runs.map((x) => x.zs);
    rows.push({
      training_data: c.name,
      mean_recall_at_5: mean(r5).toFixed(3),
      r5_spread: spread(r5).toFixed(3),
      zero_shot: mean(zs).toFixed(3),
      zs_spread: spread(zs).toFixed(3),
      image_tokens: Math.round(mean(runs.map((x) => x.tokens))),
      noisy_share_seen: mean(runs.map((x) => x.noisy)).toFixed(3),
    });
    results.push({ condition: c.name, runs });
  }
  const inputNoisy = [...noisy.values()].filter(Boolean).length / noisy.size;
  table(`Curation quality: built-in CLIP from scratch, ${steps} steps x batch 32, seeds ${seeds.join(',')}, ${n} generated events (noisy share of the input ${inputNoisy.toFixed(3)}); held-out: 256 generated images`, rows);
  console.log(`-> ${writeResult('curation', { machine: machine(), events: n, steps, seeds, sievingThreshold: threshold, inputNoisy, inputKinds: kinds, table: rows, results })}`);
}
