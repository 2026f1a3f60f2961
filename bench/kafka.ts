/**
 * Kafka-mode benchmark on the local services: throughput on a backlog (curate --drain), then consumer
 * lag sampled every 2 s while events are produced at a steady rate below that throughput.
 */
import { createReadStream, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Kafka, logLevel } from 'kafkajs';
import { eventFromJsonLine, writeGenJsonl } from '../src/gen';
import { eventKey } from '../src/cli/produce';
import { avroCodec, openRegistry, toCrawlEvent } from '../src/streams/kafka/registry-codec';
import { committedEvents, runSqueeze, table, writeResult } from './lib';

const brokers = () => process.env.SQUEEZE_BROKERS!;
const registry = () => process.env.SQUEEZE_REGISTRY!;

async function lagOf(kafka: Kafka, topic: string, group: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const high = await admin.fetchTopicOffsets(topic);
    const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    const done = new Map(committed[0]?.partitions.map((p) => [p.partition, Math.max(0, Number(p.offset))]) ?? []);
    return high.reduce((a, h) => a + Number(h.high) - (done.get(h.partition) ?? 0), 0);
  } finally {
    await admin.disconnect();
  }
}

export async function benchKafka(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-kafka-'));
  const input = join(dir, 'crawl.jsonl');
  const n = Number(process.env.BENCH_EVENTS ?? 3000);
  await writeGenJsonl(input, { n, seed: 77 });
  const id = Date.now();
  const service = ['--brokers', brokers(), '--registry', registry(), '--progress', 'off'];
  const kafka = new Kafka({ clientId: 'bench', brokers: brokers().split(','), logLevel: logLevel.NOTHING });

  // 1. backlog
  const backlog = `bench.backlog.${id}`;
  const prod = await runSqueeze(['produce', ...service, '--topic', backlog, '--input', input]);
  if (prod.code !== 0) throw new Error(prod.stderr);
  const cur = await runSqueeze(['curate', ...service, '--models', process.env.BENCH_MODELS ?? 'builtin-shapes', '--topic', backlog, '--group', `bench-${id}`, '--out', join(dir, 'backlog'), '--drain', '--idle-ms', '1000']);
  if (cur.code !== 0) throw new Error(cur.stderr);
  const events = committedEvents(cur.stdout);
  const rate = events / cur.seconds;
  table('Kafka mode, backlog of generated events (curate --drain, 3 partitions)', [
    { events, produce_s: prod.seconds.toFixed(1), curate_s: cur.seconds.toFixed(1), events_per_s: rate.toFixed(0), peak_rss_mb: cur.peakRssMb },
  ]);

  // 2. steady rate: produce at about 60% of the backlog rate for a minute while curating
  const steady = `bench.steady.${id}`;
  const group = `bench-steady-${id}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic: steady, numPartitions: 3 }] });
  await admin.disconnect();
  const codec = await avroCodec(openRegistry(registry()), steady, 'crawl-event', toCrawlEvent);
  const producer = kafka.producer();
  await producer.connect();
  let curator: import('node:child_process').ChildProcess | null = null;
  const curating = runSqueeze(
    ['curate', ...service, '--models', process.env.BENCH_MODELS ?? 'builtin-shapes', '--topic', steady, '--group', group, '--out', join(dir, 'steady'), '--idle-ms', '1000', '--shard-rows', '200'],
    {},
    undefined,
    (c) => (curator = c),
  );
  const target = Math.max(5, Math.floor(rate * 0.6));
  const seconds = Number(process.env.BENCH_STEADY_SECONDS ?? 60);
  const lag: { t: number; lag: number }[] = [];
  const t0 = Date.now();
  let produced = 0;
  const lines = createInterface({ input: createReadStream(input) })[Symbol.asyncIterator]();
  const sampler = setInterval(() => {
    void lagOf(kafka, steady, group).then((l) => lag.push({ t: Math.round((Date.now() - t0) / 1000), lag: l })).catch(() => undefined);
  }, 2000);
  while (Date.now() - t0 < seconds * 1000) {
    const tick = Date.now();
    const messages = [];
    for (let i = 0; i < Math.ceil(target / 4); i++) {
      const next = await lines.next();
      if (next.done) break;
      const ev = eventFromJsonLine(next.value);
      const value = await codec.encode(ev);
      if (value.length < 900_000) messages.push({ key: eventKey(ev), value });
    }
    if (messages.length === 0) break;
    await producer.send({ topic: steady, messages });
    produced += messages.length;
    await new Promise((r) => setTimeout(r, Math.max(0, 250 - (Date.now() - tick))));
  }
  await producer.disconnect();
  // let it catch up, then stop the curator
  for (let i = 0; i < 60 && (await lagOf(kafka, steady, group)) > 0; i++) await new Promise((r) => setTimeout(r, 1000));
  clearInterval(sampler);
  const finalLag = await lagOf(kafka, steady, group);
  const during = lag.filter((s) => s.t <= seconds);
  const firstHalf = during.filter((s) => s.t <= seconds / 2).map((s) => s.lag);
  const secondHalf = during.filter((s) => s.t > seconds / 2).map((s) => s.lag);
  const max = (xs: number[]) => (xs.length ? Math.max(...xs) : 0);
  table(`Kafka mode, steady produce at ${target} events/s for ${seconds} s (lag = high watermark - committed offset)`, [
    { produced, produce_rate: (produced / seconds).toFixed(0), max_lag_first_half: max(firstHalf), max_lag_second_half: max(secondHalf), lag_after_catch_up: finalLag },
  ]);
  console.log(`-> ${writeResult('kafka', { backlog: { events, seconds: cur.seconds, eventsPerSecond: rate, peakRssMb: cur.peakRssMb }, steady: { target, produced, seconds, lag, finalLag } })}`);
  (curator as import('node:child_process').ChildProcess | null)?.kill('SIGTERM');
  const stopped = await curating;
  console.log(`curator stopped on SIGTERM with exit code ${stopped.code}, peak RSS ${stopped.peakRssMb} MB`);
}
