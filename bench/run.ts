/**
 * Benchmarks (never timing assertions in tests): `npm run bench -- [embedded] [rss] [kafka]`.
 *   embedded  curate throughput in events/s from a generated JSONL, embedded mode
 *   rss       peak RSS for 10,000 and 100,000 events (--demo; must not grow with stream length)
 *   kafka     Kafka-mode throughput on a backlog, and lag under a steady produce rate
 *   quality   the vision and text branches on gen data with truth, YOLOX on COCO photos
 *   sampling  noisy share of copies written: sieving against dedup + balance + soft-cap
 *   photos    the default photo bundle on held-out real photos (needs a shared/ data directory)
 *   curation  the same model trained on raw input, sieving and the full chain (held-out recall, tokens, noise)
 *   train     trainer step cost with only the kept patches (FLIP) against every patch
 *   throughput  events per CPU second against a plain Python reference, each stage alone, cores, RSS
 *   scaleout  1, 2 and 3 curators in one group on 6 partitions: events/s, rebalance pause, lag (needs services)
 *   failover  SIGKILL 1 of 2 curators at session timeouts 30 s and 10 s: longest no-commit gap, failover delay (needs services)
 *   tracing   curate throughput with tracing off, OTLP at the default ratio and at ratio 1
 *   objectstore  the same run into a directory and into s3://: events/s and store requests (needs the S3 server)
 * Each prints a table and writes bench/results/<name>.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeGenJsonl } from '../src/gen';
import { benchKafka } from './kafka';
import { benchPhotos } from './photos';
import { benchQuality } from './quality';
import { benchSampling } from './sampling';
import { benchTrain } from './train';
import { benchCuration } from './curation';
import { benchThroughput } from './throughput';
import { benchTracing } from './tracing';
import { benchScaleout } from './scaleout';
import { benchFailover } from './failover';
import { benchObjectStore } from './objectstore';
import { committedEvents, runSqueeze, table, writeResult } from './lib';

/**
 * These benches curate generated events, so they run the bundle that knows them (builtin-shapes) unless
 * BENCH_MODELS names another (none: the chain without model stages; photo: the default photo bundle).
 */
const modelArgs = (): string[] => ['--models', process.env.BENCH_MODELS ?? 'builtin-shapes'];

async function embedded(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-emb-'));
  const input = join(dir, 'crawl.jsonl');
  const n = Number(process.env.BENCH_EVENTS ?? 3000);
  const g0 = performance.now();
  await writeGenJsonl(input, { n, seed: 99 });
  const genSeconds = (performance.now() - g0) / 1000;
  const rows: Record<string, string | number>[] = [];
  for (const batch of [64, 128, 256]) {
    const out = join(dir, `out-${batch}`);
    const r = await runSqueeze(['curate', '--input', input, '--out', out, '--progress', 'off', '--batch-size', String(batch), ...modelArgs()]);
    if (r.code !== 0) throw new Error(r.stderr);
    const events = committedEvents(r.stdout);
    rows.push({ batch_size: batch, events, seconds: r.seconds.toFixed(1), events_per_s: (events / r.seconds).toFixed(0), peak_rss_mb: r.peakRssMb });
  }
  table(`Embedded curate, ${n} generated events from JSONL (generation took ${genSeconds.toFixed(1)} s, ${(n / genSeconds).toFixed(0)} events/s)`, rows);
  console.log(`-> ${writeResult(`embedded${process.env.BENCH_MODELS ? `-models-${process.env.BENCH_MODELS}` : ''}`, { events: n, genSeconds, models: process.env.BENCH_MODELS ?? 'builtin-shapes', runs: rows })}`);
  rmSync(dir, { recursive: true, force: true });
}

async function rss(): Promise<void> {
  const sizes = (process.env.BENCH_RSS_SIZES ?? '10000,100000').split(',').map(Number);
  const rows: Record<string, string | number>[] = [];
  const series: Record<number, number[]> = {};
  for (const n of sizes) {
    const dir = mkdtempSync(join(tmpdir(), 'bench-rss-'));
    const r = await runSqueeze(['curate', '--demo', String(n), '--out', join(dir, 'out'), '--progress', 'off', ...modelArgs()], {}, (s) => {
      if (Math.round(s * 4) % 240 === 0) process.stderr.write(`  rss bench n=${n}: ${s.toFixed(0)} s\n`);
    });
    if (r.code !== 0) throw new Error(r.stderr);
    const half = r.rssSamplesMb.slice(Math.floor(r.rssSamplesMb.length / 2));
    const firstHalf = r.rssSamplesMb.slice(0, Math.floor(r.rssSamplesMb.length / 2));
    series[n] = r.rssSamplesMb.filter((_, i) => i % 20 === 0);
    rows.push({
      events: n,
      seconds: r.seconds.toFixed(0),
      events_per_s: (n / r.seconds).toFixed(0),
      peak_rss_mb: r.peakRssMb,
      mean_rss_first_half_mb: mean(firstHalf),
      mean_rss_second_half_mb: mean(half),
    });
    rmSync(dir, { recursive: true, force: true });
  }
  table('Peak RSS of `squeeze curate --demo N` (generation and curation in one process)', rows);
  console.log(`-> ${writeResult(`rss${process.env.BENCH_MODELS ? `-models-${process.env.BENCH_MODELS}` : ''}`, { models: process.env.BENCH_MODELS ?? 'builtin-shapes', runs: rows, rssSeriesMbEvery5s: series })}`);
}

const mean = (xs: number[]) => (xs.length ? Math.round(xs.reduce((a, b) => a + b, 0) / xs.length) : 0);

async function main(): Promise<void> {
  const which = process.argv.slice(2);
  const all = which.length === 0;
  if (all || which.includes('embedded')) await embedded();
  if (all || which.includes('rss')) await rss();
  if (all || which.includes('quality')) await benchQuality();
  if (all || which.includes('sampling')) await benchSampling();
  if (all || which.includes('photos')) await benchPhotos();
  if (all || which.includes('train')) await benchTrain();
  if (all || which.includes('curation')) await benchCuration();
  if (all || which.includes('throughput')) await benchThroughput();
  if (all || which.includes('tracing')) await benchTracing();
  if (all || which.includes('kafka')) {
    if (!process.env.SQUEEZE_BROKERS || !process.env.SQUEEZE_REGISTRY) {
      console.log('kafka bench skipped: start deploy/services.sh and eval "$(bash deploy/services.sh env)" first');
    } else await benchKafka();
  }
  if (which.includes('scaleout')) {
    if (!process.env.SQUEEZE_BROKERS || !process.env.SQUEEZE_REGISTRY) {
      console.log('scaleout bench skipped: start deploy/services.sh and eval "$(bash deploy/services.sh env)" first');
    } else await benchScaleout();
  }
  if (which.includes('failover')) {
    if (!process.env.SQUEEZE_BROKERS || !process.env.SQUEEZE_REGISTRY) {
      console.log('failover bench skipped: start deploy/services.sh and eval "$(bash deploy/services.sh env)" first');
    } else await benchFailover();
  }
  if (which.includes('objectstore')) {
    if (!process.env.SQUEEZE_S3_ENDPOINT) console.log('objectstore bench skipped: start deploy/services.sh and eval "$(bash deploy/services.sh env)" first');
    else await benchObjectStore();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
