/**
 * Kafka mode: consume the input topic in a consumer group, curate, and after each commit record
 * publish the manifest and the dead letters, then commit `end + 1` to the group (docs/ARCHITECTURE.md, The commit protocol).
 * Replay uses the same edge with a fresh group, explicit start offsets and an end per partition.
 */
import type { Config } from '../config/config';
import type { DeadLetter } from '../records';
import {
  commitOffset,
  connectAdmin,
  createKafka,
  ensureTopics,
  highWatermarks,
  kafkaCall,
  PartitionedConsumer,
  sendChunked,
  type Consumer,
  type Producer,
} from '../streams/kafka/kafka';
import { openCodecs, openRegistry, type Codecs } from '../streams/kafka/registry-codec';
import { openShardStore } from '../streams/shards/shard-store';
import type { ShardStore } from '../streams/shards/store';
import type { CommitResult } from '../streams/shards/shard-sink';
import { Curator } from './curator';
import type { Rejection } from '../operators/sample';
import { makeFetcher } from './run-files';
import { loadBundle } from '../models/bundle';
import type { ControlEvent } from '../records';
import { followControl } from '../streams/kafka/control';
import type { BundleHolder } from './bundle-holder';
import type { MixWeightsStore } from './mix-weights';
import { modelNotice, openModels, openWeights } from './models';
import { sleep } from '../util/sleep';
import { retryLogger, retryTransient, TransientError } from '../util/retry';
import { instruments } from '../telemetry/telemetry';
import { SpanKind, trace } from '@opentelemetry/api';
import { eventTracingOn, parentFromHeaders } from '../telemetry/event-trace';

export interface KafkaRunOptions {
  /** replay: first offset per partition (overrides commit records of an empty --out) */
  startOffsets?: Map<number, number>;
  /** replay: stop before these offsets */
  endOffsets?: Map<number, number>;
  /** replay: use this group id and never commit offsets */
  replayGroup?: string;
  /** restore operator state from the commit records of this earlier output */
  stateFrom?: string;
  onProgress?: (curator: Curator, lag: number | null) => void;
  signal?: AbortSignal;
}

export const dlqTopic = (cfg: Config): string => `${cfg.topic}.dlq`;
export const manifestTopic = (cfg: Config): string => cfg.kafka.manifestTopic ?? `${cfg.topic}.manifest`;

