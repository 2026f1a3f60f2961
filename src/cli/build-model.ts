/**
 * `squeeze build-model --out DIR [--kind photo|shapes] [--seed S]`: trains and exports a bundle,
 * deterministically from the seed.
 * - photo (default; models/photo): the real-photo bundle, LiT on locked SqueezeNet features with YOLOX-nano
 *   (src/builders/photo/build.ts); needs the photos and models of a shared/ data directory (SQUEEZE_SHARED).
 * - shapes (models/builtin): the tiny CLIP of the generated crawl (src/builders/shapes/build.ts).
 */
import { existsSync, readdirSync } from 'node:fs';
import type { Config } from '../config/config';
import { UserError } from './errors';

const BUNDLE_FILES = ['bundle.json', 'vision.onnx', 'text.onnx', 'words.json', 'yolox_nano.onnx', 'coco_classes.txt', 'LICENSE.yolox.Apache-2.0', 'LICENSE.squeezenet.MIT', 'NOTICE.md'];

export async function buildModelCommand(cfg: Config, local: Record<string, string | boolean | undefined> = {}): Promise<number> {
  const kind = (local.kind as string | undefined) ?? 'photo';
  if (kind !== 'photo' && kind !== 'shapes') throw new UserError(`--kind must be photo or shapes, got "${kind}"`);
  if (!cfg.out) throw new UserError(`--out DIR is required (the shipped bundle lives in ${kind === 'photo' ? 'models/photo' : 'models/builtin'})`);
  if (existsSync(cfg.out) && readdirSync(cfg.out).some((f) => !BUNDLE_FILES.includes(f))) {
    throw new UserError(`--out ${cfg.out} holds files other than a bundle's; give an empty or new directory`);
  }
  const progress = (msg: string) => process.stderr.write(`${msg}\n`);
  if (kind === 'photo') {
    const { sharedDir } = await import('../streams/files/shared-photos');
    const { buildPhotoBundle } = await import('../builders/photo/build');
    const shared = sharedDir();
    if (!shared) throw new UserError('build-model --kind photo needs the photos and models of a shared/ data directory (set SQUEEZE_SHARED to it)');
    const r = await buildPhotoBundle(cfg.out, { shared, seed: cfg.seed, onProgress: progress });
    const c = r.calibration;
    process.stdout.write(
      `squeeze: built ${r.version} in ${r.seconds.toFixed(1)} s under ${cfg.out} ` +
        `(cal split: clip_score AUC ${c.clipScore.auc.toFixed(3)}, enrich threshold ${c.enrich.threshold} at precision ${c.enrich.precision})\n`,
    );
    return 0;
  }
  const { buildBuiltinBundle } = await import('../builders/shapes/build');
  const r = await buildBuiltinBundle(cfg.out, { seed: cfg.seed, onProgress: progress });
  const m = r.metrics;
  process.stdout.write(
    `squeeze: built ${r.version} in ${r.seconds.toFixed(1)} s under ${cfg.out} ` +
      `(held-out top-1 ${m.heldOutTop1.toFixed(3)}, tag threshold ${m.tagThreshold}; ` +
      `node dist/src/builders/shapes/quality.js ${cfg.out} measures it)\n`,
  );
  return 0;
}
