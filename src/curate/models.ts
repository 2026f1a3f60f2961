/** Which model bundle and mixing weights a run uses (DESIGN 6): the built-in CLIP unless told otherwise. */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Config } from '../config/config';
import { loadBundle } from '../models/bundle';
import { DEFAULT_MIX_WEIGHTS, type MixWeights } from '../operators/mix';
import { BundleHolder } from './bundle-holder';
import { MixWeightsStore } from './mix-weights';

/** The built-in bundle shipped with the project (produced by `squeeze build-model`, checked by a test). */
export const BUILTIN_BUNDLE = join(__dirname, '..', '..', '..', 'models', 'builtin');

export async function openModels(cfg: Config): Promise<BundleHolder | null> {
  if (cfg.models === 'none') return null;
  const dir = resolve(cfg.models ?? BUILTIN_BUNDLE);
  if (!existsSync(join(dir, 'bundle.json'))) {
    if (cfg.models) throw new Error(`no bundle.json in --models ${dir}`);
    process.stderr.write(`squeeze: no built-in model bundle at ${dir} (squeeze build-model --out ${dir}); model stages skipped\n`);
    return null;
  }
  return new BundleHolder(await loadBundle(dir, { threads: cfg.threads }));
}

export function openWeights(cfg: Config): MixWeightsStore {
  if (!cfg.mix.weightsFile) return new MixWeightsStore(DEFAULT_MIX_WEIGHTS);
  let parsed: MixWeights;
  try {
    parsed = JSON.parse(readFileSync(cfg.mix.weightsFile, 'utf8')) as MixWeights;
  } catch (e) {
    throw new Error(`cannot read mixing weights ${cfg.mix.weightsFile}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (typeof parsed.version !== 'string' || typeof parsed.weights !== 'object' || typeof parsed.bias !== 'number' || typeof parsed.stats !== 'object') {
    throw new Error(`mixing weights ${cfg.mix.weightsFile} need version, weights, bias and stats`);
  }
  return new MixWeightsStore(parsed);
}
