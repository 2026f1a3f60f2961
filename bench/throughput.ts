/**
 * `npm run bench -- throughput`: Squeeze against the plain Python reference (bench/python/reference.py),
 * side by side in one run, on the same generated JSONL and the same ONNX towers (models/builtin).
 *
 *   1. Python reference: PIL + onnxruntime + pyarrow, in a venv the bench makes from PyPI
 *      (bench/python/requirements.txt; cached under ~/.cache/squeeze-bench, BENCH_PY_VENV to override).
 *   2. Squeeze end to end: `squeeze curate --input FILE --models builtin-shapes`, as a child process.
 *   3. Each stage group of the chain alone, in this process, on the events the previous group produced
 *      (read = JSONL + Avro round trip + event checks, image = the one decode, model = the towers, score,
 *      stateful = dedup + balance + soft-cap, post = condense + enrich, write = shards and commit records).
 *
 * Per core means per CPU second (user + system of the process, from /proc): a run that keeps two cores
 * busy for 10 s spent 20 CPU seconds. Prints a table and writes bench/results/throughput.json.
 * Knobs: BENCH_THROUGHPUT_EVENTS (default 3000), BENCH_SKIP_PYTHON=1.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { from, lastValueFrom, type OperatorFunction, toArray } from 'rxjs';
import { loadConfig, configHash } from '../src/config/config';
import { openModels, openWeights } from '../src/curate/models';
import { curationChain } from '../src/curate/pipeline';
import { writeGenJsonl } from '../src/gen';
import { type Batch, newSample, partitionKey, releaseForSink, type Sample } from '../src/operators/sample';
import { rollShards, type RollInput } from '../src/operators/roll-shards';
import { StateRegistry } from '../src/operators/state';
import { openFileSource } from '../src/streams/files/file-source';
import { avroCodec, openRegistry, toCrawlEvent } from '../src/streams/kafka/registry-codec';
import { ShardSink } from '../src/streams/shards/shard-sink';
import { committedEvents, ROOT, table, writeResult } from './lib';
import { LocalShardStore } from '../src/streams/shards/shard-store';

interface Measured {
  events: number;
  seconds: number;
  cpuSeconds: number;
  peakRssMb: number;
  /** CPU seconds per wall second over the middle 60% of the run */
  steadyCores: number;
}

/** utime + stime of a process in seconds, and its RSS high-water mark, from /proc */
function procStat(pid: number): { cpu: number; hwm: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const tick = 100; // USER_HZ on Linux
    const cpu = (Number(fields[11]) + Number(fields[12])) / tick;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const hwm = Number((status.match(/VmHWM:\s+(\d+)/) ?? [0, 0])[1]) / 1024;
    return { cpu, hwm };
  } catch {
    return null;
  }
}

/** Runs a child, sampling its CPU time and RSS every 100 ms. */
export function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string; wall: number; cpu: number; peakRssMb: number; samples: { t: number; cpu: number }[] }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    let cpu = 0;
    let peak = 0;
    const samples: { t: number; cpu: number }[] = [];
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setInterval(() => {
      const s = p.pid ? procStat(p.pid) : null;
      if (!s) return;
      cpu = s.cpu;
      peak = Math.max(peak, s.hwm);
      samples.push({ t: (performance.now() - t0) / 1000, cpu: s.cpu });
    }, 100);
    p.on('error', reject);
    p.on('exit', (code) => {
      clearInterval(timer);
      resolve({ code, stdout, stderr, wall: (performance.now() - t0) / 1000, cpu, peakRssMb: Math.round(peak), samples });
    });
  });
}

/** CPU seconds per wall second between 20% and 80% of the samples */
function steadyCores(samples: { t: number; cpu: number }[]): number {
  if (samples.length < 10) return NaN;
  const a = samples[Math.floor(samples.length * 0.2)];
  const b = samples[Math.floor(samples.length * 0.8)];
  return (b.cpu - a.cpu) / (b.t - a.t);
}

