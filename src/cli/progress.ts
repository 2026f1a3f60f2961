/** Progress on long runs (a live line on a TTY, JSON lines otherwise) and the closing summary. */
import { resolve } from 'node:path';
import type { Config } from '../config/config';
import type { Curator } from '../curate/curator';
import { recordLag } from '../telemetry/telemetry';

export function progressReporter(cfg: Config): (curator: Curator, lag: number | null) => void {
  const mode = cfg.progress === 'auto' ? (process.stderr.isTTY ? 'tty' : 'json') : cfg.progress;
  let last = 0;
  return (c, lag) => {
    if (lag !== null) recordLag(lag);
    const now = Date.now();
    if (mode === 'off' || (mode === 'json' && now - last < 5000)) return;
    last = now;
    const s = c.stats;
    const dropped = Object.entries({ ...s.deadByReason, ...s.filteredByReason })
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    if (mode === 'tty') {
      const lagText = lag === null ? '' : ` lag ${lag}`;
      process.stderr.write(
        `\r\x1b[K${s.committedRecords} events committed (${s.rate().toFixed(0)}/s) rows ${s.rows} dead ${s.dead} filtered ${s.filtered}${lagText} ${dropped}`,
      );
    } else {
      process.stderr.write(
        JSON.stringify({ at: new Date(now).toISOString(), committed: s.committedRecords, per_s: Math.round(s.rate()), rows: s.rows, dead: s.deadByReason, filtered: s.filteredByReason, lag }) + '\n',
      );
    }
  };
}

export function printSummary(cfg: Config, c: Curator): void {
  const s = c.stats;
  if (process.stderr.isTTY) process.stderr.write('\n');
  const out = resolve(cfg.out ?? '.');
  const lines = [
    `squeeze: curated ${s.committedRecords} events in ${((Date.now() - s.startedAt) / 1000).toFixed(1)} s (${s.rate().toFixed(0)} events/s)` +
      (s.resumedRecords ? `, after ${s.resumedRecords} already committed by an earlier run` : ''),
    `  rows written     ${s.rows} in ${s.shards} shards (${(s.shardBytes / 1e6).toFixed(1)} MB) under ${out}/topic=*`,
    `  dead letters     ${s.dead}${fmt(s.deadByReason)} under ${out}/_dlq`,
    `  filtered         ${s.filtered}${fmt(s.filteredByReason)}`,
    `  accounting       ${s.rows} + ${s.dead} + ${s.filtered} = ${s.rows + s.dead + s.filtered} of ${s.committedRecords} events (commit records in ${out}/_commits)`,
  ];
  if (s.fenced) lines.push(`  fenced commits   ${s.fenced} (another curator owned those partitions)`);
  if (s.shardFiles.length) lines.push(`  first shard      ${resolve(out, s.shardFiles[0])}`);
  process.stdout.write(lines.join('\n') + '\n');
}

function fmt(m: Record<string, number>): string {
  const e = Object.entries(m).sort((a, b) => b[1] - a[1]);
  return e.length ? ` (${e.map(([k, v]) => `${k} ${v}`).join(', ')})` : '';
}
