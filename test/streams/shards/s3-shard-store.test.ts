/**
 * The object-store commit protocol against the real S3-compatible server deploy/services.sh runs (moto):
 * attempt-unique keys, a conditional put for the record, a fenced loser that deletes its objects, a lost
 * reply that meets its own record, and recovery that deletes what no record names.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { ShardChunk } from '../../../src/operators/roll-shards';
import { s3Client } from '../../../src/streams/shards/object-store';
import { partitionKeys, S3ShardStore } from '../../../src/streams/shards/s3-shard-store';
import { type CommitRecord, FencedError } from '../../../src/streams/shards/shard-log';
import { ShardSink } from '../../../src/streams/shards/shard-sink';
import { duckQuery, sqlQuote } from '../../helpers/duckdb';
import { keptSample } from '../../helpers/samples';
import { RACING_WRITERS } from '../../helpers/racing-writers';

const ENDPOINT = process.env.SQUEEZE_S3_ENDPOINT ?? '';
const skip = ENDPOINT ? false : 'skipped: no S3 server (deploy/services.sh runs moto when pip can install it; SQUEEZE_S3_ENDPOINT)';
for (const [k, v] of Object.entries({ AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' })) process.env[k] ??= v;

const bucket = `squeeze-store-${process.pid}-${Date.now()}`;
let made = false;
async function storeAt(prefix: string, client: S3Client = s3Client({ endpoint: ENDPOINT })): Promise<S3ShardStore> {
  if (!made) await client.send(new CreateBucketCommand({ Bucket: bucket }));
  made = true;
  return new S3ShardStore({ bucket, prefix }, client);
}
const sinkOn = (store: S3ShardStore) =>
  new ShardSink({ store, configHash: 'cfg1', modelVersion: 'm1', deadLetterBytes: 8, compression: 'SNAPPY', now: () => 1_700_000_000_000 });

function chunk(from: number, n: number, partition = 0): ShardChunk {
  const samples = Array.from({ length: n }, (_, i) => keptSample(from + i, { partition }));
  samples[1].outcome = { kind: 'dead', reason: 'decode_error', message: 'broken' };
  samples[1].raw = Buffer.from('0123456789abcdef');
  return { topic: 'crawl', partition, samples, reason: 'rows', state: { op: { n: from + n } } };
}

async function keys(store: S3ShardStore, sub: string): Promise<string[]> {
  const r = await store.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${store.key(sub)}/` }));
  return (r.Contents ?? []).map((o) => o.Key!.slice(store.key(sub).length + 1)).sort();
}

test('a commit places attempt-unique objects and a record that names them; recovery resumes after it', { skip }, async () => {
  const store = await storeAt('basic');
  const { record, manifest } = await sinkOn(store).commit(chunk(0, 5));
  assert.match(record.shard!, /^topic=crawl\/partition=0\/00000000000000000000-00000000000000000004\.[0-9a-z]+\.parquet$/);
  assert.match(record.dead_letters!, /^_dlq\/topic=crawl\/partition=0\/00000000000000000000-00000000000000000004\.[0-9a-z]+\.jsonl$/);
  // one attempt names all three (shard-log.ts rangeFile, the rule of a directory too)
  const attempt = record.shard!.split('.').at(-2);
  assert.equal(record.state, `_state/topic=crawl/partition=0/00000000000000000000-00000000000000000004.${attempt}.json.gz`);
  assert.equal(record.dead_letters!.split('.').at(-2), attempt);
  assert.equal(manifest?.shard_uri, record.shard);
  assert.equal(store.uri(record.shard!), `s3://${bucket}/basic/${record.shard}`);
  assert.deepEqual(await keys(store, partitionKeys('crawl', 0).commits), ['00000000000000000000.json']);
  const dead = (await store.get(record.dead_letters!))!.toString('utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(dead.map((d) => [d.source_offset, d.reason]), [[1, 'decode_error']]);
  await sinkOn(store).commit(chunk(5, 4));
  // a second process sees both records (a fresh store: nothing cached)
  const other = await storeAt('basic');
  const rec = await other.recover('crawl', 0);
  assert.equal(rec.nextOffset, 9);
  assert.deepEqual(rec.state, { op: { n: 9 } });
  assert.deepEqual(rec.commits.map((c) => [c.start_offset, c.end_offset]), [[0, 4], [5, 8]]);
  assert.equal((await other.recover('crawl', 1)).nextOffset, null, 'an untouched partition starts from the beginning');
});

test('two curators racing for one range: one record, the loser is fenced and its objects are gone', { skip }, async () => {
  const a = await storeAt('race');
  const b = await storeAt('race');
  const results = await Promise.allSettled([sinkOn(a).commit(chunk(10, 5)), sinkOn(b).commit(chunk(10, 7))]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r) => r.status === 'rejected');
  assert.equal(won.length, 1, 'exactly one commit wins');
  assert.ok((lost[0] as PromiseRejectedResult).reason instanceof FencedError);
  const winner = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<ShardSink['commit']>>>).value.record;
  const p = partitionKeys('crawl', 0);
  assert.deepEqual(await keys(a, p.shards), [winner.shard!.split('/').pop()]);
  assert.deepEqual(await keys(a, p.state), [winner.state!.split('/').pop()]);
  assert.deepEqual(await keys(a, p.commits), ['00000000000000000010.json']);
  // and a late third attempt is fenced before it writes anything
  await assert.rejects(sinkOn(await storeAt('race')).commit(chunk(10, 3)), FencedError);
  assert.equal((await keys(a, p.shards)).length, 1);
});

test('a conditional put whose reply is lost is retried, meets its own record and counts as committed', { skip }, async () => {
  const client = s3Client({ endpoint: ENDPOINT });
  let dropped = 0;
  // inside the SDK's retry loop: the first conditional put reaches the store, then its reply is "lost"
  client.middlewareStack.add(
    (next) => async (args) => {
      const out = await next(args);
      const input = (args as { input?: { IfNoneMatch?: string; Key?: string } }).input;
      if (input?.IfNoneMatch === '*' && input.Key?.includes('_commits/') && dropped === 0) {
        dropped++;
        throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError', $metadata: {} });
      }
      return out;
    },
    { step: 'deserialize', name: 'loseOneReply' },
  );
  const store = await storeAt('lost-reply', client);
  const { record } = await sinkOn(store).commit(chunk(0, 5));
  assert.equal(dropped, 1, 'the reply was dropped once');
  assert.ok(store.requests.get >= 1, 'the 412 was answered by reading the record');
  assert.deepEqual(await keys(store, partitionKeys('crawl', 0).shards), [record.shard!.split('/').pop()], 'its shard survived');
  assert.equal((await (await storeAt('lost-reply')).recover('crawl', 0)).nextOffset, 5);
});

test('objects no record names: recovery deletes those before the next offset, the next commit those in its range', { skip }, async () => {
  const store = await storeAt('orphans');
  await sinkOn(store).commit(chunk(0, 5));
  const p = partitionKeys('crawl', 0);
  const put = (rel: string) => store.client.send(new PutObjectCommand({ Bucket: bucket, Key: store.key(rel), Body: 'orphan' }));
  await put(`${p.shards}/00000000000000000002-00000000000000000004.deadattempt.parquet`); // inside a committed range
  await put(`${p.shards}/00000000000000000005-00000000000000000007.zombie.parquet`); // a crashed or in-flight attempt
  await put(`${p.state}/00000000000000000005-00000000000000000007.zombie.json.gz`);
  const rec = await (await storeAt('orphans')).recover('crawl', 0);
  assert.equal(rec.nextOffset, 5);
  assert.deepEqual(rec.removed.map((u) => u.split('/').pop()), ['00000000000000000002-00000000000000000004.deadattempt.parquet']);
  assert.equal((await keys(store, p.shards)).length, 2, 'the object at the next offset is left for its commit');
  const { record } = await sinkOn(store).commit(chunk(5, 5));
  assert.deepEqual(await keys(store, p.shards), [
    (await store.readCommits('crawl', 0))[0].shard!.split('/').pop(),
    record.shard!.split('/').pop(),
  ]);
  assert.deepEqual(await keys(store, p.state), (await store.readCommits('crawl', 0)).map((c) => c.state!.split('/').pop()));
});

test('a store that keeps answering 503 SlowDown to the commit record: bounded retries, one-line error, nothing a reader sees; the retry commits', { skip }, async () => {
  const client = s3Client({ endpoint: ENDPOINT, maxAttempts: 3 });
  let throttled = 0;
  let healthy = false;
  // the store answers the record's conditional put with 503 SlowDown (the SDK retries it, then gives up)
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = (args as { input?: { IfNoneMatch?: string; Key?: string } }).input;
      if (!healthy && input?.IfNoneMatch === '*' && input.Key?.includes('_commits/')) {
        throttled++;
        throw Object.assign(new Error('Please reduce your request rate.'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 }, $retryable: { throttling: true } });
      }
      return next(args);
    },
    { step: 'finalizeRequest', name: 'slowDown' },
  );
  const store = await storeAt('slowdown', client);
  const err = await sinkOn(store).commit(chunk(0, 5)).then(() => null, (e: Error) => e);
  assert.ok(err, 'the commit failed');
  assert.equal(throttled, 3, 'three attempts, then the error');
  assert.match(err.message, /_commits\/.*PutObject failed \(HTTP 503\)/);
  assert.equal(err.message.split('\n').length, 1, err.message);
  assert.deepEqual(await (await storeAt('slowdown')).readCommits('crawl', 0), [], 'no commit record: readers see nothing');
  // the curator stops and the range is curated again on restart: the retry commits, and the failed attempt's objects go
  healthy = true;
  const { record } = await sinkOn(await storeAt('slowdown', client)).commit(chunk(0, 5));
  assert.deepEqual(await keys(store, partitionKeys('crawl', 0).shards), [record.shard!.split('/').pop()]);
  assert.deepEqual(await keys(store, partitionKeys('crawl', 0).state), [record.state!.split('/').pop()]);
});

/** A promise with its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

for (const [what, ends] of Object.entries(RACING_WRITERS)) {
  for (const winner of ['A', 'B'] as const) {
    const loser = winner === 'A' ? 'B' : 'A';
    test(`a zombie and the new owner commit one start with ${what}: ${winner}'s record names ${winner}'s objects and state, ${loser}'s go`, { skip }, async () => {
      const prefix = `cross-${what.replace(/\W+/g, '-')}-${winner}`;
      // each writer its own client, held before the conditional put of its record until the test lets it go
      const reached = { A: deferred(), B: deferred() };
      const go = { A: deferred(), B: deferred() };
      const writer = async (tag: 'A' | 'B') => {
        const client = s3Client({ endpoint: ENDPOINT });
        client.middlewareStack.add(
          (next) => async (args) => {
            const input = (args as { input?: { IfNoneMatch?: string; Key?: string } }).input;
            if (input?.IfNoneMatch === '*' && input.Key?.includes('_commits/')) {
              reached[tag].resolve();
              await go[tag].promise;
            }
            return next(args);
          },
          { step: 'initialize', name: 'holdRecord' },
        );
        const [from, to] = ends[tag];
        const sink = new ShardSink({ store: await storeAt(prefix, client), configHash: 'cfg1', modelVersion: tag, deadLetterBytes: 8, compression: 'SNAPPY' });
        return sink.commit({ ...chunk(from, to - from + 1), state: { writer: tag, end: to } });
      };
      // the winner places its objects and stops before its record; the loser places its objects and stops
      // too; the winner creates its record, then the loser's conditional put meets it and is fenced
      const w = writer(winner);
      await Promise.race([reached[winner].promise, w]);
      const l = writer(loser);
      await Promise.race([reached[loser].promise, l]);
      go[winner].resolve();
      const won: CommitRecord = (await w).record;
      go[loser].resolve();
      await assert.rejects(l, FencedError);

      const store = await storeAt(prefix);
      const [from, to] = ends[winner];
      assert.deepEqual(await store.readCommits('crawl', 0), [won]);
      assert.equal(won.end_offset, to);
      // the record's state, shard and dead letters are the winner's
      assert.deepEqual(await store.readState(won.state!), { writer: winner, end: to });
      const local = join(mkdtempSync(join(tmpdir(), 's3-cross-')), 'shard.parquet');
      writeFileSync(local, (await store.get(won.shard!))!);
      const rows = await duckQuery(`SELECT source_offset, model_version FROM read_parquet(${sqlQuote(local)}) ORDER BY 1`);
      const kept = Array.from({ length: to - from + 1 }, (_, i) => from + i).filter((o) => o !== from + 1);
      assert.deepEqual(rows.map((r) => [Number(r.source_offset), r.model_version]), kept.map((o) => [o, winner]));
      assert.equal(JSON.parse((await store.get(won.dead_letters!))!.toString('utf8')).source_offset, from + 1);
      // the fenced loser deleted its objects: only what the record names is left, and recovery finds nothing more
      const p = partitionKeys('crawl', 0);
      const name = (rel: string | null) => rel!.split('/').pop()!;
      assert.deepEqual(
        [await keys(store, p.shards), await keys(store, p.dlq), await keys(store, p.state)],
        [[name(won.shard)], [name(won.dead_letters)], [name(won.state)]],
      );
      const rec = await store.recover('crawl', 0);
      assert.deepEqual(rec.removed, []);
      assert.deepEqual([rec.nextOffset, rec.state], [to + 1, { writer: winner, end: to }]);
    });
  }
}

test('a zombie that puts its objects after the new owner\'s record and dies: the record stays the owner\'s, recovery deletes the zombie\'s objects', { skip }, async () => {
  const owner = sinkOn(await storeAt('cross-crash'));
  let record: CommitRecord | undefined;
  const client = s3Client({ endpoint: ENDPOINT });
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = (args as { input?: { IfNoneMatch?: string; Key?: string; Body?: unknown } }).input;
      // the zombie (10-30) passed its fence check; the new owner commits 10-20 before the zombie's first put
      if (input?.Body !== undefined && !record) record = (await owner.commit({ ...chunk(10, 11), state: { writer: 'B', end: 20 } })).record;
      // and the zombie is killed just before its record
      if (input?.IfNoneMatch === '*') throw new Error('killed');
      return next(args);
    },
    { step: 'initialize', name: 'zombie' },
  );
  await assert.rejects(sinkOn(await storeAt('cross-crash', client)).commit({ ...chunk(10, 21), state: { writer: 'A', end: 30 } }), /killed/);
  assert.ok(record);
  const p = partitionKeys('crawl', 0);
  const store = await storeAt('cross-crash');
  for (const dir of [p.shards, p.dlq, p.state]) assert.equal((await keys(store, dir)).length, 2, `the zombie left an object in ${dir}`);
  const rec = await store.recover('crawl', 0);
  assert.deepEqual([rec.nextOffset, rec.state], [21, { writer: 'B', end: 20 }]);
  assert.equal(rec.removed.length, 3, rec.removed.join(', '));
  const name = (rel: string | null) => rel!.split('/').pop()!;
  assert.deepEqual(
    [await keys(store, p.shards), await keys(store, p.dlq), await keys(store, p.state)],
    [[name(record.shard)], [name(record.dead_letters)], [name(record.state)]],
  );
});
