/** `squeeze replay`: re-curate a time or offset range of a topic into a new output directory. */
import type { Config } from '../config/config';
import { curateKafka } from '../curate/run-kafka';
import { connectAdmin, createKafka, highWatermarks, offsetsAtTime } from '../streams/kafka/kafka';
import { UserError } from './errors';
import { checkOutputUrl, isEmptyOutput, isObjectStore } from './output-dir';
import { openShardStore } from '../streams/shards/shard-store';
import { printSummary, progressReporter } from './progress';

/** Parses `--from`/`--to`: an ISO time or epoch ms (a time), a bare offset, or p:o,p:o pairs. */
export function parseBound(text: string): { time: number } | { offset: number } | { offsets: Map<number, number> } {
  if (/^\d+:\d+(,\d+:\d+)*$/.test(text)) {
    return { offsets: new Map(text.split(',').map((pair) => pair.split(':').map(Number) as [number, number])) };
  }
  if (/^\d{1,12}$/.test(text)) return { offset: Number(text) };
  if (/^\d{13}$/.test(text)) return { time: Number(text) };
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new UserError(`cannot read "${text}" as a time, an offset or p:o pairs`);
  return { time: t };
}

export async function replayRange(cfg: Config, local: Record<string, string | boolean | undefined>): Promise<number> {
  if (cfg.brokers.length === 0) throw new UserError('--brokers is required');
  if (!cfg.out) throw new UserError('--out DIR is required');
  checkOutputUrl(cfg.out);
  if (isObjectStore(cfg.out)) {
    const store = await openShardStore(cfg.out);
    if (!(await store.isEmpty())) throw new UserError(`replay writes into a new output; ${cfg.out} already holds commit records`);
  } else if (!isEmptyOutput(cfg.out)) throw new UserError(`replay writes into a new output directory; ${cfg.out} is not empty`);
  if (typeof local['state-from'] === 'string') checkOutputUrl(local['state-from'], '--state-from');
  if (typeof local.from !== 'string') throw new UserError('--from TIME|OFFSETS is required');
  const kafka = createKafka(cfg);
  const admin = await connectAdmin(kafka, cfg);
  const high = await highWatermarks(admin, cfg.topic);
  const resolveBound = async (text: string, fallback: number): Promise<Map<number, number>> => {
    const b = parseBound(text);
    if ('time' in b) return offsetsAtTime(admin, cfg.topic, b.time);
    if ('offset' in b) return new Map([...high.keys()].map((p) => [p, b.offset]));
    return new Map([...high.keys()].map((p) => [p, b.offsets.get(p) ?? fallback]));
  };
  const starts = await resolveBound(local.from, 0);
  const ends = typeof local.to === 'string' ? await resolveBound(local.to, Number.MAX_SAFE_INTEGER) : new Map(high);
  for (const [p, e] of ends) ends.set(p, Math.min(e, high.get(p) ?? e));
  await admin.disconnect();
  const curator = await curateKafka(
    { ...cfg, drain: true },
    {
      startOffsets: starts,
      endOffsets: ends,
      replayGroup: `squeeze-replay-${process.pid}-${Date.now()}`,
      stateFrom: typeof local['state-from'] === 'string' ? local['state-from'] : undefined,
      onProgress: progressReporter(cfg),
    },
  );
  printSummary(cfg, curator);
  return 0;
}
