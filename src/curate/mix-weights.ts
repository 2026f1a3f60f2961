/**
 * The mixing weights in force, updated from `mix_weights` control events (docs/ARCHITECTURE.md, Seams). The `mix`
 * operator reads `current()` once per batch, so an update applies from the next batch on.
 *
 * A `mix_weights` event's `weights` map carries the weights per score name and, optionally, new frozen
 * statistics as `<name>.mean` / `<name>.std` entries; `bias` null keeps the bias. A map with no weight
 * entries keeps the weights (an event may update only the bias or the statistics). Statistics not in the
 * event are kept. The new version is `mix-<published_at>-<hash>`, the hash over the resulting weights,
 * bias and statistics, so the same content never counts as a change (the compacted control topic
 * replays its last event on every start).
 *
 * @example
 * const store = new MixWeightsStore(DEFAULT_MIX_WEIGHTS);
 * control$.subscribe((e) => store.apply(e));
 * batches$.pipe(mix({ weights: () => store.current() }))
 */
import { createHash } from 'node:crypto';
import { DEFAULT_MIX_WEIGHTS, type MixWeights } from '../operators/mix';
import type { ControlEvent } from '../records';

export { DEFAULT_MIX_WEIGHTS, type MixWeights };

const STAT_KEY = /^(.+)\.(mean|std)$/;

/** canonical JSON of the content (sorted names), what the version hash and the change test use */
function content(w: Omit<MixWeights, 'version'>): string {
  const sorted = <T>(r: Record<string, T>): [string, T][] => Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify({
    weights: sorted(w.weights),
    bias: w.bias,
    stats: sorted(w.stats).map(([k, v]) => [k, v.mean, v.std]),
  });
}

function frozen(w: MixWeights): MixWeights {
  const stats: MixWeights['stats'] = {};
  for (const [k, v] of Object.entries(w.stats)) stats[k] = Object.freeze({ mean: v.mean, std: v.std });
  return Object.freeze({ version: w.version, weights: Object.freeze({ ...w.weights }), bias: w.bias, stats: Object.freeze(stats) });
}

export class MixWeightsStore {
  private weights: MixWeights;

  constructor(initial: MixWeights = DEFAULT_MIX_WEIGHTS) {
    this.weights = frozen(initial);
  }

  /** the weights in force (an immutable object: an update replaces it) */
  current(): MixWeights {
    return this.weights;
  }

  /**
   * Applies a control event. Only `mix_weights` events count; one with a non-finite number, a std ≤ 0
   * or a half-given statistic is ignored. Returns true when the weights, bias or statistics changed.
   */
  apply(event: ControlEvent): boolean {
    if (event.kind !== 'mix_weights') return false;
    const cur = this.weights;
    const weights: Record<string, number> = {};
    const given: Record<string, { mean?: number; std?: number }> = {};
    let hasWeights = false;
    for (const [key, value] of Object.entries(event.weights ?? {})) {
      if (typeof value !== 'number' || !Number.isFinite(value)) return false;
      const m = STAT_KEY.exec(key);
      if (m) (given[m[1]] ??= {})[m[2] as 'mean' | 'std'] = value;
      else {
        weights[key] = value;
        hasWeights = true;
      }
    }
    const stats: MixWeights['stats'] = { ...cur.stats };
    for (const [name, st] of Object.entries(given)) {
      if (st.mean === undefined || st.std === undefined || !(st.std > 0)) return false;
      stats[name] = { mean: st.mean, std: st.std };
    }
    if (event.bias !== null && event.bias !== undefined && !Number.isFinite(event.bias)) return false;
    const next = { weights: hasWeights ? weights : { ...cur.weights }, bias: event.bias ?? cur.bias, stats };
    const text = content(next);
    if (text === content(cur)) return false;
    const hash = createHash('sha256').update(text).digest('hex').slice(0, 8);
    this.weights = frozen({ version: `mix-${event.published_at}-${hash}`, ...next });
    return true;
  }
}
