/** `squeeze build-model --out DIR [--seed S]`: trains and exports the built-in CLIP bundle (deterministic). */
import { existsSync, readdirSync } from 'node:fs';
import type { Config } from '../config/config';
import { buildBuiltinBundle } from '../models/clip/build';
import { UserError } from './errors';

export async function buildModelCommand(cfg: Config): Promise<number> {
  if (!cfg.out) throw new UserError('--out DIR is required (the shipped bundle lives in models/builtin)');
  if (existsSync(cfg.out) && readdirSync(cfg.out).some((f) => !['bundle.json', 'vision.onnx', 'text.onnx', 'words.json'].includes(f))) {
    throw new UserError(`--out ${cfg.out} holds files other than a bundle's; give an empty or new directory`);
  }
  const r = await buildBuiltinBundle(cfg.out, { seed: cfg.seed, onProgress: (msg) => process.stderr.write(`${msg}\n`) });
  const m = r.metrics;
  process.stdout.write(
    `squeeze: built ${r.version} in ${r.seconds.toFixed(1)} s under ${cfg.out} ` +
      `(held-out top-1 ${m.heldOutTop1.toFixed(3)}, tag threshold ${m.tagThreshold}; ` +
      `node dist/src/models/clip/quality.js ${cfg.out} measures it)\n`,
  );
  return 0;
}
