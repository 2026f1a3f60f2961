/** The TypeScript record types and the Avro schemas describe the same fields. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readSchema, type SchemaName } from '../src/streams/kafka/registry-codec';
import type { ControlEvent, CrawlEvent, DeadLetter, ShardManifest } from '../src/records';

// Objects typed as the records: adding or removing a field in src/records.ts breaks compilation here,
// and the assertions below break when a schema drifts from these.
const crawl: Required<CrawlEvent> = { id: '', url: null, image_url: null, image: null, caption: '', crawl_time: 0, source: null, attrs: {} };
const manifest: Required<ShardManifest> = {
  shard_uri: '', rows: 0, source_topic: '', source_partition: 0, start_offset: 0, end_offset: 0, created_at: 0, model_version: '', config_hash: '', schema_version: 0,
};
const control: Required<ControlEvent> = { kind: 'mix_weights', model_version: null, bundle_uri: null, weights: {}, bias: null, published_at: 0, publisher: null };
const dead: Required<DeadLetter> = {
  source_topic: '', source_partition: 0, source_offset: 0, id: null, url: null, image_url: null, reason: 'schema_error', message: '', original_b64: '', original_bytes: 0, truncated: false, failed_at: 0,
};

const cases: [SchemaName, object][] = [
  ['crawl-event', crawl],
  ['shard-manifest', manifest],
  ['control', control],
  ['dead-letter', dead],
];

for (const [name, record] of cases) {
  test(`${name}.avsc has exactly the fields of its TypeScript type, nullable where the type is`, () => {
    const schema = JSON.parse(readSchema(name)) as { fields: { name: string; type: unknown }[] };
    assert.deepEqual(schema.fields.map((f) => f.name).sort(), Object.keys(record).sort());
    for (const f of schema.fields) {
      const nullableInAvro = Array.isArray(f.type) && f.type.includes('null');
      const nullableInTs = (record as Record<string, unknown>)[f.name] === null;
      assert.equal(nullableInAvro, nullableInTs, `${name}.${f.name} nullability`);
    }
  });
}
