/**
 * The control topic: a compacted topic of model versions and mixing weights published
 * by the trainer. A running curator follows it from the beginning and applies each event between
 * batches; it never commits offsets there (every curator reads the whole topic).
 */
import type { Kafka } from 'kafkajs';
import type { ControlEvent } from '../../records';
import { avroCodec, openRegistry, toControl } from './registry-codec';
import { ensureTopics } from './kafka';

export interface ControlFollower {
  /** resolves once the events present at start have been applied */
  caughtUp: Promise<void>;
  stop(): Promise<void>;
}

export async function followControl(
  kafka: Kafka,
  registryUrl: string,
  topic: string,
  onEvent: (e: ControlEvent, headers: Record<string, string>) => void,
): Promise<ControlFollower> {
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, [{ topic, partitions: 1, compacted: true }]);
  const high = Number((await admin.fetchTopicOffsets(topic))[0]?.high ?? 0);
  await admin.disconnect();
  const codec = await avroCodec(openRegistry(registryUrl), topic, 'control', toControl);
  const consumer = kafka.consumer({ groupId: `squeeze-control-${process.pid}-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let markCaughtUp: () => void = () => undefined;
  const caughtUp = new Promise<void>((r) => (markCaughtUp = r));
  if (high === 0) markCaughtUp();
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ message }) => {
      if (message.value) {
        try {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = String(v);
          onEvent(await codec.decode(message.value), headers);
        } catch {
          // a control record that does not decode is ignored; the next valid one wins
        }
      }
      if (Number(message.offset) + 1 >= high) markCaughtUp();
    },
  });
  return { caughtUp, stop: () => consumer.disconnect() };
}

/** `traceparent`: the trace context of what produced the event (a trainer step), carried in the header */
export async function publishControl(kafka: Kafka, registryUrl: string, topic: string, event: ControlEvent, traceparent?: string | null): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, [{ topic, partitions: 1, compacted: true }]);
  await admin.disconnect();
  const codec = await avroCodec(openRegistry(registryUrl), topic, 'control', toControl);
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: [{ key: event.kind, value: await codec.encode(event), ...(traceparent ? { headers: { traceparent } } : {}) }] });
  await producer.disconnect();
}
