import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { firstValueFrom, of } from 'rxjs';
import { decodeEvent } from '../../../src/operators/decode-event';
import { newSample } from '../../../src/operators/sample';
import { avroCodec, isTransientRegistryError, openRegistry, toCrawlEvent } from '../../../src/streams/kafka/registry-codec';
import { TransientError } from '../../../src/util/retry';
import { bombRecord, MAP_BOMBS } from '../../helpers/avro-bombs';
import { event } from '../../helpers/samples';
import { closedPort } from '../../helpers/ports';

test('map bombs through the codec become schema_error dead letters at once; the valid record beside them decodes', async () => {
  const codec = await avroCodec(openRegistry('mock://bombs'), 'crawl', 'crawl-event', toCrawlEvent);
  const good = await codec.encode({ ...event('good', { image_url: 'https://x.example/a.jpg' }), attrs: { lang: 'en' } });
  const bombs = Object.values(MAP_BOMBS).map((attrs, i) => bombRecord(good, `bomb-${i}`, attrs));
  const samples = [good, ...bombs].map((raw, offset) => newSample({ topic: 'crawl', partition: 0, offset }, raw));
  const t0 = performance.now();
  const out = await firstValueFrom(of({ topic: 'crawl', partition: 0, samples }).pipe(decodeEvent({ decode: codec.decode })));
  assert.ok(performance.now() - t0 < 5000);
  assert.deepEqual(out.samples[0].event?.attrs, { lang: 'en' });
  for (const s of out.samples.slice(1)) {
    assert.equal(s.outcome.kind, 'dead');
    assert.match(s.outcome.kind === 'dead' ? `${s.outcome.reason}: ${s.outcome.message}` : '', /^schema_error: Avro value is malformed .*map block/);
  }
});

test('a transient decode failure fails the batch instead of dead-lettering a valid record', async () => {
  const s = newSample({ topic: 'crawl', partition: 0, offset: 0 }, Buffer.from([0, 0, 0, 0, 1, 2]));
  const decode = () => Promise.reject(new TransientError('schema registry', 'connect ECONNREFUSED'));
  await assert.rejects(firstValueFrom(of({ topic: 'crawl', partition: 0, samples: [s] }).pipe(decodeEvent({ decode }))), TransientError);
  assert.equal(s.outcome.kind, 'keep');
});

test('registry errors: no answer or a 5xx/429 is transient, a 404 (unknown schema id) is permanent', async () => {
  let status = 503;
  const server = createServer((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error_code: status === 404 ? 40403 : status, message: `status ${status}` }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const errorOf = async (u: string): Promise<unknown> => openRegistry(u).getBySubjectAndId('crawl-value', 7).then(() => null, (e: unknown) => e);
  try {
    for (const s of [503, 429, 500]) {
      status = s;
      assert.equal(isTransientRegistryError(await errorOf(url)), true, `HTTP ${s}`);
    }
    status = 404;
    assert.equal(isTransientRegistryError(await errorOf(url)), false, 'HTTP 404');
    status = 422;
    assert.equal(isTransientRegistryError(await errorOf(url)), false, 'HTTP 422');
  } finally {
    server.close();
  }
  assert.equal(isTransientRegistryError(await errorOf(`http://127.0.0.1:${await closedPort()}`)), true, 'connection refused');
  assert.equal(isTransientRegistryError(new Error('invalid union index')), false);
});
