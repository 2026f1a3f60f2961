/**
 * What must not stall or lose anything, on the real broker and registry (deploy/services.sh):
 *  - Avro block-count bombs (map and array, positive and negative counts) and an oversized record, consumed
 *    by a group of two curators: dead letters with their reasons, and every partition moves on;
 *  - the schema registry unreachable for two minutes while records with a schema the curator has not seen yet
 *    arrive: the curator waits and retries, dead-letters nothing valid, and loses nothing;
 *  - the broker frozen (SIGSTOP) for 75 s, longer than kafkajs's own retries last: the curator stays up.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import { writeGenJsonl } from '../../src/gen';
import { readSchema, openRegistry } from '../../src/streams/kafka/registry-codec';
import { readCommits } from '../../src/streams/shards/shard-log';
import { auditOutput } from '../helpers/accounting';
import { crawlEventBody, MAP_BOMBS, zigzag } from '../helpers/avro-bombs';
import { ROOT, squeeze, type Ran } from '../helpers/cli';
import { BROKERS, createTopic, highWatermarks, produceRaw, REGISTRY, servicesAvailable } from '../helpers/kafka';
import { type TcpProxy, tcpProxy } from '../helpers/tcp-proxy';
import { duckQuery, sqlQuote } from '../helpers/duckdb';

const skip = servicesAvailable() ? false : 'skipped: SQUEEZE_BROKERS/SQUEEZE_REGISTRY not set (run through npm test, which starts deploy/services.sh)';
const work = mkdtempSync(join(tmpdir(), 'reliability-it-'));
const run = `${process.pid}-${Date.now()}`;
const ok = (r: Ran) => assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr.slice(-2000)}`);

// avsc, the Avro library the registry client decodes with, writes the records of a second schema version
const avsc = require('avsc') as { Type: { forSchema(s: unknown): { toBuffer(v: unknown): Buffer } } };

/** The crawl-event schema with one more field: a writer schema the curator has not seen (a new id). */
function schemaV2(): Record<string, unknown> {
  const s = JSON.parse(readSchema('crawl-event')) as { fields: unknown[] };
  return { ...s, fields: [...s.fields, { name: 'labels', type: { type: 'array', items: 'string' }, default: [] }] };
}

async function register(topic: string, schema: unknown): Promise<Buffer> {
  const id = await openRegistry(REGISTRY).register(`${topic}-value`, { schemaType: 'AVRO', schema: JSON.stringify(schema) }, false);
  const header = Buffer.alloc(5);
  header.writeUInt32BE(id, 1);
  return header;
}

async function produceFile(topic: string, file: string, limit: number, registry = REGISTRY): Promise<void> {
  const r = await squeeze(['produce', '--brokers', BROKERS, '--registry', registry, '--topic', topic, '--input', file, '--limit', String(limit), '--progress', 'off']);
  ok(r);
}

const curate = (topic: string, out: string, group: string, registry: string, extra: string[] = []) => [
  'curate', '--brokers', BROKERS, '--registry', registry, '--models', 'none', '--topic', topic, '--group', group, '--out', out,
  '--drain', '--progress', 'off', '--idle-ms', '1000', '--shard-rows', '100', '--session-timeout-ms', '10000', ...extra,
];

/** The real registry behind a TCP relay the test can take down: its URL through the relay, and the relay. */
async function registryProxy(): Promise<{ proxy: TcpProxy; viaProxy: URL }> {
  const registry = new URL(REGISTRY);
  const proxy = await tcpProxy({ host: registry.hostname, port: Number(registry.port) });
  const viaProxy = new URL(REGISTRY);
  viaProxy.port = String(proxy.port);
  return { proxy, viaProxy };
}

/** The dead letters of a partition's commit records, as JSON lines. */
function deadLetters(out: string, topic: string, partition: number): Promise<{ source_offset: number; id: string | null; reason: string; message: string }[]> {
  return readCommits(out, topic, partition).then((commits) =>
    commits.flatMap((c) => (c.dead_letters ? readFileSync(join(out, c.dead_letters), 'utf8').trim().split('\n').map((l) => JSON.parse(l)) : [])),
  );
}

