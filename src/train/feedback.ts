/**
 * Online FLYT feedback (research/algorithms.md A.2: the mixing weights are learned from what helps the
 * downstream model). The trainer scores every fresh sample it trains on with how much it helps
 * (trainer.ts pairHelp: minus the pair's own contrastive loss under the current model, the reference-model
 * idea of RHO-LOSS/JEST). Over a bounded window of recent samples each scoring feature's Pearson correlation
 * with that help is the evidence; the published weight of a feature moves towards that correlation, scaled
 * to the current weights' largest magnitude so the mixed score keeps its spread (soft-cap's alpha depends
 * on it).
 */
export interface FeedbackSample {
  features: Record<string, number>;
  help: number;
}

export interface FeedbackState {
  window: FeedbackSample[];
  weights: Record<string, number>;
  bias: number;
}

export interface FeedbackOptions {
  /** samples remembered (default 1024) */
  window?: number;
  /** how far one fit moves a weight towards its target, 0..1 (default 0.5) */
  rate?: number;
  /** samples needed before a fit (default 128) */
  minSamples?: number;
}

export function initialFeedback(weights: Record<string, number>, bias = 0): FeedbackState {
  return { window: [], weights: { ...weights }, bias };
}

export function observe(state: FeedbackState, s: FeedbackSample, o: FeedbackOptions = {}): void {
  const cap = o.window ?? 1024;
  if (!Number.isFinite(s.help)) return;
  state.window.push(s);
  if (state.window.length > cap) state.window.splice(0, state.window.length - cap);
}

function pearson(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 3) return 0;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i]!;
    my += ys[i]!;
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i]! - mx;
    const dy = ys[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : 0;
}

/** Fits new weights from the window; null while there are too few samples. Returns the evidence too. */
export function fitWeights(state: FeedbackState, o: FeedbackOptions = {}): { weights: Record<string, number>; correlation: Record<string, number> } | null {
  if (state.window.length < (o.minSamples ?? 128)) return null;
  const names = [...new Set(state.window.flatMap((s) => Object.keys(s.features)))].sort();
  const help = state.window.map((s) => s.help);
  const correlation: Record<string, number> = {};
  for (const name of names) {
    const xs: number[] = [];
    const ys: number[] = [];
    state.window.forEach((s, i) => {
      const v = s.features[name];
      if (typeof v === 'number' && Number.isFinite(v)) {
        xs.push(v);
        ys.push(help[i]!);
      }
    });
    correlation[name] = pearson(xs, ys);
  }
  const scale = Math.max(1, ...Object.values(state.weights).map(Math.abs));
  const maxCorr = Math.max(1e-9, ...Object.values(correlation).map(Math.abs));
  const rate = o.rate ?? 0.5;
  const weights: Record<string, number> = { ...state.weights };
  for (const name of names) {
    const target = (correlation[name]! / maxCorr) * scale;
    const w = (weights[name] ?? 0) + rate * (target - (weights[name] ?? 0));
    weights[name] = Math.round(w * 1e4) / 1e4;
  }
  state.weights = weights;
  return { weights, correlation };
}
