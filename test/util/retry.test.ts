import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InterruptedError, retryLogger, retryTransient, TransientError } from '../../src/util/retry';

test('a transient failure is retried with growing waits until it succeeds', async () => {
  let calls = 0;
  const waits: number[] = [];
  const v = await retryTransient(async () => {
    if (++calls < 4) throw new TransientError('schema registry', 'connect ECONNREFUSED');
    return 'ok';
  }, { what: 'x', initialMs: 1, maxMs: 4, onRetry: (_e, _a, w) => waits.push(w) });
  assert.equal(v, 'ok');
  assert.equal(calls, 4);
  assert.deepEqual(waits, [1, 2, 4]);
});

test('a permanent failure is not retried', async () => {
  let calls = 0;
  await assert.rejects(retryTransient(async () => {
    calls++;
    throw new Error('schema id 7 not found');
  }, { what: 'x', initialMs: 1 }), /not found/);
  assert.equal(calls, 1);
});

test('a stop interrupts the waiting, and a deadline ends it with the last error', async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 30);
  await assert.rejects(retryTransient(() => Promise.reject(new TransientError('Kafka', 'down')), { what: 'waiting', initialMs: 5, signal: ac.signal }), InterruptedError);
  await assert.rejects(retryTransient(() => Promise.reject(new TransientError('Kafka', 'down')), { what: 'x', initialMs: 5, deadlineMs: 40 }), /Kafka: down/);
});

test('the retry log says a long outage once per interval per key', () => {
  const lines: string[] = [];
  const say = retryLogger(60_000, (l) => lines.push(l));
  for (let i = 0; i < 50; i++) say('decode', `attempt ${i}`);
  say('publish', 'other');
  assert.deepEqual(lines, ['attempt 0', 'other']);
});
