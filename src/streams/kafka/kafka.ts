/**
 * The kafkajs adapter. Only this folder (streams/kafka) imports kafkajs and the schema-registry client
 * (kafkajs is in maintenance mode; keep it swappable). `createKafka` still hands out the kafkajs client, on
 * which curate/run-kafka.ts and cli/produce.ts create producers and consumers with kafkajs options
 * (docs/ARCHITECTURE.md, Known debts); the CLI commands hold kafkajs Admin objects from connectAdmin.
 * Consumer side reads as eachBatch -> hand records to the curator -> resolve; offsets are committed
 * only after a shard's commit record exists (autoCommit off). Partition assignment is noticed on the
 * first batch of a partition (recover, then seek to the committed position); revocation on GROUP_JOIN.
 */
import { Kafka, logLevel, type Admin, type Consumer, type KafkaConfig, type Producer, type SASLOptions } from 'kafkajs';
import type { Config } from '../../config/config';
import { asTransient } from '../../util/retry';
import { checkServices, withDeadline } from './reach';

export interface KafkaRecord {
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
  timestamp: number;
  headers: Record<string, string>;
}

export function createKafka(cfg: Config): Kafka {
  if (cfg.brokers.length === 0) throw new Error('no brokers configured (--brokers host:port)');
  const k = cfg.kafka;
  let sasl: SASLOptions | undefined;
  if (k.saslMechanism) {
    if (!k.saslUsername || !k.saslPassword) throw new Error('SASL needs a username and a password (SQUEEZE_SASL_USERNAME / SQUEEZE_SASL_PASSWORD)');
    sasl = { mechanism: k.saslMechanism, username: k.saslUsername, password: k.saslPassword } as SASLOptions;
  }
  const conf: KafkaConfig = {
    clientId: k.clientId,
    brokers: cfg.brokers,
    ssl: k.ssl,
    sasl,
    connectionTimeout: Math.min(5000, cfg.connectTimeoutMs),
    logLevel: cfg.verbose ? logLevel.INFO : logLevel.NOTHING,
    retry: { retries: 8, initialRetryTime: 200 },
  };
  return new Kafka(conf);
}

/**
 * Says where it connects, probes the brokers (and the registry, unless `registry` is null) and
 * connects an admin client, each under `connectTimeoutMs`: a one-line ConnectError instead of
 * kafkajs's retries in silence.
 */
export async function connectAdmin(kafka: Kafka, cfg: Config, opts: { quiet?: boolean } = {}): Promise<Admin> {
  await checkServices({ brokers: cfg.brokers, registry: cfg.registry, timeoutMs: cfg.connectTimeoutMs, log: opts.quiet ? () => undefined : undefined });
  const admin = kafka.admin();
  await withDeadline(
    admin.connect(),
    cfg.connectTimeoutMs,
    (within) => `Kafka at ${cfg.brokers.join(',')} did not answer as a Kafka broker ${within} (it accepts connections: check the address and the broker's advertised.listeners)`,
    () => void admin.disconnect().catch(() => undefined),
  );
  return admin;
}

export interface TopicSpec {
  topic: string;
  partitions: number;
  compacted?: boolean;
}

/** Creates missing topics, before anything subscribes to or publishes on them (auto-creation is off). */
export async function ensureTopics(admin: Admin, specs: TopicSpec[]): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((s) => !existing.has(s.topic));
  if (missing.length === 0) return;
  await admin.createTopics({
    waitForLeaders: true,
    topics: missing.map((s) => ({
      topic: s.topic,
      numPartitions: s.partitions,
      replicationFactor: 1,
      configEntries: s.compacted ? [{ name: 'cleanup.policy', value: 'compact' }] : [],
    })),
  });
}

export async function highWatermarks(admin: Admin, topic: string): Promise<Map<number, number>> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return new Map(offsets.map((o) => [o.partition, Number(o.high)]));
}

export async function offsetsAtTime(admin: Admin, topic: string, time: number): Promise<Map<number, number>> {
  const offsets = await admin.fetchTopicOffsetsByTimestamp(topic, time);
  return new Map(offsets.map((o) => [o.partition, Number(o.offset)]));
}

export interface PartitionHandlers {
  /** recover a newly seen partition; the first offset to read, or null to read from wherever Kafka starts */
  assign(topic: string, partition: number): Promise<number | null>;
  revoke(topic: string, partition: number): Promise<void>;
  /** hand over records in offset order; resolves when they were taken (backpressure) */
  records(topic: string, partition: number, records: KafkaRecord[]): Promise<void>;
  /** true while the downstream is full: the consumer pauses fetching until it clears */
  backlogged(): boolean;
  /** records at or past this offset are ignored (replay ranges) */
  endOffset?(topic: string, partition: number): number | null;
}

export class PartitionedConsumer {
  private readonly positions = new Map<string, number>();
  private paused = false;
  constructor(private readonly consumer: Consumer, private readonly topic: string, private readonly h: PartitionHandlers) {}

