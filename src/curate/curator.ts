/**
 * The curator: one long-lived RxJS pipeline shared by all partitions, fed batch by batch.
 *   batches -> pre stages -> [stateful stages -> post stages -> rollShards] -> ShardSink.commit -> onCommit
 * A few batches may be in the pre stages at once (decoding and the model pass overlap with the
 * rest), but only one is inside the bracketed section, so the state snapshot taken when a shard
 * closes matches exactly the samples in it.
 * `push` waits while too many batches are in flight or too many shards wait to commit: that is the
 * edge's backpressure.
 */
import { type Span, SpanStatusCode } from '@opentelemetry/api';
import { concatMap, filter, from, map, merge, Subject, tap, type SchedulerLike } from 'rxjs';
import { type Config, configHash } from '../config/config';
import type { ImageFetch } from '../operators/fetch-images';
import { rollShards, type RollInput, type ShardChunk } from '../operators/roll-shards';
import { type Batch, newSample, partitionKey, type Rejection, releaseForSink, type Sample } from '../operators/sample';
import { eventChild, linksTo, nowMs, startEventSpan, startLinkedSpan, traceparentOf } from '../telemetry/event-trace';
import { StateRegistry } from '../operators/state';
import type { Coord, CrawlEvent } from '../records';
import { type CommitRecord, FencedError } from '../streams/shards/shard-log';
import { type CommitResult, ShardSink } from '../streams/shards/shard-sink';
import { LocalShardStore } from '../streams/shards/shard-store';
import type { ShardStore } from '../streams/shards/store';
import type { BundleHolder } from './bundle-holder';
import type { MixWeightsStore } from './mix-weights';
import { curationChain } from './pipeline';
import { Stats } from './stats';
import { instruments } from '../telemetry/telemetry';

/** Each sampled event's trace ends at its commit: a commit child span, and the decision on the event span. */
function endEventSpans(traced: Sample[], start: number, shard: string | null, commit: Span | null): void {
  const end = nowMs();
  const links = commit?.isRecording() ? [{ context: commit.spanContext() }] : undefined;
  for (const s of traced) {
    const attrs: Record<string, string> = { 'squeeze.decision': s.outcome.kind };
    if (s.outcome.kind !== 'keep') attrs['squeeze.reason'] = s.outcome.reason;
    if (s.outcome.kind === 'keep' && shard) attrs['squeeze.shard'] = shard;
    eventChild(s.trace!, 'squeeze.commit', start, end, attrs, links);
    s.trace!.setAttributes(s.event ? { ...attrs, 'squeeze.event.id': s.event.id } : attrs);
    s.trace!.end(end);
    s.trace = null;
  }
}

/**
 * One input record as an edge hands it over: wire bytes (Kafka), an event the edge already parsed with
 * the record it came from (files), or a record the edge already rejected.
 */
export interface Inbound {
  coord: Coord;
  /** the record as it arrived: what a dead letter keeps */
  value: Buffer | null;
  /** the event, when the edge parsed it itself (file inputs): no wire decoding */
  event?: CrawlEvent;
  rejected?: Rejection | null;
  /** Kafka record headers (a `traceparent` continues the producer's trace); absent for files */
  headers?: Record<string, string>;
}

export interface CuratorDeps {
  /** wire bytes -> event (Kafka's Avro); absent when the edge hands over parsed events */
  decode?: (bytes: Buffer) => Promise<CrawlEvent>;
  fetch: ImageFetch | null;
  /** the model bundle; null runs without model stages */
  bundle: BundleHolder | null;
  weights: MixWeightsStore;
  /** where shards go (openShardStore(cfg.out)); default: the directory cfg.out */
  store?: ShardStore;
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
  readonly store: ShardStore;
  /** batches pushed and not yet handed to the roller */
  private admitted = 0;
  /** 1 while a batch (or an exclusive action such as a restore) is in the stateful section */
  private statefulBusy = 0;
  private pendingCommits = 0;
  private readonly epochs = new Map<string, number>();
  private readonly maxAdmitted = 3;
  private waiters: (() => void)[] = [];
  private failure: Error | null = null;
  readonly finished: Promise<void>;
  private readonly maxPendingCommits = 2;
  private readonly batchLimit: number;

