/** Helpers for tests against the real broker and registry started by deploy/services.sh. */
import { Kafka, logLevel } from 'kafkajs';

export const BROKERS = process.env.SQUEEZE_BROKERS ?? '';
export const REGISTRY = process.env.SQUEEZE_REGISTRY ?? '';

export function kafka(): Kafka {
  return new Kafka({ clientId: 'squeeze-test', brokers: BROKERS.split(','), logLevel: logLevel.NOTHING });
}

export async function createTopic(topic: string, partitions: number): Promise<void> {
  const admin = kafka().admin();
  await admin.connect();
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }] });
  await admin.disconnect();
}

export async function highWatermarks(topic: string): Promise<Map<number, number>> {
  const admin = kafka().admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  return new Map(offsets.map((o) => [o.partition, Number(o.high)]));
}

export async function produceRaw(topic: string, messages: { value: Buffer | null; partition?: number; key?: string }[]): Promise<void> {
  const p = kafka().producer();
  await p.connect();
  await p.send({ topic, messages });
  await p.disconnect();
}

/** Reads a whole topic as it is now. */
export async function readTopic(topic: string): Promise<{ key: string | null; value: Buffer | null; partition: number }[]> {
  const high = await highWatermarks(topic);
  const total = [...high.values()].reduce((a, b) => a + b, 0);
  const out: { key: string | null; value: Buffer | null; partition: number }[] = [];
  if (total === 0) return out;
  const c = kafka().consumer({ groupId: `test-read-${topic}-${Date.now()}-${Math.random()}` });
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${out.length} of ${total} from ${topic}`)), 60_000);
    void c.run({
      eachMessage: async ({ message, partition }) => {
        out.push({ key: message.key?.toString() ?? null, value: message.value, partition });
        if (out.length >= total) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await c.disconnect();
  return out;
}

export const servicesAvailable = (): boolean => BROKERS !== '' && REGISTRY !== '';
