// Init container: wait until the schema registry answers and the Kafka topics exist.
// Squeeze creates missing topics itself with replication factor 1; waiting here lets Strimzi's
// topic operator create them first, with the partitions and replicas of the KafkaTopic resources.
// Env: SQUEEZE_BROKERS (host:port,...), SQUEEZE_REGISTRY (URL), WAIT_TOPICS (a,b,...),
// WAIT_TIMEOUT_S (default 900; then exit 1 and let Kubernetes restart the pod).
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const brokers = (process.env.SQUEEZE_BROKERS || '').split(',').filter(Boolean);
const registry = process.env.SQUEEZE_REGISTRY || '';
const topics = (process.env.WAIT_TOPICS || '').split(',').filter(Boolean);
const deadline = Date.now() + 1000 * Number(process.env.WAIT_TIMEOUT_S || 900);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function registryReady() {
  if (!registry) return null;
  try {
    const res = await fetch(`${registry.replace(/\/$/, '')}/subjects`, { signal: AbortSignal.timeout(5000) });
    return res.ok ? null : `schema registry ${registry}: HTTP ${res.status}`;
  } catch (e) {
    return `schema registry ${registry}: ${e.cause?.code || e.message}`;
  }
}

async function missingTopics() {
  const admin = new Kafka({ clientId: 'squeeze-wait', brokers, logLevel: logLevel.NOTHING, connectionTimeout: 5000, retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    const have = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !have.has(t));
    return missing.length ? `topics not created yet: ${missing.join(', ')}` : null;
  } catch (e) {
    return `Kafka ${brokers.join(',')}: ${e.message}`;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

(async () => {
  if (brokers.length === 0 && topics.length > 0) throw new Error('SQUEEZE_BROKERS is not set');
  for (;;) {
    const why = (await registryReady()) || (topics.length ? await missingTopics() : null);
    if (!why) {
      console.log(`wait-for-services: ready (registry ${registry || '-'}, topics ${topics.join(', ') || '-'})`);
      process.exit(0);
    }
    if (Date.now() > deadline) {
      console.error(`wait-for-services: gave up: ${why}`);
      process.exit(1);
    }
    console.log(`wait-for-services: waiting: ${why}`);
    await sleep(5000);
  }
})().catch((e) => {
  console.error(`wait-for-services: ${e.message}`);
  process.exit(1);
});