describe('reliability on real Kafka', { skip }, () => {
  test('block-count bombs and an oversized record, in a group of two: dead letters with reasons, no stall', { timeout: 300_000 }, async () => {
    const topic = `it.bombs.${run}`;
    await createTopic(topic, 2);
    const before = join(work, 'before.jsonl');
    const after = join(work, 'after.jsonl');
    await writeGenJsonl(before, { n: 320, seed: 5 });
    await writeGenJsonl(after, { n: 320, seed: 6 });
    await produceFile(topic, before, 300);
    const v1 = await register(topic, JSON.parse(readSchema('crawl-event')));
    const v2 = await register(topic, schemaV2());
    const arrayBombs = [zigzag(2n ** 50n), Buffer.concat([zigzag(-(2n ** 50n)), zigzag(2n)])];
    const hostile = [
      ...Object.values(MAP_BOMBS).map((attrs, i) => Buffer.concat([v1, crawlEventBody(`map-bomb-${i}`, attrs)])),
      ...arrayBombs.map((labels, i) => Buffer.concat([v2, crawlEventBody(`array-bomb-${i}`, Buffer.concat([zigzag(0n), labels]))])),
      Buffer.concat([v1, crawlEventBody('huge', zigzag(0n)), Buffer.alloc(300_000, 0x61)]), // over maxRecordBytes below
    ];
    // every partition gets every hostile record, with valid events before and after it
    await produceRaw(topic, [0, 1].flatMap((partition) => hostile.map((value) => ({ value, partition }))));
    await produceFile(topic, after, 300);
    const high = await highWatermarks(topic);
    const total = [...high.values()].reduce((a, b) => a + b, 0);

    const config = join(work, 'bombs.json');
    writeFileSync(config, JSON.stringify({ limits: { maxRecordBytes: 200_000 } }));
    const out = join(work, 'bombs');
    const group = `g-bombs-${run}`;
    const [a, b] = await Promise.all([squeeze(curate(topic, out, group, REGISTRY, ['--config', config])), squeeze(curate(topic, out, group, REGISTRY, ['--config', config]))]);
    ok(a);
    ok(b);
    const audit = await auditOutput(out, topic, high);
    assert.equal(audit.rows + audit.dead + audit.filtered, total);
    assert.ok(audit.rows > 200, `rows ${audit.rows}`);
    for (const partition of [0, 1]) {
      const dead = await deadLetters(out, topic, partition);
      const bombs = dead.filter((d) => d.reason === 'schema_error' && /^Avro value is malformed .*(map|array) block/.test(d.message));
      assert.equal(bombs.length, 5, `partition ${partition}: ${JSON.stringify(dead.map((d) => d.message))}`);
      assert.ok(bombs.some((d) => /map block/.test(d.message)) && bombs.some((d) => /array block/.test(d.message)));
      const huge = hostile[hostile.length - 1].length;
      const large = dead.filter((d) => d.reason === 'record_too_large' && d.message === `record is ${huge} bytes, over limits.maxRecordBytes (200000)`);
      assert.equal(large.length, 1, JSON.stringify(dead.filter((d) => d.reason === 'record_too_large')));
      // the partition moved on: rows after the hostile records were committed
      const commits = await readCommits(out, topic, partition);
      assert.equal(commits[commits.length - 1].end_offset + 1, high.get(partition));
    }
  });

  test('a two-minute registry outage: records of a new schema wait and are curated after it, nothing dead-lettered or lost', { timeout: 420_000 }, async () => {
    const topic = await stagedTopic('registry-outage', 2, 200, 8);
    const { proxy, viaProxy } = await registryProxy();
    try {
      const out = join(work, 'outage');
      const curator = startCurator(curate(topic, out, `g-outage-${run}`, viaProxy.toString()));
      // committed what it has: schema v1 is known to it now
      await curator.committed(out, topic, [0, 1], 200, 'before the outage');
      await proxy.down();
      // records written with a schema version the curator has never seen: decoding them needs the registry
      const write = await newSchemaWriter(topic);
      const fresh = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
        const image = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 6 * i, g: 120, b: 255 - 6 * i } } }).png().toBuffer();
        return { value: write({ id: `v2-${i}`, image, caption: `a blue and green square number ${i}`, attrs: { k: 'v' }, labels: ['x'] }), partition: i % 2 };
      }));
      await produceRaw(topic, fresh);
      await new Promise((r) => setTimeout(r, 120_000));
      assert.equal(curator.exited, false, 'the curator stayed up through the outage');
      await proxy.up();
      await curator.committed(out, topic, [0, 1], 240, 'after the outage');
      const ran = await curator.stop();
      ok(ran);
      assert.match(ran.stderr, /schema registry: .*retrying/);
      const audit = await auditOutput(out, topic, await highWatermarks(topic));
      assert.equal(audit.rows + audit.dead + audit.filtered, 240);
      assert.equal(audit.deadByReason.schema_error ?? 0, 0, 'no valid record became a schema_error');
      // the records of the new schema were curated (rows or sampling decisions), none is a dead letter
      const dead = [...(await deadLetters(out, topic, 0)), ...(await deadLetters(out, topic, 1))];
      assert.deepEqual(dead.filter((d) => d.id?.startsWith('v2-')), []);
      const rows = await duckQuery(`SELECT count(*) AS n FROM read_parquet([${audit.shards.map(sqlQuote).join(', ')}]) WHERE id LIKE 'v2-%'`);
      assert.ok(Number(rows[0].n) > 0, 'some records of the new schema are rows');
    } finally {
      await proxy.close();
    }
  });

  test('SIGTERM while a batch waits for the registry: the curator stops at once and dead-letters nothing', { timeout: 180_000 }, async () => {
    const topic = await stagedTopic('registry-stop', 1, 50, 9);
    const { proxy, viaProxy } = await registryProxy();
    try {
      const out = join(work, 'registry-stop');
      const curator = startCurator(curate(topic, out, `g-stop-${run}`, viaProxy.toString()));
      await curator.committed(out, topic, [0], 50, 'before the outage');
      await proxy.down();
      const write = await newSchemaWriter(topic);
      await produceRaw(topic, [{ value: write({ id: 'waits', image_url: 'https://x.example/a.jpg', caption: 'c' }), partition: 0 }]);
      await new Promise((r) => setTimeout(r, 8000)); // the record is fetched and its decode retries
      const t0 = Date.now();
      const ran = await curator.stop(20_000);
      assert.ok(Date.now() - t0 < 20_000, `stopped ${Date.now() - t0} ms after SIGTERM`);
      assert.match(ran.stderr, /schema registry: .*retrying/, 'the record was waiting for the registry');
      const commits = await readCommits(out, topic, 0);
      assert.equal(commits[commits.length - 1].end_offset, 49, 'the waiting record was neither committed nor dead-lettered');
      assert.equal(commits.reduce((n, c) => n + (c.dead_by_reason.schema_error ?? 0), 0), 0);
    } finally {
      await proxy.close();
    }
  });

  test('brokers frozen for 75 s: the curator rides it out and curates what comes after, exactly once', { timeout: 420_000, skip: kafkaPid() === null ? 'skipped: no Kafka started by deploy/services.sh here (its pid file is where the broker is frozen from)' : false }, async () => {
    const pid = kafkaPid()!;
    const topic = await stagedTopic('broker-outage', 2, 200, 11);
    const second = join(work, 'broker-outage-second.jsonl');
    await writeGenJsonl(second, { n: 220, seed: 12 });
    const out = join(work, 'broker-outage');
    const curator = startCurator(curate(topic, out, `g-broker-${run}`, REGISTRY));
    try {
      await curator.committed(out, topic, [0, 1], 200, 'before the outage');
      process.kill(pid, 'SIGSTOP');
      try {
        await new Promise((r) => setTimeout(r, 75_000));
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      assert.equal(curator.exited, false, 'the curator stayed up while the brokers were frozen');
      await within(120_000, 'producing after the outage', produceFile(topic, second, 200), () => curator.log);
      await curator.committed(out, topic, [0, 1], 400, 'after the outage');
    } finally {
      ok(await curator.stop());
    }
    const audit = await auditOutput(out, topic, await highWatermarks(topic));
    assert.equal(audit.rows + audit.dead + audit.filtered, 400);
  });
});