export async function curateKafka(cfg: Config, opts: KafkaRunOptions = {}): Promise<Curator> {
  // the output first: a missing bucket or wrong credentials is a one-line error before Kafka is touched
  const store = await openShardStore(cfg.out!);
  const stateSource = opts.stateFrom ? await openShardStore(opts.stateFrom, { readOnly: true }) : null;
  const kafka = createKafka(cfg);
  const replay = opts.replayGroup !== undefined;
  // replay has announced the connection already
  const admin = await connectAdmin(kafka, cfg, { quiet: replay });
  await ensureTopics(admin, [
    { topic: cfg.topic, partitions: cfg.kafka.partitions },
    { topic: dlqTopic(cfg), partitions: cfg.kafka.partitions },
    { topic: manifestTopic(cfg), partitions: 1 },
  ]);
  const codecs = await openCodecs(openRegistry(cfg.registry), {
    events: cfg.topic,
    manifests: manifestTopic(cfg),
    deadLetters: dlqTopic(cfg),
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const consumer = kafka.consumer({
    groupId: opts.replayGroup ?? cfg.group,
    sessionTimeout: cfg.kafka.sessionTimeoutMs,
    heartbeatInterval: Math.max(1000, Math.floor(cfg.kafka.sessionTimeoutMs / 10)),
    maxBytesPerPartition: 8 * 1024 * 1024,
    maxBytes: 32 * 1024 * 1024,
    allowAutoTopicCreation: false,
  });
  await consumer.connect();
  // kafkajs restarts its consumer after a retriable crash (brokers away); any other crash stops it for good
  let crashed: Error | null = null;
  consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart) crashed = e.payload.error;
  });

  const bundle = await openModels(cfg);
  const notice = modelNotice(cfg, bundle);
  if (notice) process.stderr.write(`${notice}\n`);
  const weights = openWeights(cfg, bundle);
  const control = await followControl(kafka, cfg.registry, cfg.kafka.controlTopic, (e, headers) => {
    traceControl(e, headers, cfg.kafka.controlTopic);
    applyControl(e, weights, bundle, cfg);
  });
  await control.caughtUp;

  let edge: PartitionedConsumer | null = null;
  let lag: number | null = null;
  // lag: each partition's first offset not yet in a commit record, against the broker's high watermarks.
  // Partitions this process holds are known from its own commits; the others (other members of the
  // group) are read from their commit records now and then.
  const committed = new Map<number, number>();
  const held = new Set<number>();
  // partitions this process has recovered: --drain waits for its first assignment, so a member whose
  // group still holds a dead member's temporaries recovers (and cleans) its partitions before it exits
  let recoveredPartitions = 0;
  const started = Date.now();
  // Transient failures (docs/FORMATS.md): a record whose schema the registry cannot give now waits, retried
  // with backoff for as long as the registry is away, and holds its batch; it is never a dead letter. Sending
  // manifests and dead letters and committing rides out unreachable brokers for kafka.retryForMs.
  const say = retryLogger();
  const retrying = (call: string) => (e: TransientError, attempt: number, waitMs: number): void => {
    instruments().retries.add(1, { service: e.service, call });
    say(call, `squeeze: ${e.message}; ${call}: attempt ${attempt} failed, retrying in ${(waitMs / 1000).toFixed(1)} s`);
  };
  const decode = (bytes: Buffer) => retryTransient(() => codecs.events.decode(bytes), { what: 'decoding records', signal: opts.signal, onRetry: retrying('decoding records') });
  const curator: Curator = new Curator(cfg, {
    decode,
    fetch: makeFetcher(cfg),
    bundle,
    weights,
    store,
    onCommit: (r) => {
      committed.set(r.record.partition, Math.max(committed.get(r.record.partition) ?? 0, r.record.end_offset + 1));
      return retryTransient(() => afterCommit(r, { producer, consumer, codecs, cfg, commit: !replay }), {
        what: 'publishing a commit',
        signal: opts.signal,
        deadlineMs: cfg.kafka.retryForMs,
        onRetry: retrying(`publishing the commit of ${r.record.topic}[${r.record.partition}]`),
      });
    },
    onFenced: (topic, partition) => void edge?.reset(topic, partition),
  });
  // a line after each commit as well as every second, so progress never lags the commit records
  curator.stats.onCommitted = () => opts.onProgress?.(curator, lag);
  edge = new PartitionedConsumer(consumer, cfg.topic, {
    assign: async (topic, partition) => {
      const recovered = await curator.assign(topic, partition);
      recoveredPartitions++;
      held.add(partition);
      committed.set(partition, recovered ?? opts.startOffsets?.get(partition) ?? 0);
      if (recovered !== null) return recovered;
      if (stateSource) await restoreFrom(curator, stateSource, topic, partition, opts.startOffsets?.get(partition) ?? 0);
      return opts.startOffsets?.get(partition) ?? null;
    },
    revoke: (topic, partition) => {
      held.delete(partition);
      return curator.revoke(topic, partition);
    },
    records: (topic, partition, records) =>
      curator.push(
        topic,
        partition,
        records.map((r) => ({ coord: { topic, partition, offset: r.offset }, value: r.value, headers: r.headers, rejected: oversized(r.value, cfg.limits.maxRecordBytes) })),
      ),
    backlogged: () => curator.backlogged,
    endOffset: (_t, partition) => opts.endOffsets?.get(partition) ?? null,
  });

  const shutdown = async (): Promise<void> => {
    await control.stop().catch(() => undefined);
    await consumer.disconnect().catch(() => undefined);
    await curator.flush().catch(() => undefined);
    await curator.close().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await bundle?.close().catch(() => undefined);
  };

  await edge.start(cfg.kafka.fromBeginning);
  let lagAt = 0;
  try {
    for (;;) {
      const done = await Promise.race([
        curator.finished.then(() => 'finished' as const),
        sleep(1000, opts.signal).then(() => 'tick' as const),
      ]);
      if (done === 'finished' || opts.signal?.aborted) break;
      if (crashed) throw new Error(`the Kafka consumer stopped: ${(crashed as Error).message.split('\n')[0]}`);
      const high = await retryTransient(() => kafkaCall(() => highWatermarks(admin, cfg.topic)), {
        what: 'reading the end of each partition',
        signal: opts.signal,
        deadlineMs: cfg.kafka.retryForMs,
        onRetry: retrying('reading the end of each partition'),
      }).catch((e) => {
        if (opts.signal?.aborted) return null;
        throw new Error(`Kafka was unreachable for longer than kafka.retryForMs (${cfg.kafka.retryForMs} ms): ${(e as Error).message}`);
      });
      if (!high) break;
      const ends = opts.endOffsets ?? high;
      // partitions held elsewhere: their commit records, every 5 s (on an object store a look is a LIST request)
      if (Date.now() - lagAt >= 5000) {
        await readCommitted(store, cfg.topic, [...ends.keys()].filter((p) => !held.has(p)), committed, opts.startOffsets);
        lagAt = Date.now();
      }
      lag = [...ends].reduce((sum, [partition, end]) => sum + Math.max(0, end - (committed.get(partition) ?? opts.startOffsets?.get(partition) ?? 0)), 0);
      opts.onProgress?.(curator, lag);
      // (a member the group gives no partition still stops, after 30 s)
      if ((cfg.drain || replay) && lag === 0 && (recoveredPartitions > 0 || Date.now() - started > 30_000)) break;
    }
  } finally {
    await shutdown();
  }
  return curator;
}

