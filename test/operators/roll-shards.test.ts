import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestScheduler } from 'rxjs/testing';
import { asyncScheduler, map } from 'rxjs';
import { rollShards, type RollInput, type ShardChunk } from '../../src/operators/roll-shards';
import { batchOf, keptSample } from '../helpers/samples';

const scheduler = () => new TestScheduler((a, b) => assert.deepEqual(a, b));
const offsets = (c: ShardChunk) => c.samples.map((s) => s.coord.offset);
const data = (from: number, n: number, partition = 0): RollInput => ({
  kind: 'data',
  batch: batchOf(Array.from({ length: n }, (_, i) => keptSample(from + i, { partition })), 't', partition),
});

test('closes a shard when the rows limit is reached, on the batch boundary', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold<RollInput>('a b c|', { a: data(0, 2), b: data(2, 2), c: data(4, 1) });
    const out = input.pipe(
      rollShards({ maxRows: 3, maxBytes: 1e9, maxSpanMs: 1e12, idleMs: 1000, snapshot: () => ({ n: 1 }) }),
      map((c) => `${c.reason}:${offsets(c).join(',')}`),
    );
    expectObservable(out).toBe('-x-(y|)', { x: 'rows:0,1,2,3', y: 'flush:4' });
  });
});

test('closes on bytes and on event-time span', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const big: RollInput = { kind: 'data', batch: batchOf([keptSample(0, { bytes: 5000 })]) };
    const t0: RollInput = { kind: 'data', batch: batchOf([keptSample(1, { time: 0 })]) };
    const t1: RollInput = { kind: 'data', batch: batchOf([keptSample(2, { time: 60_000 })]) };
    const out = cold<RollInput>('a b c', { a: big, b: t0, c: t1 }).pipe(
      rollShards({ maxRows: 100, maxBytes: 4000, maxSpanMs: 60_000, idleMs: 1e6, snapshot: () => ({}) }),
      map((c) => `${c.reason}:${offsets(c).join(',')}`),
    );
    expectObservable(out).toBe('a - c', { a: 'bytes:0', c: 'span:1,2' });
  });
});

test('idle flush fires idleMs after the last batch of a partition, in virtual time', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold<RollInput>('a 99ms b 499ms -', { a: data(0, 1), b: data(1, 1) });
    const out = input.pipe(
      rollShards({ maxRows: 100, maxBytes: 1e9, maxSpanMs: 1e12, idleMs: 500, snapshot: () => ({}) }),
      map((c) => `${c.reason}:${offsets(c).join(',')}`),
    );
    // b arrives at 100ms, so the idle close comes at 600ms, not at 500ms
    expectObservable(out).toBe('600ms x', { x: 'idle:0,1' });
  });
});

test('idle flush waits while canFlush is false (a batch is half-way through the operators)', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold<RollInput>('a', { a: data(0, 1) });
    const out = input.pipe(
      rollShards({
        maxRows: 100, maxBytes: 1e9, maxSpanMs: 1e12, idleMs: 500, snapshot: () => ({}),
        // in run mode asyncScheduler keeps virtual time
        canFlush: () => asyncScheduler.now() >= 700,
      }),
      map((c) => c.reason),
    );
    expectObservable(out).toBe('700ms x', { x: 'idle' });
  });
});

test('partitions roll independently and revoke discards the open shard', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold<RollInput>('a b r c|', {
      a: data(0, 2, 0),
      b: data(0, 2, 1),
      r: { kind: 'revoke', topic: 't', partition: 0 },
      c: data(2, 1, 1),
    });
    const out = input.pipe(
      rollShards({ maxRows: 3, maxBytes: 1e9, maxSpanMs: 1e12, idleMs: 1e6, snapshot: (_t, p) => ({ p }) }),
      map((c) => `${c.partition}:${offsets(c).join(',')}:${JSON.stringify(c.state)}`),
    );
    expectObservable(out).toBe('---x|', { x: '1:0,1,2:{"p":1}' });
  });
});

test('a shard open for maxAgeMs closes at the next batch boundary, so a slow steady stream commits', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold<RollInput>('a 99ms b 99ms c 99ms d 99ms e|', { a: data(0, 1), b: data(1, 1), c: data(2, 1), d: data(3, 1), e: data(4, 1) });
    const out = input.pipe(
      rollShards({ maxRows: 100, maxBytes: 1e9, maxSpanMs: 1e12, maxAgeMs: 250, idleMs: 1e6, snapshot: () => ({}) }),
      map((c) => `${c.reason}:${offsets(c).join(',')}`),
    );
    // d arrives at 300ms, the first batch after the shard opened at 0 is 250ms old; e is flushed at completion
    expectObservable(out).toBe('300ms x 100ms (y|)', { x: 'age:0,1,2,3', y: 'flush:4' });
  });
});
