/**
 * mix: M-FLYT-style score mixing (research/algorithms.md A.2, A.8). Every per-sample score the
 * weights name (clip_score, caption quality, image quality, tag confidence, novelty, …) is standardised
 * with FROZEN statistics, z = (x − mean) / std, and the mixed score is
 *
 *     score = bias + Σ_name weights[name] · z_name
 *
 * written to `s.mixed = { score, weightsVersion }` for the sampler (softCap) downstream.
 *
 * - A score the weights name but the sample lacks (or that is not finite) contributes 0 after
 *   standardisation, i.e. it counts as the mean. Each such case is counted (`stats.missing[name]`) and
 *   flagged on the sample (`mix_missing:<name>`).
 * - A name without statistics (or with std ≤ 0 or not finite) is used as is (mean 0, std 1).
 * - The weights are read ONCE at the start of every batch through `options.weights()`: a new version
 *   (hot reload, e.g. from the control topic) applies from the next batch on, never in the middle of one,
 *   and every sample records the version that scored it.
 *
 * Only kept samples are scored. The statistics must stay frozen together with the weights: re-estimating
 * them online would drift the scores and with them the sampler's λ.
 *
 * @example
 * const store = new MixWeightsStore(DEFAULT_MIX_WEIGHTS);
 * batches$.pipe(..., mix({ weights: () => store.current() }), softCap({ seed: 1, state }))
 */
import type { OperatorFunction } from 'rxjs';
import { type Batch, type Sample } from './sample';
import { stage } from './stage';

export interface MixWeights {
  /** names the weights; stored with every mixed score */
  version: string;
  /** per score name */
  weights: Record<string, number>;
  bias: number;
  /**
   * frozen standardisation statistics per score name; `score`, if given, is that of the mixed score
   * itself, which soft-cap's warm-up starts a fresh stream from
   */
  stats: Record<string, { mean: number; std: number }>;
}

/** Until calibrated: the CLIP score alone, standardised with typical statistics. */
export const DEFAULT_MIX_WEIGHTS: MixWeights = Object.freeze({
  version: 'default-2',
  weights: Object.freeze({ clip_score: 1, caption_quality: 0.5, image_quality: 0.25 }) as Record<string, number>,
  bias: 0,
  stats: Object.freeze({
    clip_score: Object.freeze({ mean: 0.25, std: 0.1 }),
    caption_quality: Object.freeze({ mean: 0.6, std: 0.3 }),
    image_quality: Object.freeze({ mean: 0.5, std: 0.15 }),
  }) as MixWeights['stats'],
}) as MixWeights;

/** What the operator has done; pass one in to read it (telemetry, tests). */
export interface MixStats {
  batches: number;
  samples: number;
  /** per score name: samples the score was missing from (counted as its mean) */
  missing: Record<string, number>;
  /** the version used by the last batch */
  lastVersion: string | null;
}

export const newMixStats = (): MixStats => ({ batches: 0, samples: 0, missing: {}, lastVersion: null });

export interface MixOptions {
  /** the weights to use; called once at the start of every batch */
  weights: () => MixWeights;
  stats?: MixStats;
}

/** One name's term, precomputed per batch. */
interface Term {
  name: string;
  weight: number;
  mean: number;
  std: number;
}

function terms(w: MixWeights): Term[] {
  const out: Term[] = [];
  for (const [name, weight] of Object.entries(w.weights)) {
    if (!Number.isFinite(weight) || weight === 0) continue;
    const st = w.stats[name];
    const ok = st && Number.isFinite(st.mean) && Number.isFinite(st.std) && st.std > 0;
    out.push({ name, weight, mean: ok ? st.mean : 0, std: ok ? st.std : 1 });
  }
  return out;
}

/**
 * The mixed score of one set of scores; `onMissing` is called for each named score that is absent or
 * not finite (it contributes 0).
 */
export function mixScore(scores: Record<string, number>, w: MixWeights, onMissing?: (name: string) => void): number {
  return scoreWith(terms(w), Number.isFinite(w.bias) ? w.bias : 0, scores, onMissing);
}

function scoreWith(ts: Term[], bias: number, scores: Record<string, number>, onMissing?: (name: string) => void): number {
  let score = bias;
  for (const t of ts) {
    const x = scores[t.name];
    if (typeof x !== 'number' || !Number.isFinite(x)) {
      onMissing?.(t.name);
      continue;
    }
    score += (t.weight * (x - t.mean)) / t.std;
  }
  return score;
}

export function mix(options: MixOptions): OperatorFunction<Batch, Batch> {
  const stats = options.stats;
  return stage('mix', (batch) => {
    const w = options.weights();
    const ts = terms(w);
    const bias = Number.isFinite(w.bias) ? w.bias : 0;
    let current: Sample | null = null;
    const onMissing = (name: string): void => {
      current!.flags.push(`mix_missing:${name}`);
      if (stats) stats.missing[name] = (stats.missing[name] ?? 0) + 1;
    };
    let scored = 0;
    for (const s of batch.samples) {
      if (s.outcome.kind !== 'keep') continue;
      current = s;
      s.mixed = { score: scoreWith(ts, bias, s.scores, onMissing), weightsVersion: w.version };
      scored++;
    }
    if (stats) {
      stats.batches++;
      stats.samples += scored;
      stats.lastVersion = w.version;
    }
    return batch;
  });
}