/** A traced control event (a trainer step's) gets a `process <control topic>` span in the step's trace. */
function traceControl(e: ControlEvent, headers: Record<string, string>, topic: string): void {
  if (!eventTracingOn() || !headers.traceparent) return;
  const span = trace.getTracer('squeeze').startSpan(`process ${topic}`, {
    kind: SpanKind.CONSUMER,
    attributes: { 'messaging.system': 'kafka', 'messaging.operation.type': 'process', 'messaging.destination.name': topic, 'squeeze.control.kind': e.kind, 'squeeze.model_version': e.model_version ?? '' },
  }, parentFromHeaders(headers));
  span.end();
}

/**
 * Applies a control event: new mixing weights take effect from the next batch; a new model version
 * with a bundle directory is loaded in the background and swapped in between batches.
 */
function applyControl(e: ControlEvent, weights: MixWeightsStore, bundle: BundleHolder | null, cfg: Config): void {
  if (e.kind === 'mix_weights') {
    if (weights.apply(e)) process.stderr.write(`squeeze: mixing weights ${weights.current().version} from the control topic\n`);
    return;
  }
  if (!bundle || !e.bundle_uri || e.model_version === bundle.version) return;
  loadBundle(e.bundle_uri, { threads: cfg.threads, offThread: cfg.inference === 'worker' })
    .then((next) => bundle.swap(next))
    .then(() => process.stderr.write(`squeeze: model bundle ${bundle.version} from the control topic\n`))
    .catch((err: Error) => process.stderr.write(`squeeze: could not load announced bundle ${e.bundle_uri}: ${err.message.split('\n')[0]}\n`));
}

/** A Kafka value over limits.maxRecordBytes is a `record_too_large` dead letter before anything decodes it. */
function oversized(value: Buffer | null, max: number): Rejection | null {
  if (!value || value.length <= max) return null;
  return { reason: 'record_too_large', message: `record is ${value.length} bytes, over limits.maxRecordBytes (${max})` };
}

/** Each partition's first offset not yet in a commit record, read from the store into `into`. */
async function readCommitted(store: ShardStore, topic: string, partitions: number[], into: Map<number, number>, starts?: Map<number, number>): Promise<void> {
  for (const partition of partitions) {
    const commits = await store.readCommits(topic, partition);
    into.set(partition, commits.length ? commits[commits.length - 1].end_offset + 1 : (starts?.get(partition) ?? 0));
  }
}

async function restoreFrom(curator: Curator, source: ShardStore, topic: string, partition: number, start: number): Promise<void> {
  const commits = await source.readCommits(topic, partition);
  const before = commits.filter((c) => c.end_offset < start).pop();
  if (before) await curator.restoreState(topic, partition, source, before);
}

interface AfterCommit {
  producer: Producer;
  consumer: Consumer;
  codecs: Codecs;
  cfg: Config;
  commit: boolean;
}

/** dead letters carry their event's trace context, manifests their commit span's */
const traceHeader = (tp: string | undefined): { headers?: Record<string, string> } => (tp ? { headers: { traceparent: tp } } : {});

async function afterCommit(r: CommitResult, a: AfterCommit): Promise<void> {
  const { record } = r;
  if (r.deadLetters.length > 0) {
    const messages = await Promise.all(
      r.deadLetters.map(async (d: DeadLetter) => ({
        key: `${d.source_topic}/${d.source_partition}/${d.source_offset}`,
        value: await a.codecs.deadLetters.encode(d),
        partition: d.source_partition % a.cfg.kafka.partitions,
        ...traceHeader(record.traces?.[String(d.source_offset)]),
      })),
    );
    await kafkaCall(() => sendChunked(a.producer, dlqTopic(a.cfg), messages, a.cfg.kafka.maxMessageBytes));
  }
  if (r.manifest) {
    const value = await a.codecs.manifests.encode(r.manifest);
    await kafkaCall(() => sendChunked(a.producer, manifestTopic(a.cfg), [{ key: r.manifest!.shard_uri, value, ...traceHeader(record.traceparent) }], a.cfg.kafka.maxMessageBytes));
  }
  if (a.commit) await commitOffset(a.consumer, record.topic, record.partition, record.end_offset + 1);
}