function pythonVenv(): string {
  const venv = process.env.BENCH_PY_VENV ?? join(homedir(), '.cache', 'squeeze-bench', 'venv');
  const py = join(venv, 'bin', 'python');
  const req = join(ROOT, 'bench', 'python', 'requirements.txt');
  const stamp = join(venv, '.requirements');
  const want = readFileSync(req, 'utf8');
  if (existsSync(py) && existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return py;
  process.stderr.write(`throughput bench: installing the Python reference's packages into ${venv} (pip, from PyPI)\n`);
  mkdirSync(venv, { recursive: true });
  const run = (c: string, a: string[]) => {
    const r = spawnSync(c, a, { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error(`${c} ${a.join(' ')} failed`);
  };
  run('python3', ['-m', 'venv', venv]);
  run(py, ['-m', 'pip', 'install', '--quiet', '-r', req]);
  require('node:fs').writeFileSync(stamp, want);
  return py;
}

async function python(input: string, out: string): Promise<Measured & { rows: number; report: Record<string, unknown> }> {
  const py = pythonVenv();
  // --embed-all: the models see every decoded image, as in Squeeze's chain (its model pass comes before dedup)
  const r = await runChild(py, [join(ROOT, 'bench', 'python', 'reference.py'), '--input', input, '--out', out, '--models', join(ROOT, 'models', 'builtin'), '--embed-all']);
  if (r.code !== 0) throw new Error(`python reference failed: ${r.stderr.slice(-2000)}`);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number> & Record<string, unknown>;
  // the reference times its own loop (imports and model loading excluded, as for Squeeze below)
  return {
    events: report.events as number,
    rows: report.rows as number,
    seconds: report.seconds as number,
    cpuSeconds: r.cpu - ((report.load_cpu_seconds as number | undefined) ?? 0),
    peakRssMb: r.peakRssMb,
    steadyCores: steadyCores(r.samples),
    report,
  };
}

async function squeezeEndToEnd(input: string, out: string): Promise<Measured & { rows: number; startupSeconds: number }> {
  const r = await runChild(process.execPath, [join(ROOT, 'bin', 'squeeze.js'), 'curate', '--input', input, '--out', out, '--fresh', '--progress', 'off', '--models', 'builtin-shapes']);
  if (r.code !== 0) throw new Error(`squeeze curate failed: ${r.stderr.slice(-2000)}`);
  const m = r.stdout.match(/curated (\d+) events in ([\d.]+) s/) ?? r.stderr.match(/curated (\d+) events in ([\d.]+) s/);
  const events = committedEvents(r.stdout) || Number(m?.[1] ?? 0);
  const seconds = Number(m?.[2] ?? r.wall);
  const rows = Number(((r.stdout + r.stderr).match(/rows written\s+(\d+)/) ?? [0, 0])[1]);
  // CPU of start-up (module and model loading) is left out the same way: the share of wall time before curation began
  const startup = Math.max(0, r.wall - seconds);
  const startupCpu = r.samples.filter((s) => s.t <= startup).pop()?.cpu ?? 0;
  return { events, rows, seconds, cpuSeconds: r.cpu - startupCpu, peakRssMb: r.peakRssMb, steadyCores: steadyCores(r.samples.filter((s) => s.t > startup)), startupSeconds: startup };
}

/** Runs `fn` and reports its rate (this process's CPU time: the model workers are threads of it). */
async function timed<T>(name: string, events: number, fn: () => Promise<T>): Promise<{ out: T; row: Record<string, string | number> }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const out = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const cpu = (c.user + c.system) / 1e6;
  return { out, row: { stage: name, seconds: seconds.toFixed(2), events_per_s: Math.round(events / seconds), cores: (cpu / seconds).toFixed(2), events_per_cpu_s: Math.round(events / cpu) } };
}

/** Times one stage group alone over materialised batches. */
const timeAlone = (name: string, batches: Batch[], op: OperatorFunction<Batch, Batch>, events: number) =>
  timed(name, events, () => lastValueFrom(from(batches).pipe(op, toArray())));

async function stagesAlone(input: string, out: string): Promise<Record<string, string | number>[]> {
  const cfg = loadConfig({ flags: { input, out, models: 'builtin-shapes', 'inference': 'worker' } });
  const topic = 'bench';
  const codec = await avroCodec(openRegistry('mock://bench-stages'), topic, 'crawl-event', toCrawlEvent);
  const bundle = await openModels(cfg);
  const weights = openWeights(cfg, bundle);
  const state = new StateRegistry();
  const chain = curationChain(cfg, { decode: codec.decode, fetch: null, state, bundle, weights });
  const key = partitionKey(topic, 0);
  state.restore(key, undefined);
  const rows: Record<string, string | number>[] = [];
  try {
    // source: the file source and the Avro encoding the edge does
    const source = await timed('source (file + Avro encode)', 0, async () => {
      const batches: Batch[] = [];
      let samples: Sample[] = [];
      for await (const r of openFileSource(input, { maxRecordBytes: cfg.limits.maxRecordBytes, maxImageBytes: cfg.limits.maxImageBytes })) {
        const value = r.event ? await codec.encode(r.event) : r.raw;
        samples.push(newSample({ ...r.coord, topic }, value, r.error ?? null));
        if (samples.length >= cfg.batchSize) {
          batches.push({ topic, partition: 0, samples, epoch: 1 });
          samples = [];
        }
      }
      if (samples.length) batches.push({ topic, partition: 0, samples, epoch: 1 });
      return batches;
    });
    const batches = source.out;
    const events = batches.reduce((a, b) => a + b.samples.length, 0);
    const sourceSeconds = Number(source.row.seconds);
    rows.push({ ...source.row, events_per_s: Math.round(events / sourceSeconds), events_per_cpu_s: Math.round((events / sourceSeconds) / Number(source.row.cores)) });
    let cur = batches;
    for (const g of ['read', 'image', 'model', 'score', 'stateful', 'post'] as const) {
      const r = await timeAlone(g, cur, chain.groups[g], events);
      rows.push(r.row);
      cur = r.out;
    }
    // write: roll into shards and commit them (Parquet encoding, fsync, commit records)
    const sink = new ShardSink({ store: new LocalShardStore(out), configHash: configHash(cfg), modelVersion: bundle?.version ?? 'none', embeddings: false, deadLetterBytes: cfg.limits.deadLetterBytes, compression: cfg.shard.compression });
    const inputs: RollInput[] = [...cur.map((batch): RollInput => ({ kind: 'data', batch })), { kind: 'flush' }];
    for (const b of cur) for (const s of b.samples) releaseForSink(s);
    const write = await timed('write', events, async () => {
      const chunks = await lastValueFrom(from(inputs).pipe(rollShards({ ...cfg.shard, snapshot: () => state.snapshot(key) }), toArray()));
      for (const chunk of chunks) await sink.commit(chunk);
    });
    rows.push(write.row);
  } finally {
    await bundle?.close();
  }
  return rows;
}

export async function benchThroughput(): Promise<void> {
  const n = Number(process.env.BENCH_THROUGHPUT_EVENTS ?? 3000);
  const dir = mkdtempSync(join(tmpdir(), 'bench-throughput-'));
  const input = join(dir, 'crawl.jsonl');
  await writeGenJsonl(input, { n, seed: 99 });
  const results: Record<string, unknown> = { events: n };
  const rows: Record<string, string | number>[] = [];
  const show = (name: string, m: Measured & { rows: number }) => ({
    run: name,
    events: m.events,
    rows: m.rows,
    seconds: m.seconds.toFixed(1),
    events_per_s: Math.round(m.events / m.seconds),
    cpu_seconds: m.cpuSeconds.toFixed(1),
    events_per_cpu_s: Math.round(m.events / m.cpuSeconds),
    steady_cores: m.steadyCores.toFixed(2),
    peak_rss_mb: m.peakRssMb,
  });
  let py: Awaited<ReturnType<typeof python>> | null = null;
  if (process.env.BENCH_SKIP_PYTHON !== '1') {
    py = await python(input, join(dir, 'py-out'));
    rows.push(show('python reference', py));
    results.python = py;
  }
  const sq = await squeezeEndToEnd(input, join(dir, 'sq-out'));
  rows.push(show('squeeze curate', sq));
  results.squeeze = sq;
  table(`Throughput on ${n} generated events, models/builtin (same JSONL, same ONNX towers, one run)`, rows);
  const stages = await stagesAlone(input, join(dir, 'stages-out'));
  table('Each stage group alone (this process; in chain order, each on the previous group\'s output)', stages);
  results.stages = stages;
  const slowest = Math.min(...stages.map((r) => Number(r.events_per_s)));
  const e2e = sq.events / sq.seconds;
  const summary: Record<string, string | number>[] = [
    { goal: 'events per CPU second vs python', value: py ? (sq.events / sq.cpuSeconds / (py.events / py.cpuSeconds)).toFixed(2) : 'skipped', target: '>= 2' },
    { goal: 'end to end vs slowest stage alone', value: (e2e / slowest).toFixed(2), target: '>= 0.9' },
    { goal: 'steady-state cores (squeeze)', value: sq.steadyCores.toFixed(2), target: '>= 1.7' },
    { goal: 'peak RSS MB (squeeze)', value: sq.peakRssMb, target: '<= 600' },
  ];
  table('Goals', summary);
  results.summary = summary;
  console.log(`-> ${writeResult('throughput', results)}`);
  rmSync(dir, { recursive: true, force: true });
}