  constructor(cfg: Config, private readonly deps: CuratorDeps) {
    if (!cfg.out) throw new Error('an output directory (--out) is required');
    this.store = deps.store ?? new LocalShardStore(cfg.out);
    this.batchLimit = Math.max(1, Math.min(cfg.batchSize, cfg.shard.maxRows));
    this.sink = new ShardSink({
      store: this.store,
      configHash: configHash(cfg),
      modelVersion: deps.bundle?.version ?? cfg.modelVersion,
      embeddings: cfg.output.embeddings,
      deadLetterBytes: cfg.limits.deadLetterBytes,
      compression: cfg.shard.compression,
      now: deps.now,
    });
    const chain = curationChain(cfg, { decode: deps.decode, fetch: deps.fetch, state: this.state, bundle: deps.bundle, weights: deps.weights });
    const data$ = this.input$.pipe(
      chain.pre,
      concatMap(async (batch) => {
        await this.until(() => this.statefulBusy === 0);
        this.statefulBusy++;
        return batch;
      }),
      // a batch of a partition revoked (or re-assigned) while it was on its way is dropped here
      filter((batch) => {
        if (batch.epoch === this.epochs.get(partitionKey(batch.topic, batch.partition))) return true;
        this.leave();
        return false;
      }),
      chain.stateful,
      chain.post,
      map((batch): RollInput => {
        for (const s of batch.samples) releaseForSink(s);
        return { kind: 'data', batch };
      }),
      // the roller handles each input synchronously, so leaving here lets the next batch in only after it
      tap(() => this.leave()),
    );
    this.finished = new Promise((resolve, reject) => {
      merge(data$, this.control$)
        .pipe(
          rollShards({
            ...cfg.shard,
            // snapshots are taken only when a shard closes, while no batch is inside the section
            snapshot: (topic, partition) => this.state.snapshot(partitionKey(topic, partition)),
            canFlush: () => this.statefulBusy === 0,
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
    const rec = await this.store.recover(topic, partition);
    const key = partitionKey(topic, partition);
    await this.exclusive(() => {
      this.epochs.set(key, (this.epochs.get(key) ?? 0) + 1);
      this.state.restore(key, rec.state);
    });
    this.stats.restored(topic, partition, rec.commits);
    return rec.nextOffset;
  }

  /** Restores a partition's operator state from another output's commit record (replay with --state-from). */
  async restoreState(topic: string, partition: number, source: ShardStore, record: CommitRecord): Promise<void> {
    const state = record.state ? await source.readState(record.state) : undefined;
    await this.exclusive(() => this.state.restore(partitionKey(topic, partition), state));
  }

  /** Forgets a partition: its open shard is discarded, uncommitted work will be redone by its next owner. */
  async revoke(topic: string, partition: number): Promise<void> {
    const key = partitionKey(topic, partition);
    await this.exclusive(() => {
      this.epochs.set(key, (this.epochs.get(key) ?? 0) + 1);
      this.control$.next({ kind: 'revoke', topic, partition });
      this.state.drop(key);
    });
  }

  /**
   * Feeds records of one partition, in offset order. Resolves when the chain has taken them.
   * Records go in batches of at most `batchSize` and at most `shard.maxRows` records: shards close on batch
   * boundaries, so a Kafka fetch of 500 records no longer makes a 500-record shard when --shard-rows is 30.
   */
  async push(topic: string, partition: number, records: Inbound[]): Promise<void> {
    for (let i = 0; i < records.length; i += this.batchLimit) await this.pushBatch(topic, partition, records.slice(i, i + this.batchLimit));
  }

  private async pushBatch(topic: string, partition: number, records: Inbound[]): Promise<void> {
    if (records.length === 0) return;
    await this.until(() => this.admitted < this.maxAdmitted && this.pendingCommits <= this.maxPendingCommits);
    this.admitted++;
    this.stats.seen(records.length);
    const samples = records.map((r) => {
      const s = newSample(r.coord, r.value, r.rejected ?? null, startEventSpan(r.coord, r.headers, r.headers !== undefined));
      if (r.event && !r.rejected) s.event = r.event;
      return s;
    });
    this.input$.next({ topic, partition, samples, epoch: this.epochs.get(partitionKey(topic, partition)) });
  }

  /** Closes every open shard and waits until all are committed. */
  async flush(): Promise<void> {
    await this.until(() => this.admitted === 0);
    await this.exclusive(() => this.control$.next({ kind: 'flush' }));
    await this.until(() => this.pendingCommits === 0 && this.admitted === 0);
  }

  /** Flushes, then ends the pipeline. */
  async close(): Promise<void> {
    await this.until(() => this.admitted === 0);
    this.input$.complete();
    this.control$.complete();
    await this.finished;
  }

  get backlogged(): boolean {
    return this.pendingCommits > this.maxPendingCommits;
  }

  private async commit(chunk: ShardChunk): Promise<void> {
    const traced = chunk.samples.filter((s) => s.trace);
    const start = nowMs();
    const span = traced.length > 0
      ? startLinkedSpan(`commit ${chunk.topic}`, linksTo(traced.map((s) => s.trace)), { 'messaging.destination.name': chunk.topic, 'messaging.destination.partition.id': String(chunk.partition), 'squeeze.records': chunk.samples.length })
      : null;
    try {
      const result = await this.sink.commit(chunk, span?.isRecording() ? traceparentOf(span.spanContext()) : null);
      this.stats.droppedAt(chunk.samples);
      this.stats.committed(result.record);
      const copies = instruments().copies;
      for (const s of chunk.samples) if (s.outcome.kind === 'keep') copies.record(s.copies);
      endEventSpans(traced, start, result.record.shard, span);
      span?.setAttributes({ 'squeeze.shard': result.record.shard ?? '', 'squeeze.rows': result.record.rows });
      await this.deps.onCommit?.(result);
    } catch (e) {
      span?.recordException(e as Error);
      span?.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      if (!(e instanceof FencedError)) throw e;
      this.stats.fenced++;
      this.deps.onFenced?.(e.topic, e.partition);
    } finally {
      span?.end();
      this.pendingCommits--;
      this.wake();
    }
  }

  /** a batch left the section (handed to the roller, or dropped at the entry) */
  private leave(): void {
    this.statefulBusy--;
    this.admitted--;
    this.wake();
  }

  /** runs `fn` while no batch is in the stateful section */
  private async exclusive(fn: () => void): Promise<void> {
    await this.until(() => this.statefulBusy === 0);
    this.statefulBusy++;
    try {
      fn();
    } finally {
      this.statefulBusy--;
      this.wake();
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
