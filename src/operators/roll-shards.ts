/**
 * rollShards: groups the batches of each partition into shard-sized chunks. A chunk closes when
 * its rows, bytes or event-time span reach a limit (decided by the records), at the first batch
 * boundary after it has been open for `maxAgeMs` (so a slow steady stream still commits: without it
 * offsets stayed uncommitted until a shard filled), when the partition has been idle for `idleMs`,
 * or on `flush`. Age and idle are the wall-clock boundaries; both are recorded in the commit record.
 * Chunks close on batch boundaries, so the operator-state snapshot taken at the close matches
 * exactly the samples in the chunk. Revoking a partition discards its open chunk.
 *
 * @example
 * merge(curated$.pipe(map(data)), controls$).pipe(rollShards({ maxRows: 1000, ..., snapshot }))
 */
import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import { type Batch, partitionKey, type Sample } from './sample';

export type RollInput =
  | { kind: 'data'; batch: Batch }
  | { kind: 'flush' }
  | { kind: 'revoke'; topic: string; partition: number };

export type CloseReason = 'rows' | 'bytes' | 'span' | 'age' | 'idle' | 'flush';

export interface ShardChunk {
  topic: string;
  partition: number;
  samples: Sample[];
  reason: CloseReason;
  /** operator state for this partition as of the last sample in the chunk */
  state: Record<string, unknown>;
}

export interface RollShardsOptions {
  maxRows: number;
  maxBytes: number;
  maxSpanMs: number;
  /** processing time a shard stays open at most (closes on the next batch boundary); default no limit */
  maxAgeMs?: number;
  idleMs: number;
  snapshot: (topic: string, partition: number) => Record<string, unknown>;
  /** an idle close waits until this is true, so no batch of the partition is half-way through the operators */
  canFlush?: () => boolean;
  scheduler?: SchedulerLike;
}

interface Open {
  topic: string;
  partition: number;
  samples: Sample[];
  rows: number;
  bytes: number;
  minTime: number;
  maxTime: number;
  /** scheduler time of the shard's first batch */
  openedAt: number;
  idle: Subscription | null;
}

/** Bytes a sample adds to a shard: its stored image and text, or the dead letter it becomes. */
export function sampleBytes(s: Sample): number {
  if (s.outcome.kind === 'keep') return (s.image?.bytes.length ?? 0) + s.caption.length * 2 + 256;
  if (s.outcome.kind === 'dead') return Math.min(s.raw?.length ?? 0, 65536) + 256;
  return 64;
}

export function rollShards(options: RollShardsOptions): OperatorFunction<RollInput, ShardChunk> {
  const scheduler = options.scheduler ?? asyncScheduler;
  return (source) =>
    new Observable<ShardChunk>((out) => {
      const open = new Map<string, Open>();

      const close = (key: string, reason: CloseReason): void => {
        const o = open.get(key);
        if (!o) return;
        o.idle?.unsubscribe();
        open.delete(key);
        if (o.samples.length === 0) return;
        const state = options.snapshot(o.topic, o.partition);
        out.next({ topic: o.topic, partition: o.partition, samples: o.samples, reason, state });
      };

      const armIdle = (key: string, o: Open): void => {
        o.idle?.unsubscribe();
        o.idle = scheduler.schedule(function tick() {
          if (options.canFlush && !options.canFlush()) {
            this.schedule(undefined, Math.min(options.idleMs, 100));
            return;
          }
          close(key, 'idle');
        }, options.idleMs);
      };

      const onBatch = (batch: Batch): void => {
        const key = partitionKey(batch.topic, batch.partition);
        let o = open.get(key);
        if (!o) {
          o = { topic: batch.topic, partition: batch.partition, samples: [], rows: 0, bytes: 0, minTime: Infinity, maxTime: -Infinity, openedAt: scheduler.now(), idle: null };
          open.set(key, o);
        }
        for (const s of batch.samples) {
          o.samples.push(s);
          o.bytes += sampleBytes(s);
          if (s.outcome.kind === 'keep') o.rows++;
          const t = s.event?.crawl_time;
          if (t !== undefined && Number.isFinite(t)) {
            o.minTime = Math.min(o.minTime, t);
            o.maxTime = Math.max(o.maxTime, t);
          }
        }
        if (o.rows >= options.maxRows) close(key, 'rows');
        else if (o.bytes >= options.maxBytes) close(key, 'bytes');
        else if (o.maxTime - o.minTime >= options.maxSpanMs) close(key, 'span');
        else if (scheduler.now() - o.openedAt >= (options.maxAgeMs ?? Infinity)) close(key, 'age');
        else armIdle(key, o);
      };

      const sub = source.subscribe({
        next: (input) => {
          if (input.kind === 'data') onBatch(input.batch);
          else if (input.kind === 'flush') for (const key of [...open.keys()]) close(key, 'flush');
          else {
            const key = partitionKey(input.topic, input.partition);
            open.get(key)?.idle?.unsubscribe();
            open.delete(key);
          }
        },
        error: (e) => out.error(e),
        complete: () => {
          for (const key of [...open.keys()]) close(key, 'flush');
          out.complete();
        },
      });
      return () => {
        sub.unsubscribe();
        for (const o of open.values()) o.idle?.unsubscribe();
      };
    });
}
