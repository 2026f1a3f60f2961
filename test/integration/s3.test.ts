/**
 * Kafka to an S3-compatible object store (the moto server deploy/services.sh runs): a curator killed with
 * SIGKILL ten or more times while it commits to `--out s3://...`, restarted each time, must account for every
 * offset exactly once and write the rows an uninterrupted run into a local directory writes. The shards are
 * read back over s3:// by DuckDB (httpfs), through the commit records, as a trainer would.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { writeGenJsonl } from '../../src/gen';
import { s3Client } from '../../src/streams/shards/object-store';
import { S3ShardStore } from '../../src/streams/shards/s3-shard-store';
import { auditOutput, auditView, localView, storeView } from '../helpers/accounting';
import { squeeze, type Ran } from '../helpers/cli';
import { duckOnS3, duckQuery, sqlQuote } from '../helpers/duckdb';
import { BROKERS, createTopic, highWatermarks, REGISTRY, servicesAvailable } from '../helpers/kafka';

const ENDPOINT = process.env.SQUEEZE_S3_ENDPOINT ?? '';
const HTTPFS = process.env.SQUEEZE_DUCKDB_HTTPFS ?? '';
const skip = !servicesAvailable()
  ? 'skipped: SQUEEZE_BROKERS/SQUEEZE_REGISTRY not set (run through npm test, which starts deploy/services.sh)'
  : !ENDPOINT || !HTTPFS
    ? 'skipped: no S3 server or no DuckDB httpfs extension (deploy/services.sh installs both from PyPI when it can)'
    : false;

const work = mkdtempSync(join(tmpdir(), 's3-it-'));
const run = `${process.pid}-${Date.now()}`;
const bucket = `squeeze-it-${process.pid}-${Date.now()}`;
const service = ['--brokers', BROKERS, '--registry', REGISTRY];
/** the user's AWS environment, pointed at the local server */
const awsEnv = { AWS_ENDPOINT_URL_S3: ENDPOINT, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };
/** the offset protocol does not depend on the model stages (as in kafka.test.ts) */
const curateArgs = (topic: string, out: string, group: string) => [
  'curate', ...service, '--models', 'none', '--topic', topic, '--group', group, '--out', out, '--drain', '--progress', 'off',
  '--idle-ms', '1000', '--shard-rows', '100', '--session-timeout-ms', '10000',
];
const ok = (r: Ran) => assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr.slice(-2000)}`);

/** the rows as the trainer sees them, from the files the commit records name */
async function rowsOf(files: string[]): Promise<string[]> {
  assert.ok(files.length > 0, 'some shards');
  const rows = await duckQuery(
    `SELECT source_partition, source_offset, id, caption, copies, score FROM read_parquet([${files.map(sqlQuote).join(', ')}]) ORDER BY 1, 2`,
  );
  return rows.map((r) => `${r.source_partition}/${r.source_offset}/${r.id}/${r.caption}/${r.copies}/${r.score}`);
}

describe('Kafka to an object store', { skip }, () => {
  before(async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'test', AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'test' });
    await s3Client({ endpoint: ENDPOINT }).send(new CreateBucketCommand({ Bucket: bucket }));
    await duckOnS3(ENDPOINT, HTTPFS);
  });

  test('--out s3://: SIGKILL ten or more times mid-stream, restart each time: every offset once, the rows of a clean run', async (t) => {
    const topic = `it.s3.${run}`;
    const out = `s3://${bucket}/crash`;
    const group = `g-s3-${run}`;
    await createTopic(topic, 3);
    // a wave of events before each start, so that every start finds work and most are killed in it
    let produced = 0;
    let kills = 0;
    let finished = 0;
    for (let attempt = 0; attempt < 40 && kills < 10; attempt++) {
      const file = join(work, `wave-${attempt}.jsonl`);
      await writeGenJsonl(file, { n: 450, seed: 100 + attempt });
      ok(await squeeze(['produce', ...service, '--topic', topic, '--input', file, '--limit', '400', '--progress', 'off']));
      produced += 400;
      const delay = 2500 + Math.floor(Math.random() * 4000);
      const r = await squeeze(curateArgs(topic, out, group), { env: awsEnv, onStart: (p) => setTimeout(() => p.kill('SIGKILL'), delay) });
      if (r.signal === 'SIGKILL') kills++;
      else {
        ok(r);
        finished++;
      }
    }
    assert.ok(kills >= 10, `killed ${kills} times (${finished} runs finished first)`);
    ok(await squeeze(curateArgs(topic, out, group), { env: awsEnv }));

    const high = await highWatermarks(topic);
    assert.equal([...high.values()].reduce((a, b) => a + b, 0), produced);
    const store = new S3ShardStore({ bucket, prefix: 'crash' }, s3Client({ endpoint: ENDPOINT }));
    const audit = await auditView(storeView(store), topic, high);
    assert.equal(audit.rows + audit.dead + audit.filtered, produced);
    assert.ok(audit.rows > produced / 2, `rows ${audit.rows} of ${produced}`);
    assert.ok(audit.shards.every((s) => s.startsWith(`s3://${bucket}/crash/`)));
    t.diagnostic(`${kills} kills, ${finished} runs finished before their kill; ${produced} offsets: ${audit.rows} rows, ${audit.dead} dead letters, ${audit.filtered} filtered, ${audit.shards.length} shards`);

    // an uninterrupted run into a local directory, in another group, writes the same rows
    const clean = join(work, 'clean');
    ok(await squeeze(curateArgs(topic, clean, `g-s3-clean-${run}`)));
    const local = await auditOutput(clean, topic, high);
    assert.deepEqual(await rowsOf(audit.shards), await rowsOf(local.shards));
  });

  test('replay of the topic into s3:// gives the rows of the live run, and refuses a prefix that holds a run', async () => {
    const topic = `it.s3.${run}`;
    const out = `s3://${bucket}/replay`;
    const args = ['replay', ...service, '--models', 'none', '--topic', topic, '--from', '0', '--out', out, '--progress', 'off', '--shard-rows', '100', '--idle-ms', '1000'];
    ok(await squeeze(args, { env: awsEnv }));
    const high = await highWatermarks(topic);
    const replayed = await auditView(storeView(new S3ShardStore({ bucket, prefix: 'replay' }, s3Client({ endpoint: ENDPOINT }))), topic, high);
    const live = await auditView(storeView(new S3ShardStore({ bucket, prefix: 'crash' }, s3Client({ endpoint: ENDPOINT }))), topic, high);
    assert.deepEqual(await rowsOf(replayed.shards), await rowsOf(live.shards));
    const again = await squeeze(args, { env: awsEnv });
    assert.equal(again.code, 2, 'a usage error');
    assert.match(again.stderr, /already holds commit records/);
    assert.equal(again.stderr.trim().split('\n').length, 1, again.stderr);
  });

  test('replay of an offset range with --state-from s3:// reproduces the live rows of that range', async () => {
    const topic = `it.s3.${run}`;
    const live = new S3ShardStore({ bucket, prefix: 'crash' }, s3Client({ endpoint: ENDPOINT }));
    const high = await highWatermarks(topic);
    const from = new Map<number, number>();
    for (const p of high.keys()) {
      const commits = await live.readCommits(topic, p);
      from.set(p, commits.length > 2 ? commits[2].start_offset : 0);
    }
    const out = join(work, 'replay-range');
    const spec = [...from].map(([p, o]) => `${p}:${o}`).join(',');
    ok(await squeeze(['replay', ...service, '--models', 'none', '--topic', topic, '--from', spec, '--state-from', `s3://${bucket}/crash`, '--out', out, '--progress', 'off', '--shard-rows', '100', '--idle-ms', '1000'], { env: awsEnv }));
    const files: string[] = [];
    for (const p of high.keys()) for (const c of await localView(out).readCommits(topic, p)) if (c.shard) files.push(join(out, c.shard));
    const replayed = await rowsOf(files);
    const liveRows = (await rowsOf((await auditView(storeView(live), topic, high)).shards)).filter((r) => {
      const [p, o] = r.split('/').map(Number);
      return o >= (from.get(p) ?? 0);
    });
    assert.ok(replayed.length > 100, `${replayed.length} rows in the range`);
    assert.deepEqual(replayed, liveRows);
  });
});