  /** Forget a partition's position so the next batch recovers and seeks again (after a fence). */
  async reset(topic: string, partition: number): Promise<void> {
    this.positions.delete(`${topic}:${partition}`);
    await this.h.revoke(topic, partition);
  }

  assigned(): string[] {
    return [...this.positions.keys()];
  }

  async start(fromBeginning: boolean): Promise<void> {
    const c = this.consumer;
    c.on(c.events.GROUP_JOIN, (e) => {
      const now = new Set((e.payload.memberAssignment[this.topic] ?? []).map((p) => `${this.topic}:${p}`));
      for (const key of [...this.positions.keys()]) {
        if (now.has(key)) continue;
        this.positions.delete(key);
        const p = Number(key.slice(key.lastIndexOf(':') + 1));
        void this.h.revoke(this.topic, p);
      }
    });
    await c.subscribe({ topic: this.topic, fromBeginning });
    await c.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        if (!isRunning() || isStale() || batch.messages.length === 0) return;
        const { topic, partition } = batch;
        const key = `${topic}:${partition}`;
        let next = this.positions.get(key);
        if (next === undefined) {
          const recovered = await this.h.assign(topic, partition);
          next = recovered ?? Number(batch.firstOffset());
          this.positions.set(key, next);
          if (Number(batch.firstOffset()) > next) {
            c.seek({ topic, partition, offset: String(next) });
            return;
          }
        }
        const end = this.h.endOffset?.(topic, partition) ?? null;
        const records: KafkaRecord[] = [];
        for (const m of batch.messages) {
          const off = Number(m.offset);
          if (off < next || (end !== null && off >= end)) continue;
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(m.headers ?? {})) if (v !== undefined) headers[k] = String(v);
          records.push({ offset: off, key: m.key, value: m.value, timestamp: Number(m.timestamp), headers });
        }
        if (records.length > 0) {
          await this.pauseWhileBacklogged(heartbeat);
          // the curator may hold these records back (its section is full, or a service it waits for is down):
          // keep heartbeating meanwhile, so the group does not take the partition away from a live member
          const beat = setInterval(() => void heartbeat().catch(() => undefined), 1000);
          try {
            await this.h.records(topic, partition, records);
          } finally {
            clearInterval(beat);
          }
          if (this.positions.has(key)) this.positions.set(key, records[records.length - 1].offset + 1);
        }
        resolveOffset(batch.lastOffset());
        await heartbeat();
      },
    });
  }

  private async pauseWhileBacklogged(heartbeat: () => Promise<void>): Promise<void> {
    if (!this.h.backlogged()) return;
    if (!this.paused) {
      this.consumer.pause([{ topic: this.topic }]);
      this.paused = true;
    }
    while (this.h.backlogged()) {
      await new Promise((r) => setTimeout(r, 200));
      await heartbeat().catch(() => undefined);
    }
    this.consumer.resume([{ topic: this.topic }]);
    this.paused = false;
  }
}

export interface OutMessage {
  key: string;
  value: Buffer;
  partition?: number;
  headers?: Record<string, string>;
}

/**
 * Sends messages in requests that stay under `maxBytes` (a broker rejects a record batch over its
 * message.max.bytes, 1 MiB by default), in order.
 */
export async function sendChunked(producer: Producer, topic: string, messages: OutMessage[], maxBytes: number): Promise<void> {
  let chunk: OutMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = m.value.length + m.key.length + 64;
    if (chunk.length > 0 && bytes + size > maxBytes) {
      await producer.send({ topic, messages: chunk });
      chunk = [];
      bytes = 0;
    }
    chunk.push(m);
    bytes += size;
  }
  if (chunk.length > 0) await producer.send({ topic, messages: chunk });
}

const TRANSIENT_KAFKA = new Set([
  'KafkaJSNumberOfRetriesExceeded',
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSGroupCoordinatorNotFound',
  'KafkaJSMetadataNotLoaded',
  'KafkaJSTimeout',
]);

/**
 * Whether a kafkajs error means the brokers are unreachable or busy (a connection refused or closed, a
 * timeout, a leader moving, retries spent on any of those), not that the request was wrong.
 */
export function isTransientKafkaError(e: unknown): boolean {
  for (let err = e as { name?: string; retriable?: boolean; cause?: unknown } | undefined; err; err = err.cause as typeof err) {
    if (err.retriable === true) return true;
    if (TRANSIENT_KAFKA.has(err.name ?? '')) return true;
  }
  return false;
}

/** Runs a call to the brokers; a transient failure becomes a TransientError (src/util/retry.ts), anything else stays. */
export const kafkaCall = <T>(run: () => Promise<T>): Promise<T> => asTransient('Kafka', isTransientKafkaError, run);

export async function commitOffset(consumer: Consumer, topic: string, partition: number, next: number): Promise<boolean> {
  try {
    await consumer.commitOffsets([{ topic, partition, offset: String(next) }]);
    return true;
  } catch {
    // a rebalance is in progress; the commit records remain the source of truth
    return false;
  }
}

export type { Admin, Consumer, Kafka, Producer };
