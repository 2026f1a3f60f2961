/** `squeeze produce`: a file dataset to a topic, as Avro crawl events keyed by a hash of the image. */
import { createHash } from 'node:crypto';
import { type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Config } from '../config/config';
import type { CrawlEvent } from '../records';
import { openFileSource } from '../streams/files/file-source';
import { connectAdmin, createKafka, ensureTopics, type OutMessage, sendChunked } from '../streams/kafka/kafka';
import { eventTracingOn, traceparentOf } from '../telemetry/event-trace';
import { avroCodec, openRegistry, toCrawlEvent } from '../streams/kafka/registry-codec';
import { UserError } from './errors';

/** Key by a stable hash of the image (or its URL) so duplicates share a partition. */
export function eventKey(e: CrawlEvent): string {
  const h = createHash('sha1');
  if (e.image && e.image.length) h.update(e.image);
  else h.update(e.image_url ?? e.id);
  return h.digest('hex');
}

export async function produceFile(cfg: Config, local: Record<string, string | boolean | undefined>): Promise<number> {
  if (!cfg.input) throw new UserError('--input PATH is required');
  if (cfg.brokers.length === 0) throw new UserError('--brokers is required');
  if (cfg.registry.startsWith('mock://')) throw new UserError('--registry URL is required (a real schema registry)');
  const limit = local.limit === undefined ? Infinity : Number(local.limit);
  const kafka = createKafka(cfg);
  const admin = await connectAdmin(kafka, cfg);
  await ensureTopics(admin, [{ topic: cfg.topic, partitions: cfg.kafka.partitions }]);
  await admin.disconnect();
  const codec = await avroCodec(openRegistry(cfg.registry), cfg.topic, 'crawl-event', toCrawlEvent);
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const maxBytes = cfg.kafka.maxMessageBytes;
  let sent = 0;
  let skipped = 0;
  let tooLarge = 0;
  let pending: OutMessage[] = [];
  let spans: Span[] = [];
  let pendingBytes = 0;
  const flush = async (): Promise<void> => {
    try {
      await sendChunked(producer, cfg.topic, pending, maxBytes);
    } catch (e) {
      for (const s of spans) s.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      for (const s of spans) s.end();
    }
    sent += pending.length;
    pending = [];
    spans = [];
    pendingBytes = 0;
  };
  try {
    for await (const r of openFileSource(cfg.input, { maxRecordBytes: cfg.limits.maxRecordBytes, maxImageBytes: cfg.limits.maxImageBytes }, { imageRoot: cfg.imageRoot })) {
      if (sent + pending.length >= limit) break;
      if (!r.event) {
        skipped++;
        continue;
      }
      const value = await codec.encode(r.event);
      if (value.length + 1024 > maxBytes) {
        tooLarge++;
        continue;
      }
      // the event's trace starts here (docs/TRACING.md): its context travels in the traceparent header
      const span = eventTracingOn() ? sendSpan(cfg.topic, r.event) : null;
      if (span) spans.push(span);
      pending.push({ key: eventKey(r.event), value, ...(span ? { headers: { traceparent: traceparentOf(span.spanContext()) } } : {}) });
      pendingBytes += value.length;
      if (pending.length >= 500 || pendingBytes > 8 * maxBytes) await flush();
    }
    await flush();
  } finally {
    await producer.disconnect();
  }
  let note = skipped ? `; ${skipped} unreadable records skipped` : '';
  if (tooLarge) note += `; ${tooLarge} events over ${maxBytes} bytes skipped (raise kafka.maxMessageBytes with the broker's message.max.bytes)`;
  process.stdout.write(`squeeze: published ${sent} events to ${cfg.topic}${note}\n`);
  return 0;
}

/** The producer span of one event (messaging conventions: "send <topic>", kind PRODUCER). */
function sendSpan(topic: string, e: CrawlEvent): Span {
  return trace.getTracer('squeeze').startSpan(`send ${topic}`, {
    kind: SpanKind.PRODUCER,
    root: true,
    attributes: {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'messaging.destination.name': topic,
      'messaging.kafka.message.key': eventKey(e),
      'squeeze.event.id': e.id,
    },
  });
}
