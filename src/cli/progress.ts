/**
 * Progress on long runs (a live line on a TTY, JSON lines otherwise) and the closing summary.
 *
 * A JSON line comes after every commit (at most one a second) and at least every 5 s:
 *   { at, elapsed_s, read, per_s, committed, rows, dead, filtered, lag, input, eta_s }
 * `read`: events taken from the input; `per_s`: events read per second since the previous line;
 * `committed`/`rows`: events and rows in commit records (what a reader of the output sees);
 * `lag` (Kafka): records not yet committed; `input` (files and the demo): how much of the input was
 * read, `{ done, total, unit }`, and `eta_s` the time left at the average rate so far.
 */
import type { Config } from '../config/config';
import type { Curator } from '../curate/curator';
import type { InputMeter } from '../streams/files/file-record';
import { recordLag } from '../telemetry/telemetry';
import { plural } from '../util/plural';

export interface ProgressLine {
  at: string;
  elapsed_s: number;
  read: number;
  per_s: number;
  committed: number;
  rows: number;
  dead: Record<string, number>;
  filtered: Record<string, number>;
  lag: number | null;
  input: { done: number; total: number; unit: InputMeter['unit'] } | null;
  eta_s: number | null;
}

/** The numbers of one progress line; `prev` is the previous line's (read, time) for the rate. */
export function progressLine(c: Curator, lag: number | null, input: InputMeter | null, now: number, prev: { read: number; at: number }): ProgressLine {
  const s = c.stats;
  const elapsed = Math.max(0, now - s.startedAt) / 1000;
  const dt = (now - prev.at) / 1000;
  const fraction = input && input.total > 0 ? Math.min(1, input.done / input.total) : null;
  return {
    at: new Date(now).toISOString(),
    elapsed_s: Math.round(elapsed * 10) / 10,
    read: s.input,
    per_s: dt > 0 ? Math.round((s.input - prev.read) / dt) : 0,
    committed: s.committedRecords,
    rows: s.rows,
    dead: { ...s.deadByReason },
    filtered: { ...s.filteredByReason },
    lag,
    input: input && input.total > 0 ? { done: input.done, total: input.total, unit: input.unit } : null,
    eta_s: fraction !== null && fraction > 0 ? Math.round((elapsed * (1 - fraction)) / fraction) : null,
  };
}

export function progressReporter(cfg: Config, now: () => number = Date.now): (curator: Curator, lag: number | null, input?: InputMeter | null) => void {
  const mode = cfg.progress === 'auto' ? (process.stderr.isTTY ? 'tty' : 'json') : cfg.progress;
  let prev = { read: 0, at: now() };
  let lastCommitted = 0;
  return (c, lag, input = null) => {
    if (lag !== null) recordLag(lag);
    if (mode === 'off') return;
    const t = now();
    const committedNow = c.stats.committedRecords !== lastCommitted;
    // JSON: a line at the first commit, then for new commits at most one a second, else one every 5 s
    const due = (committedNow && (lastCommitted === 0 || t - prev.at >= 1000)) || t - prev.at >= 5000;
    if (mode === 'json' && !due) return;
    const line = progressLine(c, lag, input, t, prev);
    prev = { read: line.read, at: t };
    lastCommitted = line.committed;
    if (mode === 'tty') {
      const dropped = Object.entries({ ...line.dead, ...line.filtered }).map(([k, v]) => `${k}=${v}`).join(' ');
      const where = line.lag !== null ? ` · lag ${line.lag}` : line.input ? ` · ${Math.floor((100 * line.input.done) / line.input.total)}% of input${line.eta_s !== null ? `, ETA ${line.eta_s} s` : ''}` : '';
      process.stderr.write(
        `\r\x1b[K${line.read} read (${line.per_s}/s) · ${line.committed} committed · ${line.rows} rows${where} ${dropped}`,
      );
    } else {
      process.stderr.write(JSON.stringify(line) + '\n');
    }
  };
}

export function printSummary(_cfg: Config, c: Curator): void {
  const s = c.stats;
  if (process.stderr.isTTY) process.stderr.write('\n');
  const out = c.store.uri('.').replace(/\/\.$/, '');
  const lines = [
    `squeeze: curated ${plural(s.committedRecords, 'event')} in ${((Date.now() - s.startedAt) / 1000).toFixed(1)} s (${s.rate().toFixed(0)} events/s)` +
      (s.resumedRecords ? `, after ${s.resumedRecords} already committed by an earlier run` : ''),
    `  rows written     ${s.rows} in ${plural(s.shards, 'shard')} (${(s.shardBytes / 1e6).toFixed(1)} MB) under ${out}/topic=*`,
    `  dead letters     ${s.dead}${fmt(s.deadByReason, s.stagesByReason)} under ${out}/_dlq`,
    `  filtered         ${s.filtered}${fmt(s.filteredByReason, s.stagesByReason)}`,
    `  accounting       ${s.rows} + ${s.dead} + ${s.filtered} = ${s.rows + s.dead + s.filtered} of ${s.committedRecords} events (commit records in ${out}/_commits)`,
  ];
  if (s.fenced) lines.push(`  fenced commits   ${s.fenced} (another curator owned those partitions)`);
  if (s.shardFiles.length) lines.push(`  first shard      ${c.store.uri(s.shardFiles[0])}`);
  // an object store counts its requests (docs/SIZING.md): what the run cost there
  const req = (c.store as { requests?: Record<string, number> }).requests;
  if (req) lines.push(`  store requests   ${Object.entries(req).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  process.stdout.write(lines.join('\n') + '\n');
}

/** "(zero_copies 29 at soft_cap, decode_error 3 at decode_image 2 / embed 1)": counts by reason, with the stages behind them. */
function fmt(m: Record<string, number>, stages: Record<string, Record<string, number>> = {}): string {
  const e = Object.entries(m).sort((a, b) => b[1] - a[1]);
  const at = (reason: string): string => {
    const by = Object.entries(stages[reason] ?? {}).sort((a, b) => b[1] - a[1]);
    if (by.length === 0) return '';
    return by.length === 1 ? ` at ${by[0][0]}` : ` at ${by.map(([st, n]) => `${st} ${n}`).join(' / ')}`;
  };
  return e.length ? ` (${e.map(([k, v]) => `${k} ${v}${at(k)}`).join(', ')})` : '';
}
