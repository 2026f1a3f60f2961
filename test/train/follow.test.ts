/**
 * The trainer on an object store (the moto server deploy/services.sh runs): the same shards committed to a
 * directory and to s3:// give the same committed sequence, an orphan object is never listed, and training
 * from either ends in the same parameters; `squeeze report` reads both alike. Skips when no S3 server is running.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { BUILTIN_BUNDLE } from '../../src/curate/models';
import { s3Client } from '../../src/streams/shards/object-store';
import { S3ShardStore } from '../../src/streams/shards/s3-shard-store';
import { dirSource, storeSource } from '../../src/train/follow';
import { runTrainer, TRAINER_DEFAULTS, type TrainerOptions } from '../../src/train/trainer';
import { squeeze } from '../helpers/cli';
import { writeTrainShards } from '../helpers/train-shards';

const ENDPOINT = process.env.SQUEEZE_S3_ENDPOINT ?? '';
const skip = ENDPOINT ? false : 'skipped: no S3 server (deploy/services.sh runs moto when pip can install it; SQUEEZE_S3_ENDPOINT)';
for (const [k, v] of Object.entries({ AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' })) process.env[k] ??= v;

const work = mkdtempSync(join(tmpdir(), 'train-s3-'));
const dir = join(work, 'shards');
const bucket = `squeeze-train-${process.pid}-${Date.now()}`;

describe('trainer on an object store', { skip }, () => {
  let store: S3ShardStore;
  before(async () => {
    const client = s3Client({ endpoint: ENDPOINT });
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    store = new S3ShardStore({ bucket, prefix: 'run' }, client);
    const shape = { events: 500, seed: 41, rowsPerShard: 30, partitions: 2, copies: (i: number) => [1, 2, 0, 1][i % 4]! };
    await writeTrainShards({ out: dir, ...shape });
    await writeTrainShards({ out: '', store, ...shape });
    // an object no commit record names (a loser's or a crashed attempt's shard)
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'run/topic=crawl/partition=0/00000000000000000000-00000000000000000029.zz.parquet', Body: 'orphan' }));
  });

  test('the committed sequence on s3:// is the directory\'s, with s3:// paths and no orphan', async () => {
    const local = await dirSource(dir).poll({});
    const remote = await storeSource(store).poll({});
    assert.ok(local.length >= 6, `${local.length} shards`);
    const key = (s: (typeof local)[number]) => `${s.record.partition}/${s.record.start_offset}-${s.record.end_offset}/${s.record.rows}`;
    assert.deepEqual(remote.map(key), local.map(key));
    assert.ok(remote.every((s) => s.path?.startsWith(`s3://${bucket}/run/`) && !s.path.includes('.zz.')));
    const rows = await storeSource(store).readRows(remote[0]!.record.shard!);
    assert.deepEqual(rows.map((r) => r.id), (await dirSource(dir).readRows(local[0]!.record.shard!)).map((r) => r.id));
    // a cursor past the first shard of each partition lists the rest
    const cursor = { 'crawl/0': local.find((s) => s.record.partition === 0)!.record.end_offset + 1 };
    assert.deepEqual((await storeSource(store).poll(cursor)).map(key), (await dirSource(dir).poll(cursor)).map(key));
  });

  test('training from s3:// ends in the parameters training from the directory ends in', async () => {
    const opts = (over: Partial<TrainerOptions>): TrainerOptions => ({
      ...TRAINER_DEFAULTS, from: dir, checkpoints: mkdtempSync(join(work, 'ck-')), bundle: BUILTIN_BUNDLE,
      publishDir: join(work, 'bundles'), evalEvery: 0, batch: 16, until: 8, ...over,
    });
    const a = await runTrainer(opts({}));
    const b = await runTrainer(opts({ from: store.root, source: storeSource(store) }));
    assert.equal(a.step, 8);
    assert.equal(b.step, 8);
    assert.deepEqual(Array.from(b.params.data), Array.from(a.params.data));
  });

  test('squeeze train --shards s3://... trains; a missing bucket is one line', async () => {
    const env = { AWS_ENDPOINT_URL_S3: ENDPOINT, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };
    const ck = mkdtempSync(join(work, 'cli-'));
    const r = await squeeze(['train', '--shards', `s3://${bucket}/run`, '--checkpoints', ck, '--until', '3', '--train-batch', '16', '--progress', 'json'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /"step":3/);
    const bad = await squeeze(['train', '--shards', `s3://no-such-bucket-${process.pid}/run`, '--checkpoints', ck, '--until', '3'], { env });
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  });

  test('squeeze report --input s3://... reads the committed shards as it reads the directory', async () => {
    const env = { AWS_ENDPOINT_URL_S3: ENDPOINT, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' };
    const remote = await squeeze(['report', '--input', `s3://${bucket}/run`, '--out', join(work, 's3.html'), '--n', '4'], { env });
    const local = await squeeze(['report', '--input', dir, '--out', join(work, 'dir.html'), '--n', '4']);
    assert.equal(remote.code, 0, remote.stderr);
    assert.equal(local.code, 0, local.stderr);
    const count = (out: string) => out.match(/(\d+) rows? from (\d+) commit records?/)?.slice(1);
    assert.ok(count(local.stdout), local.stdout);
    assert.deepEqual(count(remote.stdout), count(local.stdout));
  });
});
