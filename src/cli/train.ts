/**
 * `squeeze train`: the trainer subscriber (src/train/trainer.ts, docs/TRAINER.md). It prints one JSON line
 * per evaluation, publication and mixing-weights fit (and a progress line every 10 steps), and with
 * --brokers announces published bundles and fitted weights on the control topic, where curators pick them up.
 */
import { resolve } from 'node:path';
import type { Config } from '../config/config';
import type { ControlEvent } from '../records';
import { UserError } from './errors';

function int(local: Record<string, string | boolean | undefined>, key: string, dflt: number, min = 0): number {
  const v = local[key];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UserError(`--${key} must be an integer >= ${min}, got "${v}"`);
  return n;
}

function num(local: Record<string, string | boolean | undefined>, key: string, dflt: number, lo: number, hi: number): number {
  const v = local[key];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < lo || n > hi) throw new UserError(`--${key} must be a number in [${lo}, ${hi}], got "${v}"`);
  return n;
}

export async function trainCommand(cfg: Config, local: Record<string, string | boolean | undefined>, signal?: AbortSignal): Promise<number> {
  if (typeof local.shards !== 'string') throw new UserError('--shards DIR is required: the curated output directory to train on');
  const { existsSync } = await import('node:fs');
  const { checkOutputUrl, isObjectStore } = await import('./output-dir');
  checkOutputUrl(local.shards, '--shards');
  let source: import('../train/follow').ShardSource | undefined;
  if (isObjectStore(local.shards)) {
    const { openShardStore } = await import('../streams/shards/shard-store');
    const { storeSource } = await import('../train/follow');
    source = storeSource(await openShardStore(local.shards, { readOnly: true }));
  } else if (!existsSync(local.shards)) throw new UserError(`--shards ${local.shards}: no such directory`);
  const { lastStepTrace, runTrainer, TRAINER_DEFAULTS } = await import('../train/trainer');
  const { bundleDir } = await import('../curate/models');
  const base = typeof local.base === 'string' ? local.base : 'builtin-shapes';
  const bundle = bundleDir(base);
  if (!bundle) throw new UserError('--base none: the trainer needs a bundle to continue');
  const checkpoints = resolve(typeof local.checkpoints === 'string' ? local.checkpoints : 'squeeze-trainer');
  const publishDir = resolve(typeof local['publish-dir'] === 'string' ? local['publish-dir'] : `${checkpoints}/bundles`);
  const json = cfg.progress === 'json' || (cfg.progress === 'auto' && !process.stdout.isTTY);
  const say = (o: Record<string, unknown>) => process.stdout.write((json ? JSON.stringify(o) : Object.entries(o).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ')) + '\n');

  let announce: ((e: ControlEvent) => Promise<void>) | null = null;
  if (cfg.brokers.length > 0) {
    if (cfg.registry.startsWith('mock://')) throw new UserError('--registry URL is required with --brokers (a real schema registry)');
    const { connectAdmin, createKafka } = await import('../streams/kafka/kafka');
    const { publishControl } = await import('../streams/kafka/control');
    const kafka = createKafka(cfg);
    await (await connectAdmin(kafka, cfg)).disconnect();
    // a control event carries the trace context of the step that produced it (docs/TRACING.md)
    announce = (e) => publishControl(kafka, cfg.registry, cfg.kafka.controlTopic, e, lastStepTrace());
  }
  const { BundleError } = await import('../train/builtin-model');
  const { recordTrainer } = await import('../telemetry/telemetry');
  let summary;
  let tokens = 0;
  try {
    summary = await runTrainer({
      ...TRAINER_DEFAULTS,
      from: source ? local.shards : resolve(local.shards),
      source,
      checkpoints,
      bundle,
      publishDir,
      seed: cfg.seed,
      batch: int(local, 'train-batch', TRAINER_DEFAULTS.batch, 2),
      lr: num(local, 'lr', TRAINER_DEFAULTS.lr, 0, 1),
      replayShare: num(local, 'replay-share', TRAINER_DEFAULTS.replayShare, 0, 0.9),
      replayCapacity: int(local, 'replay-capacity', TRAINER_DEFAULTS.replayCapacity, 1),
      checkpointEvery: int(local, 'checkpoint-every', TRAINER_DEFAULTS.checkpointEvery, 1),
      evalEvery: int(local, 'eval-every', TRAINER_DEFAULTS.evalEvery),
      heldOut: int(local, 'held-out', TRAINER_DEFAULTS.heldOut, 8),
      publishEvery: int(local, 'publish-every', TRAINER_DEFAULTS.publishEvery),
      feedbackEvery: int(local, 'feedback-every', TRAINER_DEFAULTS.feedbackEvery),
      until: local.until === undefined ? null : int(local, 'until', 0, 1),
      follow: local.follow === true,
      passes: int(local, 'passes', 1, 1),
      pollMs: int(local, 'poll-ms', TRAINER_DEFAULTS.pollMs, 10),
      flip: local['no-flip'] !== true,
      fullEvery: int(local, 'full-every', TRAINER_DEFAULTS.fullEvery),
      signal,
      log: (line) => process.stderr.write(`squeeze train: ${line}\n`),
      onStep: (s) => {
        recordTrainer('step', s.step);
        recordTrainer('loss', s.loss);
        tokens += s.tokens;
        recordTrainer('image_tokens', tokens);
        if (s.step % 10 === 0) say({ event: 'step', step: s.step, loss: Math.round(s.loss * 1e4) / 1e4, top1: Math.round(s.top1 * 1e3) / 1e3, tokens: s.tokens, fresh: s.fresh, replayed: s.replayed });
      },
      onEval: (r) => {
        for (const [dir, k, v] of [['i2t', '1', r.i2t_r1], ['i2t', '5', r.i2t_r5], ['t2i', '1', r.t2i_r1], ['t2i', '5', r.t2i_r5]] as const) recordTrainer('recall', v, { direction: dir, k });
        recordTrainer('zero_shot', r.zero_shot);
        say({ event: 'eval', ...r });
      },
      onPublish: async (p) => {
        recordTrainer('published_step', p.step, { version: p.version });
        say({ event: 'published', step: p.step, version: p.version, dir: p.dir });
        await announce?.({ kind: 'model_version', model_version: p.version, bundle_uri: p.dir, weights: {}, bias: null, published_at: Date.now(), publisher: 'squeeze train' });
      },
      onMixWeights: async (w) => {
        say({ event: 'mix_weights', step: w.step, weights: w.weights, correlation: w.correlation });
        await announce?.({ kind: 'mix_weights', model_version: null, bundle_uri: null, weights: w.weights, bias: w.bias, published_at: Date.now(), publisher: 'squeeze train' });
      },
    });
  } catch (e) {
    if (e instanceof BundleError) throw new UserError(e.message);
    throw e;
  }
  say({ event: 'done', step: summary.step, steps: summary.steps, stopped: summary.stopped, samples: summary.state.samples, image_tokens: summary.state.tokens, checkpoints });
  return 0;
}
