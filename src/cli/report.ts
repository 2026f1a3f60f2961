/** `squeeze report --input OUTDIR --out FILE.html [--n N]`: reads a curated output and writes the HTML report. */
import { existsSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Config } from '../config/config';
import { htmlReport, type LearningPoint, type ReportRow } from '../report/html-report';
import { readParquetRows } from '../streams/parquet-rows';
import { listCommittedPartitions, readCommits, type CommitRecord } from '../streams/shard-log';
import { plural } from '../util/plural';
import { UserError } from './errors';

export async function reportCommand(cfg: Config, local: Record<string, string | boolean | undefined>): Promise<number> {
  const input = cfg.input;
  if (!input) throw new UserError('--input DIR is required (the --out directory of a curate run)');
  if (!cfg.out) throw new UserError('--out FILE is required (an .html file to write)');
  if (!existsSync(join(input, '_commits'))) throw new UserError(`${input} has no commit records (_commits): not a curated output directory`);
  const gallery = local.n === undefined ? 48 : Number(local.n);
  if (!Number.isInteger(gallery) || gallery < 0) throw new UserError('--n must be a whole number');
  const commits: CommitRecord[] = [];
  const rows: ReportRow[] = [];
  for (const { topic, partition } of await listCommittedPartitions(input)) {
    for (const c of await readCommits(input, topic, partition)) {
      commits.push(c);
      if (!c.shard) continue;
      for (const r of (await readParquetRows(join(input, c.shard))) as unknown as (ReportRow & { source_offset: number })[]) {
        // a traced event's trace id, from the commit record (W3C traceparent: version-traceid-spanid-flags)
        const tp = c.traces?.[String(r.source_offset)];
        rows.push(tp ? { ...r, trace_id: tp.split('-')[1] ?? null } : r);
      }
    }
  }
  let learning: LearningPoint[] | undefined;
  if (typeof local.trainer === 'string') {
    const { latestCheckpoint } = await import('../train/checkpoint');
    const ckpt = await latestCheckpoint<{ evals?: LearningPoint[] }>(local.trainer);
    if (!ckpt) throw new UserError(`--trainer ${local.trainer}: no trainer checkpoint there`);
    learning = ckpt.state.evals ?? [];
  }
  writeFileSync(cfg.out, htmlReport({ title: basename(resolve(input)), commits, rows, gallery, learning, traceUrl: typeof local['trace-url'] === 'string' ? local['trace-url'] : undefined }));
  process.stdout.write(`squeeze: wrote ${cfg.out} (${plural(rows.length, 'row')} from ${plural(commits.length, 'commit record')})\n`);
  return 0;
}
