import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { test } from 'node:test';
import { sleep } from '../../src/util/sleep';

test('sleeps on one signal leave no abort listeners behind, and an abort ends a sleep at once', async () => {
  const ac = new AbortController();
  for (let i = 0; i < 20; i++) await sleep(1, ac.signal);
  assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
  const long = sleep(60_000, ac.signal);
  assert.equal(getEventListeners(ac.signal, 'abort').length, 1);
  ac.abort();
  await long;
  await sleep(60_000, ac.signal); // already aborted: returns at once
});
