/**
 * One trace per event, from the crawler's produce to the trainer's step, in a real Jaeger (started by
 * deploy/services.sh): `squeeze produce`, `squeeze curate` and `squeeze train` export over OTLP/HTTP,
 * and the test reads the traces back through Jaeger's query API.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeGenJsonl } from '../../src/gen';
import { readCommits } from '../../src/streams/shards/shard-log';
import { squeeze } from '../helpers/cli';
import { BROKERS, createTopic, kafka, readTopic, REGISTRY, servicesAvailable } from '../helpers/kafka';

const OTLP = process.env.SQUEEZE_JAEGER_OTLP ?? '';
const QUERY = process.env.SQUEEZE_JAEGER_QUERY ?? '';
const skip = !servicesAvailable()
  ? 'skipped: SQUEEZE_BROKERS/SQUEEZE_REGISTRY not set (run through npm test, which starts deploy/services.sh)'
  : !OTLP || !QUERY
    ? 'skipped: Jaeger not running (deploy/services.sh builds it when Go 1.24+ is installed)'
    : false;

interface JTag { key: string; value: unknown }
interface JRef { refType: 'CHILD_OF' | 'FOLLOWS_FROM'; traceID: string; spanID: string }
interface JSpan { traceID: string; spanID: string; operationName: string; references: JRef[]; tags: JTag[]; processID: string }
interface JTrace { traceID: string; spans: JSpan[]; processes: Record<string, { serviceName: string }> }

async function jaeger<T>(path: string): Promise<T> {
  const res = await fetch(`${QUERY}${path}`);
  assert.equal(res.status, 200, `${path}: HTTP ${res.status}`);
  return ((await res.json()) as { data: T }).data;
}

/** polls until Jaeger has traces of `service` with a span named `operation` */
async function tracesOf(service: string, operation: string, want = 1): Promise<JTrace[]> {
  const until = Date.now() + 30_000;
  for (;;) {
    const data = await jaeger<JTrace[] | null>(`/api/traces?service=${encodeURIComponent(service)}&operation=${encodeURIComponent(operation)}&limit=1000&lookback=1h`);
    if (data && data.length >= want) return data;
    if (Date.now() > until) throw new Error(`Jaeger has ${data?.length ?? 0} traces of ${service}/${operation}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

const tag = (s: JSpan, k: string): unknown => s.tags.find((t) => t.key === k)?.value;
const parentOf = (s: JSpan): string | undefined => s.references.find((r) => r.refType === 'CHILD_OF')?.spanID;
const linksOf = (s: JSpan): JRef[] => s.references.filter((r) => r.refType === 'FOLLOWS_FROM');

test('a sampled event has one trace from produce through each curation stage and the commit to the trainer step', { skip, timeout: 600_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'tracing-it-'));
  const run = `${process.pid}-${Date.now()}`;
  const topic = `it.tracing.${run}`;
  const service = ['--brokers', BROKERS, '--registry', REGISTRY];
  const otel = (name: string) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: OTLP, OTEL_SERVICE_NAME: name });
  await writeGenJsonl(join(work, 'crawl.jsonl'), { n: 80, seed: 91, badRate: 0.1 });
  await createTopic(topic, 1);

  const produced = await squeeze(['produce', ...service, '--topic', topic, '--input', join(work, 'crawl.jsonl'), '--progress', 'off', '--traces', 'otlp', '--trace-ratio', '1'], { env: otel(`crawler-${run}`) });
  assert.equal(produced.code, 0, produced.stderr);
  const published = Number(/published (\d+) events/.exec(produced.stdout)?.[1]);
  assert.ok(published > 40, produced.stdout);
  // one more record with a malformed traceparent: it is curated as a new trace, never held back
  const first = (await readTopic(topic))[0]!;
  const p = kafka().producer();
  await p.connect();
  await p.send({ topic, messages: [{ value: first.value, headers: { traceparent: '00-not-a-trace-context-zz' } }] });
  await p.disconnect();

  const out = join(work, 'out');
  const curated = await squeeze(
    ['curate', ...service, '--models', 'builtin-shapes', '--topic', topic, '--group', `g-${run}`, '--out', out, '--drain', '--progress', 'off',
      '--idle-ms', '1000', '--shard-rows', '30', '--traces', 'otlp', '--trace-ratio', '0'],
    { env: otel(`squeeze-${run}`) },
  );
  assert.equal(curated.code, 0, curated.stderr);
  const commits = await readCommits(out, topic, 0);
  const last = commits[commits.length - 1]!;
  assert.equal(last.end_offset, published, 'the record with the malformed traceparent was committed');
  // produce sampled every event (ratio 1), and curate follows the producer's decision (its own ratio is 0)
  const traced = commits.reduce((a, c) => a + Object.keys(c.traces ?? {}).length, 0);
  assert.equal(traced, published, 'every produced event is traced in the commit records; the malformed one is not');
  assert.ok(commits.some((c) => c.traceparent), 'commit records carry their commit span');

  const trained = await squeeze(
    ['train', '--shards', out, '--checkpoints', join(work, 'trainer'), '--until', '2', '--train-batch', '8', '--replay-share', '0', '--eval-every', '0', '--progress', 'off', '--traces', 'otlp'],
    { env: otel(`trainer-${run}`) },
  );
  assert.equal(trained.code, 0, trained.stderr);

  // the trainer's per-event spans lead to the events it trained on
  const used = await tracesOf(`trainer-${run}`, 'squeeze.train', 8);
  const trace = await jaeger<JTrace[]>(`/api/traces/${used[0]!.traceID}`).then((d) => d[0]!);
  const service_ = (s: JSpan) => trace.processes[s.processID]!.serviceName;
  const named = (n: string) => trace.spans.filter((s) => s.operationName === n);
  const send = named(`send ${topic}`);
  assert.equal(send.length, 1, `one producer span (got ${trace.spans.map((s) => s.operationName).join(', ')})`);
  assert.equal(service_(send[0]!), `crawler-${run}`);
  assert.equal(tag(send[0]!, 'messaging.system'), 'kafka');
  const processSpan = named(`process ${topic}`)[0]!;
  assert.ok(processSpan, 'a process span');
  assert.equal(parentOf(processSpan), send[0]!.spanID, 'process is a child of the producer span');
  assert.equal(service_(processSpan), `squeeze-${run}`);
  assert.equal(tag(processSpan, 'messaging.destination.name'), topic);
  assert.equal(typeof tag(processSpan, 'messaging.kafka.offset'), 'number');
  assert.equal(tag(processSpan, 'squeeze.decision'), 'keep');
  for (const stage of ['squeeze.decode_event', 'squeeze.validate_event', 'squeeze.decode_image', 'squeeze.embed', 'squeeze.dedup_exact', 'squeeze.soft_cap', 'squeeze.commit']) {
    const s = named(stage);
    assert.equal(s.length, 1, `one ${stage} span in the event's trace`);
    assert.equal(parentOf(s[0]!), processSpan.spanID, `${stage} is a child of process`);
  }
  assert.match(String(tag(named('squeeze.commit')[0]!, 'squeeze.shard')), /\.parquet$/);
  const use = named('squeeze.train')[0]!;
  assert.equal(parentOf(use), processSpan.spanID, 'the trainer\'s span is a child of the event\'s process span');
  assert.equal(service_(use), `trainer-${run}`);
  // ... and links to the step span, which links back to every traced event of its batch
  const stepRef = linksOf(use)[0];
  assert.ok(stepRef, 'the trainer span links to its step');
  const step = await jaeger<JTrace[]>(`/api/traces/${stepRef.traceID}`).then((d) => d[0]!.spans.find((s) => s.spanID === stepRef.spanID)!);
  assert.equal(step.operationName, 'train step');
  assert.equal(tag(step, 'squeeze.train.step'), tag(use, 'squeeze.train.step'));
  assert.ok(linksOf(step).some((l) => l.traceID === trace.traceID && l.spanID === processSpan.spanID), 'the step links to the event');
  // the stage batch spans link to the event too
  const embedBatches = await tracesOf(`squeeze-${run}`, 'squeeze.embed');
  const linked = embedBatches.flatMap((t) => t.spans).filter((s) => s.operationName === 'squeeze.embed' && linksOf(s).some((l) => l.spanID === processSpan.spanID));
  assert.equal(linked.length, 1, 'exactly one embed batch span links to the event');

  // a dead letter's trace says which stage killed it and why
  const processes = await tracesOf(`squeeze-${run}`, `process ${topic}`, published);
  const all = processes.flatMap((t) => t.spans);
  const dead = all.filter((s) => s.operationName === `process ${topic}` && tag(s, 'squeeze.decision') === 'dead');
  assert.ok(dead.length > 0, 'the crawl has dead letters');
  const deadTrace = await jaeger<JTrace[]>(`/api/traces/${dead[0]!.traceID}`).then((d) => d[0]!);
  const killer = deadTrace.spans.filter((s) => parentOf(s) === dead[0]!.spanID && s.operationName !== 'squeeze.commit' && tag(s, 'squeeze.decision') === 'dead');
  assert.equal(killer.length, 1, 'one stage span holds the dead decision');
  assert.equal(tag(killer[0]!, 'squeeze.reason'), tag(dead[0]!, 'squeeze.reason'));
});
