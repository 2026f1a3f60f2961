/**
 * Avro encode and decode of every record that crosses Kafka, through @confluentinc/schemaregistry:
 * the real registry (Apicurio's Confluent-compatible API) in Kafka mode, the library's in-memory
 * MockClient (`mock://` URLs) in embedded mode. Schemas come from `schemas/*.avsc`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
// the modules this file uses, not the package index: that also loads the AWS, Azure, GCP and Vault KMS
// clients of field-level encryption (about 0.7 s of start-up that embedded runs would pay for nothing)
import { type Client, SchemaRegistryClient } from '@confluentinc/schemaregistry/dist/schemaregistry-client';
import { AvroDeserializer, AvroSerializer } from '@confluentinc/schemaregistry/dist/serde/avro';
import { SchemaId, SerdeType } from '@confluentinc/schemaregistry/dist/serde/serde';
import type { ControlEvent, CrawlEvent, DeadLetter, ShardManifest } from '../../records';
import { type AvroTypeLike, checkAvroBounds } from './avro-bounds';
import { asTransient } from '../../util/retry';

export const SCHEMA_DIR = join(__dirname, '..', '..', '..', '..', 'schemas');

export type SchemaName = 'crawl-event' | 'shard-manifest' | 'control' | 'dead-letter';

export function readSchema(name: SchemaName): string {
  return readFileSync(join(SCHEMA_DIR, `${name}.avsc`), 'utf8');
}

export interface Codec<T> {
  encode(value: T): Promise<Buffer>;
  decode(bytes: Buffer): Promise<T>;
}

/**
 * A registry client that fails fast (a 10 s timeout, two quick retries) so that the callers' own retry, which a
 * stop can interrupt, rides out long outages (src/util/retry.ts).
 */
export function openRegistry(url: string): Client {
  return SchemaRegistryClient.newClient({
    baseURLs: [url],
    cacheCapacity: 1000,
    maxRetries: 2,
    retriesWaitMs: 200,
    retriesMaxWaitMs: 2000,
    createAxiosDefaults: { timeout: 10_000 },
  });
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_NETWORK']);
// the HTTP statuses a registry client retries (timeouts, throttling, server-side errors)
const RETRIABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/**
 * Whether an error thrown by a schema-registry call is transient: no HTTP answer at all (connection refused
 * or reset, timeout, DNS) or a retriable status. A 4xx such as 404 (schema id unknown) is permanent.
 */
export function isTransientRegistryError(e: unknown): boolean {
  const err = e as { status?: number; code?: string; isAxiosError?: boolean; response?: unknown; cause?: { code?: string } };
  if (typeof err?.status === 'number') return RETRIABLE_STATUS.has(err.status);
  if (err?.isAxiosError && !err.response) return true;
  return NETWORK_CODES.has(err?.code ?? '') || NETWORK_CODES.has(err?.cause?.code ?? '');
}

/** Runs a call that talks to the registry; a transient failure becomes a TransientError, anything else stays as it is. */
const registryCall = <T>(run: () => Promise<T>): Promise<T> => asTransient('schema registry', isTransientRegistryError, run);

/** Registers `schema` under `<topic>-value` (idempotent) and returns a codec bound to that subject. */
export async function avroCodec<T>(
  client: Client,
  topic: string,
  schema: SchemaName,
  normalize: (raw: Record<string, unknown>) => T,
): Promise<Codec<T>> {
  await client.register(`${topic}-value`, { schemaType: 'AVRO', schema: readSchema(schema) }, false);
  const ser = new AvroSerializer(client, SerdeType.VALUE, { useLatestVersion: true });
  const de = new AvroDeserializer(client, SerdeType.VALUE, {});
  return {
    encode: (value) => registryCall(() => ser.serialize(topic, value)),
    decode: async (bytes) => {
      if (bytes.length < 5 || bytes[0] !== 0) throw new Error('not Avro with a schema-registry header (magic byte 0)');
      // the writer's schema, then a walk bounded by the record's length before the library's decode trusts
      // the block counts in it (src/streams/kafka/avro-bounds.ts)
      const [info, headerBytes] = await registryCall(() => de.getWriterSchema(topic, bytes, new SchemaId('AVRO')));
      const [writer] = await de.toType(info);
      checkAvroBounds(writer as unknown as AvroTypeLike, bytes, headerBytes);
      return normalize((await registryCall(() => de.deserialize(topic, bytes))) as Record<string, unknown>);
    },
  };
}

const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : Number(v));
function strMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const entries = v instanceof Map ? [...v.entries()] : Object.entries((v ?? {}) as object);
  for (const [k, val] of entries) out[String(k)] = String(val);
  return out;
}

export function toCrawlEvent(r: Record<string, unknown>): CrawlEvent {
  return {
    id: String(r.id),
    url: str(r.url),
    image_url: str(r.image_url),
    // the one copy of the image on the Kafka path, on purpose: the decoded bytes are a view into kafkajs's
    // fetch response, which would otherwise stay in memory until every row of the fetch is committed
    image: r.image == null ? null : Buffer.from(r.image as Uint8Array),
    caption: String(r.caption ?? ''),
    crawl_time: num(r.crawl_time),
    source: str(r.source),
    attrs: strMap(r.attrs),
  };
}

export function toManifest(r: Record<string, unknown>): ShardManifest {
  return {
    shard_uri: String(r.shard_uri),
    rows: num(r.rows),
    source_topic: String(r.source_topic),
    source_partition: num(r.source_partition),
    start_offset: num(r.start_offset),
    end_offset: num(r.end_offset),
    created_at: num(r.created_at),
    model_version: String(r.model_version),
    config_hash: String(r.config_hash),
    schema_version: num(r.schema_version),
  };
}

export function toDeadLetter(r: Record<string, unknown>): DeadLetter {
  return {
    source_topic: String(r.source_topic),
    source_partition: num(r.source_partition),
    source_offset: num(r.source_offset),
    id: str(r.id),
    url: str(r.url),
    image_url: str(r.image_url),
    reason: String(r.reason) as DeadLetter['reason'],
    message: String(r.message),
    original_b64: String(r.original_b64),
    original_bytes: num(r.original_bytes),
    truncated: Boolean(r.truncated),
    failed_at: num(r.failed_at),
  };
}

export function toControl(r: Record<string, unknown>): ControlEvent {
  const weights: Record<string, number> = {};
  for (const [k, v] of Object.entries(strMap(r.weights))) weights[k] = Number(v);
  return {
    kind: String(r.kind) as ControlEvent['kind'],
    model_version: str(r.model_version),
    bundle_uri: str(r.bundle_uri),
    weights,
    bias: r.bias == null ? null : num(r.bias),
    published_at: num(r.published_at),
    publisher: str(r.publisher),
  };
}

export interface Codecs {
  events: Codec<CrawlEvent>;
  manifests: Codec<ShardManifest>;
  deadLetters: Codec<DeadLetter>;
}

export async function openCodecs(client: Client, topics: { events: string; manifests: string; deadLetters: string }): Promise<Codecs> {
  return {
    events: await avroCodec(client, topics.events, 'crawl-event', toCrawlEvent),
    manifests: await avroCodec(client, topics.manifests, 'shard-manifest', toManifest),
    deadLetters: await avroCodec(client, topics.deadLetters, 'dead-letter', toDeadLetter),
  };
}
