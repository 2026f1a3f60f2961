/**
 * `squeeze export --shards DIR|s3://... --format webdataset --out DIR [--samples-per-tar N] [--blank]
 * [--follow [--poll-ms MS]]`: the committed rows of a curated output as WebDataset tars (src/export);
 * `--format uids --out FILE.npy`: their DataComp uids, for DataComp's resharder.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/config';
import { plural } from '../util/plural';
import { sleep } from '../util/sleep';
import { UserError } from './errors';
import { checkOutputUrl, isObjectStore } from './output-dir';

export async function exportCommand(cfg: Config, local: Record<string, string | boolean | undefined>, signal?: AbortSignal): Promise<number> {
  const shards = local.shards;
  if (typeof shards !== 'string') throw new UserError('--shards DIR is required: the curated output to export');
  if (!cfg.out) throw new UserError('--out DIR is required: where the tars go');
  if (isObjectStore(cfg.out)) throw new UserError('--out: an export goes to a directory (an s3:// output is not supported yet)');
  const format = local.format ?? 'webdataset';
  if (format !== 'webdataset' && format !== 'uids') throw new UserError(`--format ${String(format)}: the formats are webdataset and uids`);
  const perTar = local['samples-per-tar'] === undefined ? 1000 : Number(local['samples-per-tar']);
  if (!Number.isInteger(perTar) || perTar < 1) throw new UserError('--samples-per-tar must be a whole number >= 1');
  const pollMs = local['poll-ms'] === undefined ? 2000 : Number(local['poll-ms']);
  if (!Number.isInteger(pollMs) || pollMs < 10) throw new UserError('--poll-ms must be a whole number >= 10');
  checkOutputUrl(shards, '--shards');
  if (!isObjectStore(shards) && !existsSync(shards)) throw new UserError(`--shards ${shards}: no such directory`);
  const { openShardStore } = await import('../streams/shards/shard-store');
  const { exportWebDataset } = await import('../export/webdataset');
  const store = await openShardStore(shards, { readOnly: true });
  if (await store.isEmpty()) throw new UserError(`${shards} has no commit records: not a curated output (or nothing is committed yet)`);
  if (format === 'uids') {
    const { exportUids } = await import('../export/uids');
    const r = await exportUids(store, cfg.out);
    process.stdout.write(`squeeze: ${cfg.out}: ${plural(r.uids, 'uid')} (copies as repeats) from ${plural(r.rows, 'row')}\n`);
    return 0;
  }
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  for (;;) {
    const r = await exportWebDataset(store, { out: cfg.out, samplesPerTar: perTar, blank: cfg.condense.blank, log, signal });
    if (!local.follow || signal?.aborted) {
      process.stdout.write(`squeeze: ${cfg.out}: ${plural(r.samples, 'sample')} from ${plural(r.rows, 'row')} in all (${plural(r.written.length, 'new tar')}); manifest.json has --train-data and --train-num-samples\n`);
      return 0;
    }
    await sleep(pollMs, signal);
    if (signal?.aborted) return 0;
  }
}
