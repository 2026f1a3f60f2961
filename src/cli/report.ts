/**
 * `squeeze report --input OUTDIR|s3://... --out FILE.html [--n N]`: reads a curated output (its committed
 * shards, through the one reader of commit records) and writes the HTML report.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Config } from '../config/config';
import { htmlReport, type LearningPoint, type ReportRow } from '../report/html-report';
import { committedAfter } from '../streams/shards/committed';
import type { CommitRecord } from '../streams/shards/shard-log';
import { openShardStore } from '../streams/shards/shard-store';
import { checkOutputUrl, isObjectStore } from './output-dir';
import { plural } from '../util/plural';
import { UserError } from './errors';

export async function reportCommand(cfg: Config, local: Record<string, string | boolean | undefined>): Promise<number> {
  const input = cfg.input;
  if (!input) throw new UserError('--input DIR is required (the --out directory of a curate run)');
  if (!cfg.out) throw new UserError('--out FILE is required (an .html file to write)');
  checkOutputUrl(input, '--input');
  if (!isObjectStore(input) && !existsSync(input)) throw new UserError(`--input ${input}: no such directory`);
  const store = await openShardStore(input, { readOnly: true });
  if (await store.isEmpty()) throw new UserError(`${input} has no commit records (_commits): not a curated output`);
  const gallery = local.n === undefined ? 48 : Number(local.n);
  if (!Number.isInteger(gallery) || gallery < 0) throw new UserError('--n must be a whole number');
  const commits: CommitRecord[] = [];
  const rows: ReportRow[] = [];
  for (const { record: c } of await committedAfter(store)) {
    commits.push(c);
    if (!c.shard) continue;
    for (const r of (await store.readRows(c.shard)) as unknown as (ReportRow & { source_offset: number })[]) {
      // a traced event's trace id, from the commit record (W3C traceparent: version-traceid-spanid-flags)
      const tp = c.traces?.[String(r.source_offset)];
      rows.push(tp ? { ...r, trace_id: tp.split('-')[1] ?? null } : r);
    }
  }
  let learning: LearningPoint[] | undefined;
  if (typeof local.trainer === 'string') {
    const { latestCheckpoint } = await import('../train/checkpoint');
    const ckpt = await latestCheckpoint<{ evals?: LearningPoint[] }>(local.trainer);
    if (!ckpt) throw new UserError(`--trainer ${local.trainer}: no trainer checkpoint there`);
    learning = ckpt.state.evals ?? [];
  }
  writeFileSync(cfg.out, htmlReport({ title: isObjectStore(input) ? input : basename(resolve(input)), commits, rows, gallery, learning, traceUrl: typeof local['trace-url'] === 'string' ? local['trace-url'] : undefined }));
  process.stdout.write(`squeeze: wrote ${cfg.out} (${plural(rows.length, 'row')} from ${plural(commits.length, 'commit record')})\n`);
  return 0;
}
