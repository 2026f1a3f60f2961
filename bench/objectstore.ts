/**
 * Object-store cost: the same embedded run (real photos when a shared data directory is present, else the
 * generated crawl) into a local directory and into s3:// on the S3-compatible server deploy/services.sh runs.
 * Reports events/s side by side and the store requests per commit and per million input events, as the
 * curator's summary counts them (docs/SIZING.md). Needs SQUEEZE_S3_ENDPOINT (eval "$(deploy/services.sh env)").
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { writeGenJsonl } from '../src/gen';
import { s3Client } from '../src/streams/shards/object-store';
import { committedEvents, runSqueeze, table, writeResult } from './lib';

export async function benchObjectStore(): Promise<void> {
  const endpoint = process.env.SQUEEZE_S3_ENDPOINT!;
  const n = Number(process.env.BENCH_EVENTS ?? 3000);
  const models = process.env.BENCH_MODELS ?? 'none';
  // the local server takes any credentials; a real store's come from the environment as usual
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  const env = { AWS_ENDPOINT_URL_S3: endpoint, SQUEEZE_BROKERS: '' };
  const dir = mkdtempSync(join(tmpdir(), 'bench-s3-'));
  const input = join(dir, 'crawl.jsonl');
  await writeGenJsonl(input, { n, seed: 77 });
  const bucket = `bench-${Date.now()}`;
  await s3Client({ endpoint }).send(new CreateBucketCommand({ Bucket: bucket }));
  const rows: Record<string, string | number>[] = [];
  const runs: Record<string, unknown>[] = [];
  for (const [name, out] of [['directory', join(dir, 'out')], ['s3://', `s3://${bucket}/run`]] as const) {
    const r = await runSqueeze(['curate', '--input', input, '--out', out, '--progress', 'off', '--models', models, '--shard-rows', '200'], env);
    if (r.code !== 0) throw new Error(r.stderr);
    const events = committedEvents(r.stdout);
    const shards = Number(/in (\d+) shards?/.exec(r.stdout)?.[1] ?? 0);
    const mb = Number(/shards? \(([\d.]+) MB\)/.exec(r.stdout)?.[1] ?? 0);
    const req: Record<string, number> = {};
    for (const m of (/store requests\s+(.*)/.exec(r.stdout)?.[1] ?? '').matchAll(/(\w+) (\d+)/g)) req[m[1]!] = Number(m[2]);
    const total = Object.values(req).reduce((a, b) => a + b, 0);
    // one commit record per range; ranges with rows carry one shard each (the summary counts shards)
    const commits = req.conditional_put ?? 0;
    rows.push({
      out: name, events, seconds: r.seconds.toFixed(1), events_per_s: (events / r.seconds).toFixed(0), shards, shard_mb: mb,
      commits: commits || '-', requests: total || '-', per_commit: commits ? (total / commits).toFixed(1) : '-',
      per_million_events: total ? Math.round((total / events) * 1e6) : '-',
    });
    runs.push({ out: name, events, seconds: r.seconds, shards, shardMb: mb, requests: req, peakRssMb: r.peakRssMb });
  }
  table(`Embedded curate of ${n} generated events (--models ${models}, --shard-rows 200): directory vs s3:// (moto on this machine)`, rows);
  console.log(`-> ${writeResult('objectstore', { events: n, models, runs })}`);
  rmSync(dir, { recursive: true, force: true });
}
