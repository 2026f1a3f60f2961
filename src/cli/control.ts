/**
 * `squeeze control`: publish mixing weights or a model version on the control topic, as the trainer
 * does; running curators apply it between batches.
 */
import type { Config } from '../config/config';
import type { ControlEvent } from '../records';
import { publishControl } from '../streams/kafka/control';
import { connectAdmin, createKafka } from '../streams/kafka/kafka';
import { UserError } from './errors';

export function controlEventFrom(local: Record<string, string | boolean | undefined>, now = Date.now()): ControlEvent {
  if (typeof local.weights === 'string') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(local.weights);
    } catch {
      throw new UserError('--weights must be a JSON object of score name to weight, e.g. {"clip_score": 1.5}');
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed) || !Object.values(parsed).every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new UserError('--weights must be a JSON object of score name to a finite number');
    }
    const bias = local.bias === undefined ? 0 : Number(local.bias);
    if (!Number.isFinite(bias)) throw new UserError('--bias must be a number');
    return { kind: 'mix_weights', model_version: null, bundle_uri: null, weights: parsed as Record<string, number>, bias, published_at: now, publisher: 'squeeze control' };
  }
  if (typeof local['model-version'] === 'string') {
    return {
      kind: 'model_version',
      model_version: local['model-version'],
      bundle_uri: typeof local.bundle === 'string' ? local.bundle : null,
      weights: {},
      bias: null,
      published_at: now,
      publisher: 'squeeze control',
    };
  }
  throw new UserError('give --weights JSON [--bias B], or --model-version V [--bundle DIR]');
}

export async function controlCommand(cfg: Config, local: Record<string, string | boolean | undefined>): Promise<number> {
  if (cfg.brokers.length === 0) throw new UserError('--brokers is required');
  if (cfg.registry.startsWith('mock://')) throw new UserError('--registry URL is required (a real schema registry)');
  const event = controlEventFrom(local);
  const kafka = createKafka(cfg);
  await (await connectAdmin(kafka, cfg)).disconnect();
  await publishControl(kafka, cfg.registry, cfg.kafka.controlTopic, event);
  process.stdout.write(`squeeze: published ${event.kind} on ${cfg.kafka.controlTopic}\n`);
  return 0;
}