/** A fresh topic of `partitions` partitions holding the first `n` readable events of a generated crawl. */
async function stagedTopic(name: string, partitions: number, n: number, seed: number): Promise<string> {
  const topic = `it.${name}.${run}`;
  await createTopic(topic, partitions);
  const file = join(work, `${name}.jsonl`);
  await writeGenJsonl(file, { n: n + 20, seed }); // a few generated lines are unreadable and skipped
  await produceFile(topic, file, n);
  return topic;
}

/** Encodes crawl events with the second schema version, registered now (the fields not given are empty). */
async function newSchemaWriter(topic: string): Promise<(fields: Record<string, unknown>) => Buffer> {
  const header = await register(topic, schemaV2());
  const type = avsc.Type.forSchema(schemaV2());
  const empty = { url: null, image_url: null, image: null, caption: '', crawl_time: 1_700_000_000_000, source: null, attrs: {}, labels: [] };
  return (fields) => Buffer.concat([header, type.toBuffer({ ...empty, ...fields })]);
}

/** `step`, or a failure after `ms` that says what the curator last wrote. */
async function within<T>(ms: number, what: string, step: Promise<T>, log: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s; curator stderr: ${log().slice(-1500)}`)), ms)));
  try {
    return await Promise.race([step, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A curator that runs until stopped (no --drain): its stderr so far, whether it exited, waits with deadlines. */
function startCurator(args: string[]) {
  let child: ChildProcess | null = null;
  let log = '';
  let exited = false;
  const done = squeeze(args.filter((a) => a !== '--drain'), {
    onStart: (p) => {
      child = p;
      p.stderr?.on('data', (d) => (log += String(d)));
    },
  });
  void done.then(() => (exited = true));
  return {
    get log(): string {
      return log;
    },
    get exited(): boolean {
      return exited;
    },
    /** polls until `n` records of `partitions` are in commit records, for at most 150 s */
    async committed(out: string, topic: string, partitions: number[], n: number, what: string): Promise<void> {
      const deadline = Date.now() + 150_000;
      for (;;) {
        let total = 0;
        for (const p of partitions) for (const c of await readCommits(out, topic, p)) total += c.records;
        if (total >= n) return;
        // (a message is built before assert looks at the condition: nothing in it may wait)
        assert.ok(!exited, `the curator exited ${what}: ${log.slice(-1500)}`);
        assert.ok(Date.now() < deadline, `${total} of ${n} records committed ${what}; curator stderr: ${log.slice(-1500)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    /** SIGTERM, and the run as it ended, within `ms` */
    stop(ms = 60_000): Promise<Ran> {
      (child as ChildProcess | null)?.kill('SIGTERM');
      return within(ms, 'stopping the curator', done, () => log);
    },
  };
}

/** The broker's pid when deploy/services.sh started it on this machine (null for brokers elsewhere). */
function kafkaPid(): number | null {
  const file = join(process.env.SQUEEZE_SERVICES_CACHE ?? join(ROOT, 'deploy', '.cache'), 'run', 'kafka.pid');
  if (!existsSync(file) || BROKERS === '') return null;
  const pid = Number(readFileSync(file, 'utf8').trim());
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}
