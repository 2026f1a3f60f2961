/**
 * Kafka mode against the real broker and schema registry (deploy/services.sh): about 5,000 generated
 * events plus hostile wire records, curated exactly once; SIGKILL crashes; a two-member group with a
 * member killed; replays into fresh directories. Accounting is checked with DuckDB (helpers/accounting).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { before, describe, test } from 'node:test';
import { writeGenJsonl } from '../../src/gen';
import { readCommits } from '../../src/streams/shards/shard-log';
import { openRegistry, avroCodec, toCrawlEvent, toDeadLetter, toManifest } from '../../src/streams/kafka/registry-codec';
import { auditOutput, type Audit } from '../helpers/accounting';
import { squeeze, type Ran } from '../helpers/cli';
import { assertModelColumns } from '../helpers/model-columns';
import { duckDescribe, duckQuery, sqlQuote } from '../helpers/duckdb';
import { BROKERS, createTopic, highWatermarks, kafka, produceRaw, readTopic, REGISTRY, servicesAvailable } from '../helpers/kafka';

const skip = servicesAvailable() ? false : 'skipped: SQUEEZE_BROKERS/SQUEEZE_REGISTRY not set (run through npm test, which starts deploy/services.sh)';
const work = mkdtempSync(join(tmpdir(), 'kafka-it-'));
const crawl = join(work, 'crawl.jsonl');
const run = `${process.pid}-${Date.now()}`;
const service = ['--brokers', BROKERS, '--registry', REGISTRY];
/**
 * The kill and rebalance tests exercise the offset protocol, which does not depend on the model stages:
 * they run with `--models none` to keep the suite's time down. The end-to-end and replay tests run the
 * built-in bundle, and test/curate/embedded.test.ts kills a run with the models on.
 */
const PROTOCOL_ONLY = ['--models', 'none'];
/** the generated crawl's own bundle (the default photo bundle does not know generated shapes) */
const SHAPES = ['--models', 'builtin-shapes'];

const curateArgs = (topic: string, out: string, group: string, extra: string[] = []) => [
  'curate', ...service, ...(extra.includes('--models') ? [] : SHAPES), '--topic', topic, '--group', group, '--out', out, '--drain', '--progress', 'off',
  '--idle-ms', '1000', '--shard-rows', '400', '--session-timeout-ms', '10000', ...extra,
];

/** Publishes the first `limit` readable events of the crawl; records the file reader rejects are skipped. */
async function produce(topic: string, limit: number, partitions = 3): Promise<number> {
  await createTopic(topic, partitions);
  const r = await squeeze(['produce', ...service, '--topic', topic, '--input', crawl, '--limit', String(limit), '--progress', 'off']);
  assert.equal(r.code, 0, r.stderr);
  const published = Number((r.stdout.match(/published (\d+) events/) ?? [0, -1])[1]);
  assert.equal(published, limit);
  return published;
}

