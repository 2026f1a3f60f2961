/** What happened to every event, from commit records: the numbers progress and the summary print. */
import type { Sample } from '../operators/sample';
import type { CommitRecord } from '../streams/shards/shard-log';
import { instruments, recordModelVersion } from '../telemetry/telemetry';

export class Stats {
  readonly startedAt = Date.now();
  input = 0;
  committedRecords = 0;
  rows = 0;
  dead = 0;
  filtered = 0;
  shards = 0;
  shardBytes = 0;
  fenced = 0;
  resumedRecords = 0;
  readonly deadByReason: Record<string, number> = {};
  readonly filteredByReason: Record<string, number> = {};
  readonly shardFiles: string[] = [];
  /** which stage dropped how many samples, by reason (this run's commits) */
  readonly stagesByReason: Record<string, Record<string, number>> = {};
  /** called after each commit record is counted (progress lines) */
  onCommitted: (() => void) | null = null;

  seen(n: number): void {
    this.input += n;
  }

  committed(r: CommitRecord): void {
    const m = instruments();
    const attrs = { topic: r.topic, partition: r.partition };
    m.committedRecords.add(r.rows, { ...attrs, decision: 'row' });
    m.committedRecords.add(r.dead, { ...attrs, decision: 'dead' });
    m.committedRecords.add(r.filtered, { ...attrs, decision: 'filtered' });
    recordModelVersion(r.model_version);
    m.shardBytes.add(r.shard_bytes, attrs);
    this.committedRecords += r.records;
    this.rows += r.rows;
    this.dead += r.dead;
    this.filtered += r.filtered;
    if (r.shard) {
      this.shards++;
      this.shardBytes += r.shard_bytes;
      if (this.shardFiles.length < 10_000) this.shardFiles.push(r.shard);
    }
    for (const [k, v] of Object.entries(r.dead_by_reason)) this.deadByReason[k] = (this.deadByReason[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.filtered_by_reason)) this.filteredByReason[k] = (this.filteredByReason[k] ?? 0) + v;
    this.onCommitted?.();
  }

  /** Counts the stage behind each dropped sample of a committed chunk. */
  droppedAt(samples: Sample[]): void {
    for (const s of samples) {
      if (s.outcome.kind === 'keep') continue;
      const by = (this.stagesByReason[s.outcome.reason] ??= {});
      const stage = s.outcome.stage ?? 'input';
      by[stage] = (by[stage] ?? 0) + 1;
    }
  }

  restored(_topic: string, _partition: number, commits: CommitRecord[]): void {
    for (const c of commits) this.resumedRecords += c.records;
  }

  rate(): number {
    const s = (Date.now() - this.startedAt) / 1000;
    return s > 0 ? this.committedRecords / s : 0;
  }
}
