/**
 * The curator: one long-lived RxJS pipeline shared by all partitions, fed batch by batch.
 *   batches -> curation chain -> rollShards -> ShardSink.commit -> onCommit (edge publishes, commits offsets)
 * At most one batch is inside the chain at a time, so the state snapshot taken when a shard
 * closes matches exactly the samples in it; parallelism comes from within a batch.
 * `push` waits while too many shards are waiting to commit: that is the edge's backpressure.
 */
import { concatMap, from, map, merge, Subject, tap, type SchedulerLike } from 'rxjs';
import { type Config, configHash } from '../config/config';
import type { ImageFetch } from '../operators/fetch-images';
import { rollShards, type RollInput, type ShardChunk } from '../operators/roll-shards';
import { type Batch, newSample, partitionKey } from '../operators/sample';
import { StateRegistry } from '../operators/state';
import type { Coord, CrawlEvent, DeadReason } from '../records';
import { type CommitRecord, FencedError, readState, recoverPartition } from '../streams/shard-log';
import { type CommitResult, ShardSink } from '../streams/shard-sink';
import { curationChain } from './pipeline';
import { Stats } from './stats';

/** One input record as an edge hands it over: wire bytes, or bytes the edge already rejected. */
export interface Inbound {
  coord: Coord;
  value: Buffer | null;
  rejected?: { reason: DeadReason; message: string } | null;
}

export interface CuratorDeps {
  decode: (bytes: Buffer) => Promise<CrawlEvent>;
  fetch: ImageFetch | null;
  /** called in commit order after each commit record exists */
  onCommit?: (result: CommitResult) => Promise<void>;
  /** another curator committed this partition first: the edge must re-assign it */
  onFenced?: (topic: string, partition: number) => void;
  scheduler?: SchedulerLike;
  now?: () => number;
}

export class Curator {
  readonly stats = new Stats();
  private readonly state = new StateRegistry();
  private readonly input$ = new Subject<Batch>();
  private readonly control$ = new Subject<RollInput>();
  private readonly sink: ShardSink;
  private inChain = 0;
  private pendingCommits = 0;
  private waiters: (() => void)[] = [];
  private failure: Error | null = null;
  readonly finished: Promise<void>;
  private readonly maxPendingCommits = 2;

  constructor(private readonly cfg: Config, private readonly deps: CuratorDeps) {
    if (!cfg.out) throw new Error('an output directory (--out) is required');
    this.sink = new ShardSink({
      out: cfg.out,
      configHash: configHash(cfg),
      modelVersion: cfg.modelVersion,
      deadLetterBytes: cfg.limits.deadLetterBytes,
      compression: cfg.shard.compression,
      now: deps.now,
    });
    const data$ = this.input$.pipe(
      curationChain(cfg, { decode: deps.decode, fetch: deps.fetch, state: this.state }),
      map((batch): RollInput => ({ kind: 'data', batch })),
      // the roller handles each input synchronously, so releasing here admits the next batch only after it
      tap(() => this.release()),
    );
    this.finished = new Promise((resolve, reject) => {
      merge(data$, this.control$)
        .pipe(
          rollShards({
            ...cfg.shard,
            snapshot: (topic, partition) => this.state.snapshot(partitionKey(topic, partition)),
            canFlush: () => this.inChain === 0,
            scheduler: deps.scheduler,
          }),
          tap(() => this.pendingCommits++),
          concatMap((chunk) => from(this.commit(chunk))),
        )
        .subscribe({
          error: (e: Error) => {
            this.failure = e;
            this.wake();
            reject(e);
          },
          complete: () => resolve(),
        });
    });
    this.finished.catch(() => undefined);
  }

  /** Recovers a partition from its commit records; returns the first offset to read (null: from the start). */
  async assign(topic: string, partition: number): Promise<number | null> {
    const rec = await recoverPartition(this.cfg.out!, topic, partition);
    await this.exclusive(() => this.state.restore(partitionKey(topic, partition), rec.state));
    this.stats.restored(topic, partition, rec.commits);
    return rec.nextOffset;
  }

  /** Restores a partition's operator state from another output's commit record (replay with --state-from). */
  async restoreState(topic: string, partition: number, dir: string, record: CommitRecord): Promise<void> {
    const state = record.state ? await readState(dir, record.state) : undefined;
    await this.exclusive(() => this.state.restore(partitionKey(topic, partition), state));
  }

  /** Forgets a partition: its open shard is discarded, uncommitted work will be redone by its next owner. */
  async revoke(topic: string, partition: number): Promise<void> {
    await this.exclusive(() => {
      this.control$.next({ kind: 'revoke', topic, partition });
      this.state.drop(partitionKey(topic, partition));
    });
  }

  /** Feeds records of one partition, in offset order. Resolves when the chain has taken them. */
  async push(topic: string, partition: number, records: Inbound[]): Promise<void> {
    if (records.length === 0) return;
    await this.acquire();
    this.stats.seen(records.length);
    const samples = records.map((r) => newSample(r.coord, r.value, r.rejected ?? null));
    this.input$.next({ topic, partition, samples });
  }

  /** Closes every open shard and waits until all are committed. */
  async flush(): Promise<void> {
    await this.exclusive(() => this.control$.next({ kind: 'flush' }));
    await this.until(() => this.pendingCommits === 0 && this.inChain === 0);
  }

  /** Flushes, then ends the pipeline. */
  async close(): Promise<void> {
    await this.until(() => this.inChain === 0);
    this.input$.complete();
    this.control$.complete();
    await this.finished;
  }

  get backlogged(): boolean {
    return this.pendingCommits > this.maxPendingCommits;
  }

  private async commit(chunk: ShardChunk): Promise<void> {
    try {
      const result = await this.sink.commit(chunk);
      this.stats.committed(result.record);
      await this.deps.onCommit?.(result);
    } catch (e) {
      if (!(e instanceof FencedError)) throw e;
      this.stats.fenced++;
      this.deps.onFenced?.(e.topic, e.partition);
    } finally {
      this.pendingCommits--;
      this.wake();
    }
  }

  private async acquire(): Promise<void> {
    await this.until(() => this.inChain === 0 && this.pendingCommits <= this.maxPendingCommits);
    this.inChain++;
  }

  private release(): void {
    this.inChain--;
    this.wake();
  }

  private async exclusive(fn: () => void): Promise<void> {
    await this.until(() => this.inChain === 0);
    this.inChain++;
    try {
      fn();
    } finally {
      this.release();
    }
  }

  private async until(cond: () => boolean): Promise<void> {
    while (!cond()) {
      if (this.failure) throw this.failure;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.failure) throw this.failure;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}