const ok = (r: Ran) => assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr.slice(-2000)}`);

async function rowsOf(out: string): Promise<string[]> {
  const glob = join(out, 'topic=*', 'partition=*', '*.parquet');
  const rows = await duckQuery(
    `SELECT source_partition, source_offset, id, caption, copies, score, kept_patches FROM read_parquet(${sqlQuote(glob)}) ORDER BY 1, 2`,
  );
  // the row as the trainer sees it: which sample, its caption, how often, with what score and patches
  return rows.map((r) => `${r.source_partition}/${r.source_offset}/${r.id}/${r.caption}/${r.copies}/${r.score}/${JSON.stringify(r.kept_patches)}`);
}

describe('Kafka mode', { skip }, () => {
  before(async () => {
    await writeGenJsonl(crawl, { n: 5200, seed: 21 }); // some records are unreadable as events and skipped by produce
  });

  const e2e = { topic: `it.e2e.${run}`, out: join(work, 'e2e'), audit: null as Audit | null };

  test('5,000 events with hostile records: every offset a row, a dead letter or a counted filter decision', async () => {
    await produce(e2e.topic, 5000);
    const codec = await avroCodec(openRegistry(REGISTRY), e2e.topic, 'crawl-event', toCrawlEvent);
    const valid = await codec.encode({ id: 'v', url: null, image_url: null, image: Buffer.from([1]), caption: 'c', crawl_time: 1, source: null, attrs: {} });
    const hostile = [
      Buffer.from('plain text, not Avro'),
      null,
      Buffer.alloc(0),
      Buffer.from([0, 0, 0, 0x7f, 0x7f, 1, 2, 3]), // magic byte, unknown schema id
      valid.subarray(0, valid.length - 3), // truncated Avro
      Buffer.concat([valid.subarray(0, 5), Buffer.alloc(200, 0xff)]), // right header, garbage body
      Buffer.from(JSON.stringify({ id: 'json-instead-of-avro', caption: 'x' })),
      Buffer.alloc(600_000, 0x41), // large junk
    ];
    await produceRaw(e2e.topic, hostile.map((value, i) => ({ value, partition: i % 3 })));
    const high = await highWatermarks(e2e.topic);
    const total = [...high.values()].reduce((a, b) => a + b, 0);
    assert.equal(total, 5000 + hostile.length);

    const ran = await squeeze(curateArgs(e2e.topic, e2e.out, `g-e2e-${run}`));
    ok(ran);
    const audit = await auditOutput(e2e.out, e2e.topic, high);
    e2e.audit = audit;
    assert.equal(audit.rows + audit.dead + audit.filtered, total);
    assert.ok(audit.rows > 1000, `rows ${audit.rows}`);
    const sampled = audit.rows + (audit.filteredByReason.zero_copies ?? 0);
    const copies = await duckQuery(`SELECT sum(copies) AS c FROM read_parquet(${sqlQuote(join(e2e.out, 'topic=*', 'partition=*', '*.parquet'))})`);
    assert.ok(Math.abs(Number(copies[0].c) / sampled - 1) < 0.15, `soft-cap copies per sampled input ${Number(copies[0].c) / sampled}`);
    assert.ok((audit.deadByReason.schema_error ?? 0) >= hostile.length, 'hostile wire records are schema_error dead letters');
    for (const reason of ['decode_error', 'image_too_large', 'image_too_small', 'unsupported_format', 'fetch_blocked']) {
      assert.ok((audit.deadByReason[reason] ?? 0) > 0, `some ${reason}`);
    }
    assert.ok((audit.filteredByReason.duplicate_exact ?? 0) > 50, 'exact duplicates filtered');

    // the columns of docs/FORMATS.md, Output rows, as an independent reader sees them
    const types = await duckDescribe(audit.shards[0]);
    const want: Record<string, RegExp> = {
      id: /VARCHAR/, source_topic: /VARCHAR/, source_partition: /INTEGER/, source_offset: /BIGINT/, image: /BLOB/,
      image_mime: /VARCHAR/, width: /INTEGER/, height: /INTEGER/, grid_rows: /INTEGER/, grid_cols: /INTEGER/,
      kept_patches: /INTEGER\[\]/, keep_ratio: /FLOAT/, caption: /VARCHAR/, caption_raw: /VARCHAR/,
      tags: /STRUCT\(.*label.*VARCHAR.*score.*FLOAT.*\)\[\]/i, clip_score: /FLOAT/, score: /FLOAT/, copies: /INTEGER/,
      image_embedding: /FLOAT\[\]/, text_embedding: /FLOAT\[\]/, model_version: /VARCHAR/, config_hash: /VARCHAR/,
      curated_at: /TIMESTAMP/, attrs: /MAP\(VARCHAR, VARCHAR\)/,
    };
    for (const [col, re] of Object.entries(want)) assert.match(types[col] ?? 'missing', re, col);
    const sample = await duckQuery(`SELECT id, width, height, copies, caption, attrs['truth_noise'] AS noise FROM read_parquet(${sqlQuote(audit.shards[0])}) LIMIT 5`);
    for (const r of sample) {
      assert.ok(Number(r.width) >= 32 && Number(r.height) >= 32);
      assert.ok(Number(r.copies) >= 1, 'written samples have at least one copy');
      assert.ok(typeof r.noise === 'string');
    }

    // condensed, tagged, enriched rows from the built-in bundle
    await assertModelColumns(join(e2e.out, 'topic=*', 'partition=*', '*.parquet'));

    // the dead letters reached <topic>.dlq and the manifests the manifest topic, through the registry
    const dlq = await readTopic(`${e2e.topic}.dlq`);
    const dlqCodec = await avroCodec(openRegistry(REGISTRY), `${e2e.topic}.dlq`, 'dead-letter', toDeadLetter);
    const dlqKeys = new Set(dlq.map((m) => m.key));
    assert.equal(dlqKeys.size, audit.dead, 'one dead letter per dead offset (duplicates only after crashes)');
    const firstDead = await dlqCodec.decode(dlq[0].value!);
    assert.ok(firstDead.reason && firstDead.message);
    const manCodec = await avroCodec(openRegistry(REGISTRY), `${e2e.topic}.manifest`, 'shard-manifest', toManifest);
    const manifests = await Promise.all((await readTopic(`${e2e.topic}.manifest`)).map((m) => manCodec.decode(m.value!)));
    assert.equal(new Set(manifests.map((m) => m.shard_uri)).size, audit.shards.length);
    assert.equal(manifests.reduce((a, m) => a + m.rows, 0), audit.rows);
  });

  test('replay of the whole topic into a fresh directory gives the same rows as the live run', async () => {
    assert.ok(e2e.audit, 'needs the live run');
    const out = join(work, 'replay-all');
    ok(await squeeze(['replay', ...service, ...SHAPES, '--topic', e2e.topic, '--from', '0', '--out', out, '--progress', 'off', '--shard-rows', '400', '--idle-ms', '1000']));
    assert.deepEqual(await rowsOf(out), await rowsOf(e2e.out));
  });

  test('replay of an offset range with --state-from reproduces the live rows of that range', async () => {
    assert.ok(e2e.audit, 'needs the live run');
    const high = await highWatermarks(e2e.topic);
    const from = new Map<number, number>();
    for (const p of high.keys()) {
      const commits = await readCommits(e2e.out, e2e.topic, p);
      from.set(p, commits.length > 1 ? commits[1].start_offset : 0);
    }
    const spec = [...from].map(([p, o]) => `${p}:${o}`).join(',');
    const out = join(work, 'replay-range');
    ok(await squeeze(['replay', ...service, ...SHAPES, '--topic', e2e.topic, '--from', spec, '--state-from', e2e.out, '--out', out, '--progress', 'off', '--idle-ms', '1000']));
    const inRange = (rows: string[]) => rows.filter((r) => {
      const [p, o] = r.split('/').map(Number);
      return o >= (from.get(p) ?? 0);
    });
    const replayed = await rowsOf(out);
    assert.ok(replayed.length > 100, `${replayed.length} rows in the range`);
    assert.deepEqual(replayed, inRange(await rowsOf(e2e.out)));
  });

  test('SIGKILL at three or more random moments, restart each time: exact accounting, no uncommitted shard', async () => {
    const topic = `it.crash.${run}`;
    await produce(topic, 3000);
    const out = join(work, 'crash');
    let kills = 0;
    for (let attempt = 0; attempt < 15 && kills < 4; attempt++) {
      const delay = 2500 + Math.floor(Math.random() * 4000);
      const r = await squeeze(curateArgs(topic, out, `g-crash-${run}`, PROTOCOL_ONLY), {
        onStart: (p) => setTimeout(() => p.kill('SIGKILL'), delay),
      });
      if (r.signal === 'SIGKILL') kills++;
      else {
        ok(r);
        break;
      }
    }
    assert.ok(kills >= 3, `killed ${kills} times`);
    ok(await squeeze(curateArgs(topic, out, `g-crash-${run}`, PROTOCOL_ONLY)));
    const high = await highWatermarks(topic);
    const audit = await auditOutput(out, topic, high);
    assert.equal(audit.rows + audit.dead + audit.filtered, 3000);
    // an uninterrupted run in another group writes the same rows
    const clean = join(work, 'crash-clean');
    ok(await squeeze(curateArgs(topic, clean, `g-crash-clean-${run}`, PROTOCOL_ONLY)));
    assert.deepEqual(await rowsOf(out), await rowsOf(clean));
  });

  test('two curators in one group on 6 partitions, one killed mid-stream: the survivor finishes exactly once', async () => {
    const topic = `it.group.${run}`;
    await produce(topic, 3000, 6);
    const out = join(work, 'group');
    const group = `g-group-${run}`;
    let killedA = false;
    const a = squeeze(curateArgs(topic, out, group, ['--shard-rows', '100', ...PROTOCOL_ONLY]), {
      onStart: (p) => {
        const poll = setInterval(() => {
          const committed = existsSync(join(out, '_commits')) ? readdirSync(join(out, '_commits')).length : 0;
          if (committed > 0 && !killedA) {
            // the first shard of 30 is committed: the stream is well under way, kill member A now
            p.kill('SIGKILL');
            killedA = true;
            clearInterval(poll);
          }
        }, 100);
        p.on('exit', () => clearInterval(poll));
      },
    });
    await new Promise((r) => setTimeout(r, 500));
    const b = squeeze(curateArgs(topic, out, group, ['--shard-rows', '100', ...PROTOCOL_ONLY]));
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.signal, 'SIGKILL', 'member A was killed mid-stream');
    ok(rb);
    // Member A can die half-way through a commit for a partition B had already taken over and recovered
    // (A as a zombie): its temporaries stay until that partition is next assigned. The next curator of the
    // group finds nothing to do and cleans them up, as a restart after the rebalance would.
    ok(await squeeze(curateArgs(topic, out, group, ['--shard-rows', '100', ...PROTOCOL_ONLY])));
    const high = await highWatermarks(topic);
    assert.equal(high.size, 6);
    const audit = await auditOutput(out, topic, high);
    assert.equal(audit.rows + audit.dead + audit.filtered, 3000);
  });
  test('curators join and leave mid-stream (graceful SIGTERM): no offset lost or duplicated, each did work', async () => {
    const topic = `it.scale.${run}`;
    const out = join(work, 'scale');
    const group = `g-scale-${run}`;
    await createTopic(topic, 6);
    // three waves of 600 events, each produced while the group has a different membership
    const wave = async (seed: number) => {
      const file = join(work, `wave-${seed}.jsonl`);
      await writeGenJsonl(file, { n: 700, seed, badRate: 0 });
      ok(await squeeze(['produce', ...service, '--topic', topic, '--input', file, '--limit', '600', '--progress', 'off']));
    };
    const committedAll = async () => {
      const high = await highWatermarks(topic);
      let done = 0;
      for (const p of high.keys()) done += (await readCommits(out, topic, p)).reduce((a, c) => a + c.records, 0);
      return done === [...high.values()].reduce((a, b) => a + b, 0) && done > 0;
    };
    const until = async (cond: () => Promise<boolean>, what: string) => {
      const deadline = Date.now() + 240_000;
      while (!(await cond())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    const argsOf = (drain: boolean) => curateArgs(topic, out, group, ['--shard-rows', '50', ...PROTOCOL_ONLY]).filter((a) => drain || a !== '--drain');
    // the group has settled with n members (so the next wave is spread over all of them)
    const members = (n: number) => async () => {
      const admin = kafka().admin();
      await admin.connect();
      try {
        const g = (await admin.describeGroups([group])).groups[0];
        return g?.state === 'Stable' && g.members.length === n && g.members.every((m) => m.memberAssignment.length > 0);
      } finally {
        await admin.disconnect();
      }
    };
    const curated = (r: Ran) => Number(/curated (\d+) events/.exec(r.stdout)?.[1] ?? -1);
    let childA: ChildProcess | null = null;
    let childB: ChildProcess | null = null;
    let childC: ChildProcess | null = null;
    try {
    // wave 1 with A alone (no --drain: members stay until told to leave)
    await wave(31);
    const a = squeeze(argsOf(false), { onStart: (p) => (childA = p) });
    await until(committedAll, 'wave 1 committed by A');
    // B joins; wave 2 is shared by A and B after the rebalance
    const b = squeeze(argsOf(false), { onStart: (p) => (childB = p) });
    await until(members(2), 'A and B in the group');
    await wave(32);
    await until(committedAll, 'wave 2 committed by A and B');
    // A leaves gracefully (its open shards are discarded, what it committed stays); wave 3 goes to B and C
    (childA as ChildProcess | null)!.kill('SIGTERM');
    const ra = await a;
    ok(ra);
    const c = squeeze(argsOf(false), { onStart: (p) => (childC = p) });
    await until(members(2), 'B and C in the group');
    await wave(33);
    await until(committedAll, 'wave 3 committed by B and C');
    (childC as ChildProcess | null)!.kill('SIGTERM');
    (childB as ChildProcess | null)!.kill('SIGTERM');
    const [rb, rc] = await Promise.all([b, c]);
    ok(rb);
    ok(rc);
    for (const [name, r] of [['A', ra], ['B', rb], ['C', rc]] as const) assert.ok(curated(r) > 0, `${name} curated events: ${r.stdout.slice(0, 200)}`);
    } finally {
      // a failed step must not leave members running (they would keep the test process alive)
      for (const p of [childA, childB, childC] as (ChildProcess | null)[]) if (p && p.exitCode === null) p.kill('SIGKILL');
    }
    // nothing left for a fresh member of the group, and every offset is exactly one outcome
    ok(await squeeze(argsOf(true)));
    const high = await highWatermarks(topic);
    const audit = await auditOutput(out, topic, high);
    assert.equal(audit.rows + audit.dead + audit.filtered, 1800);
    const coords = await duckQuery(`SELECT count(*) AS n, count(DISTINCT (source_partition, source_offset)) AS d FROM read_parquet(${sqlQuote(join(out, 'topic=*', 'partition=*', '*.parquet'))})`);
    assert.equal(Number(coords[0]!.n), Number(coords[0]!.d), 'row coordinates are unique');
    assert.equal(Number(coords[0]!.n), audit.rows);
  });
});
