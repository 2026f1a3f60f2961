/**
 * Which model bundle and mixing weights a run uses: the photo bundle unless told otherwise.
 * `--models` takes a directory, or a shipped bundle's name: `photo` (models/photo, the default: real-photo
 * towers and YOLOX-nano) or `builtin-shapes` (models/builtin, the tiny CLIP of the generated crawl), or
 * `none`. `--detector FILE.onnx` adds (or replaces) a YOLOX detector, its classes file beside it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Config } from '../config/config';
import { loadBundle } from '../models/bundle';
import { DEFAULT_MIX_WEIGHTS, type MixWeights } from '../operators/mix';
import { BundleHolder } from './bundle-holder';
import { MixWeightsStore } from './mix-weights';

const MODELS = join(__dirname, '..', '..', '..', 'models');
/** The tiny CLIP of the generated crawl (`squeeze build-model --kind shapes`, checked by a test). */
export const BUILTIN_BUNDLE = join(MODELS, 'builtin');
/** The real-photo bundle, the default (`squeeze build-model --kind photo`). */
export const PHOTO_BUNDLE = join(MODELS, 'photo');
export const NAMED_BUNDLES: Readonly<Record<string, string>> = { photo: PHOTO_BUNDLE, 'builtin-shapes': BUILTIN_BUNDLE };

/** The bundle directory `--models` names (null: none). */
export function bundleDir(models: string | null): string | null {
  if (models === 'none') return null;
  if (models === null) return PHOTO_BUNDLE;
  return NAMED_BUNDLES[models] ?? resolve(models);
}

/** The classes file of a detector ONNX file: `<name>.classes.txt`, `coco_classes.txt` or `classes.txt` beside it. */
export function detectorClasses(onnxPath: string): string {
  const dir = dirname(onnxPath);
  const stem = onnxPath.replace(/\.onnx$/i, '');
  const candidates = [`${stem}.classes.txt`, join(dir, 'coco_classes.txt'), join(dir, 'classes.txt')];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`--detector ${onnxPath}: no classes file beside it (looked for ${candidates.map((c) => c.slice(dir.length + 1)).join(', ')})`);
  return found;
}

export async function openModels(cfg: Config): Promise<BundleHolder | null> {
  const dir = bundleDir(cfg.models);
  if (dir === null) return null;
  if (!existsSync(join(dir, 'bundle.json'))) {
    if (cfg.models) throw new Error(`no bundle.json in --models ${dir}`);
    process.stderr.write(`squeeze: no model bundle at ${dir} (squeeze build-model --out ${dir}); model stages skipped\n`);
    return null;
  }
  let detector: { onnx: string; classes: string } | undefined;
  if (cfg.detector) {
    const onnx = resolve(cfg.detector);
    if (!existsSync(onnx)) throw new Error(`--detector ${cfg.detector}: no such file`);
    detector = { onnx, classes: detectorClasses(onnx) };
  }
  return new BundleHolder(await loadBundle(dir, { threads: cfg.threads, offThread: cfg.inference === 'worker', detector }));
}

/** What a run says about its models before it starts: the default photo model is for research use. */
export function modelNotice(cfg: Config, holder: BundleHolder | null): string | null {
  if (!holder || bundleDir(cfg.models) !== PHOTO_BUNDLE) return null;
  return `squeeze: note: the default photo model (${holder.version}) is for research use: its text side was trained on Flickr8k captions (models/photo/NOTICE.md); --models names another bundle`;
}

/**
 * The mixing weights: a `--mix-weights` file, else the bundle's calibrated ones (its clip_score
 * statistics measured on real data), else the defaults.
 */
export function openWeights(cfg: Config, bundle: BundleHolder | null = null): MixWeightsStore {
  if (!cfg.mix.weightsFile) {
    const cal = bundle?.current.calibration?.mix;
    if (!cal) return new MixWeightsStore(DEFAULT_MIX_WEIGHTS);
    return new MixWeightsStore({ version: `calibrated-${bundle!.version}`, weights: { ...cal.weights }, bias: 0, stats: { ...DEFAULT_MIX_WEIGHTS.stats, ...cal.stats } });
  }
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
