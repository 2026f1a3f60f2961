/**
 * What exactly-once on object storage needs, checked against the real S3-compatible server that
 * deploy/services.sh runs (moto's server mode), and against tiny local servers for the failure modes a
 * real one does not show on demand: a store that ignores conditional puts, and throttling.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { checkObjectStore, ObjectStoreError, parseS3Url, s3Client } from '../../../src/streams/shards/object-store';
import { squeeze } from '../../helpers/cli';

const ENDPOINT = process.env.SQUEEZE_S3_ENDPOINT ?? '';
const skip = ENDPOINT ? false : 'skipped: no S3 server (deploy/services.sh runs moto when pip can install it; SQUEEZE_S3_ENDPOINT)';
const creds = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' };
for (const [k, v] of Object.entries(creds)) process.env[k] ??= v;

test('s3:// URLs parse into bucket and prefix; bad bucket names are refused', () => {
  assert.deepEqual(parseS3Url('s3://crawl-shards/curated/v1/'), { bucket: 'crawl-shards', prefix: 'curated/v1' });
  assert.deepEqual(parseS3Url('s3://crawl-shards'), { bucket: 'crawl-shards', prefix: '' });
  assert.equal(parseS3Url('/data/out'), null);
  assert.throws(() => parseS3Url('s3://Upper_Case'), ObjectStoreError);
});

test('the real S3 server honours conditional puts, and a missing bucket is one clear error', { skip }, async () => {
  const client = s3Client({ endpoint: ENDPOINT });
  const bucket = `squeeze-it-${Date.now()}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  await checkObjectStore(client, { bucket, prefix: 'out' });
  // the primitive the commit protocol will use: the second writer of a key gets 412
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'commit.json', Body: 'first', IfNoneMatch: '*' }));
  await assert.rejects(client.send(new PutObjectCommand({ Bucket: bucket, Key: 'commit.json', Body: 'second', IfNoneMatch: '*' })), (e: Error & { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 412);
  await assert.rejects(checkObjectStore(client, { bucket: `${bucket}-missing`, prefix: '' }), /bucket squeeze-it-\d+-missing does not exist/);
});

/** a local HTTP endpoint answering S3 requests with `reply` */
async function fakeStore(reply: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; requests: string[]; close: () => void }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => reply(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, close: () => server.close() };
}

test('a store that ignores If-None-Match is refused at start-up, in one line', async () => {
  const store = await fakeStore((_req, res) => res.writeHead(200, { etag: '"x"' }).end());
  try {
    await assert.rejects(checkObjectStore(s3Client({ endpoint: store.url }), { bucket: 'shards', prefix: 'p' }), (e: Error) => e instanceof ObjectStoreError && /ignores conditional puts/.test(e.message) && !e.message.includes('\n'));
    assert.equal(store.requests.filter((r) => r.startsWith('PUT')).length, 2, 'the probe wrote twice');
    assert.ok(store.requests.some((r) => r.startsWith('DELETE')), 'the probe object is removed');
  } finally {
    store.close();
  }
});

test('throttling (503 SlowDown) is retried with backoff a bounded number of times', async () => {
  let n = 0;
  const slowDown = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
  const store = await fakeStore((_req, res) => {
    n++;
    if (n <= 2) res.writeHead(503, { 'content-type': 'application/xml' }).end(slowDown);
    else res.writeHead(200).end();
  });
  const always = await fakeStore((_req, res) => res.writeHead(503, { 'content-type': 'application/xml' }).end(slowDown));
  try {
    const client = s3Client({ endpoint: store.url, maxAttempts: 4 });
    await client.send(new PutObjectCommand({ Bucket: 'shards', Key: 'k', Body: 'x' }));
    assert.equal(n, 3, 'two throttled attempts, then success');
    await assert.rejects(checkObjectStore(s3Client({ endpoint: always.url, maxAttempts: 3 }), { bucket: 'shards', prefix: '' }), /cannot reach the object store/);
    assert.equal(always.requests.length, 3, 'exactly maxAttempts requests, then a clear error');
  } finally {
    store.close();
    always.close();
  }
});

test('--out: other URL schemes, bad bucket names and --fresh on a store are one-line usage errors', async () => {
  for (const [args, want] of [
    [['--out', 'ftp://host/dir'], /^squeeze: error: --out ftp:\/\/host\/dir: the output is a directory or an S3-compatible store/],
    [['--out', 's3://Bad_Bucket/p'], /^squeeze: error: s3:\/\/Bad_Bucket: not a valid bucket name/],
    [['--out', 's3://shards/p', '--fresh'], /^squeeze: error: --fresh deletes directories only/],
  ] as [string[], RegExp][]) {
    const r = await squeeze(['curate', '--demo', '5', ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim(), want);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

test('--out s3:// with a missing bucket or wrong credentials fails at start-up in one line', { skip }, async () => {
  const env = { AWS_ENDPOINT_URL_S3: ENDPOINT, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' };
  const r = await squeeze(['curate', '--demo', '5', '--models', 'none', '--progress', 'off', '--out', 's3://no-such-bucket-here/p'], { env });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr.trim(), /^squeeze: error: s3:\/\/no-such-bucket-here\/p: bucket no-such-bucket-here does not exist$/);
});
