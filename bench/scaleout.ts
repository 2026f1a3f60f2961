/**
 * Consumer-group scale-out (`npm run bench -- scaleout`, needs deploy/services.sh): 1, 2 and 3 curator
 * processes in one group on a 6-partition topic holding the same generated crawl. One process starts
 * first; the others join after its first commit, so the group rebalances mid-stream as it does when a
 * user scales out. Reported: aggregate and per-process events/s, CPU per process, the longest stretch
 * without any commit after the joins (the rebalance pause), and lag over time (records not yet in a
 * commit record), and events per CPU second of all curators together (what predicts the speed-up on
 * machines with a free core per process, which this 2-core one is not). BENCH_SCALE_EVENTS (default
 * 6000), BENCH_SCALE_THREADS (intra-op threads per process, default 1 so that processes do not
 * oversubscribe the cores), BENCH_SCALE_COUNTS (default 1,2,3),
 * BENCH_SCALE_PIN=1 (pin process i to core i mod cores: one core per process while there are cores).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { writeGenJsonl } from '../src/gen';
import { listCommittedPartitions, readCommits, type CommitRecord } from '../src/streams/shards/shard-log';
import { committedEvents, machine, ROOT, table, writeResult } from './lib';

const BIN = join(ROOT, 'bin', 'squeeze.js');
const SESSION_TIMEOUT_MS = 10_000;

function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return null;
  }
}

interface Member { started: number; exited: number; cpu: number; stdout: string; stderr: string; code: number | null }

/** `core`: pin the process to this CPU (taskset), so that k processes get k cores and nothing else */
function startMember(args: string[], core: number | null): Promise<Member> {
  const started = performance.now();
  const cmd = core === null ? [process.execPath, BIN, ...args] : ['taskset', '-c', String(core), process.execPath, BIN, ...args];
  const p = spawn(cmd[0]!, cmd.slice(1), { cwd: ROOT, env: process.env });
  let stdout = '';
  let stderr = '';
  let cpu = 0;
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => (stderr += d));
  const timer = setInterval(() => {
    const c = p.pid ? cpuSeconds(p.pid) : null;
    if (c !== null) cpu = c;
  }, 200);
  return new Promise((resolve, reject) => {
    p.on('error', reject);
    p.on('exit', (code) => {
      clearInterval(timer);
      resolve({ started, exited: performance.now(), cpu, stdout, stderr, code });
    });
  });
}

async function allCommits(out: string): Promise<CommitRecord[]> {
  const all: CommitRecord[] = [];
  for (const { topic, partition } of await listCommittedPartitions(out).catch(() => [])) all.push(...(await readCommits(out, topic, partition)));
  return all;
}

export async function benchScaleout(): Promise<void> {
  const brokers = process.env.SQUEEZE_BROKERS!;
  const registry = process.env.SQUEEZE_REGISTRY!;
  const n = Number(process.env.BENCH_SCALE_EVENTS ?? 6000);
  const threads = process.env.BENCH_SCALE_THREADS ?? '1';
  const counts = (process.env.BENCH_SCALE_COUNTS ?? '1,2,3').split(',').map(Number);
  // BENCH_SCALE_PIN=1: member i runs on core i mod cores, so 1 process has 1 core and 2 have 2
  const pin = process.env.BENCH_SCALE_PIN === '1';
  const coreOf = (i: number): number | null => (pin ? i % cpus().length : null);
  const dir = mkdtempSync(join(tmpdir(), 'bench-scale-'));
  const crawl = join(dir, 'crawl.jsonl');
  await writeGenJsonl(crawl, { n, seed: 77, badRate: 0 });
  const kafka = new Kafka({ clientId: 'bench-scale', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const service = ['--brokers', brokers, '--registry', registry];
  const rows: Record<string, string | number>[] = [];
  const runs: unknown[] = [];
  let single = 0;
  let singlePerCpu = 0;
  try {
    for (const k of counts) {
      const topic = `bench.scale.${k}.${Date.now()}`;
      await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 6, replicationFactor: 1 }] });
      const pr = await new Promise<number | null>((resolve) => {
        const p = spawn(process.execPath, [BIN, 'produce', ...service, '--topic', topic, '--input', crawl, '--progress', 'off'], { cwd: ROOT, stdio: 'ignore' });
        p.on('exit', resolve);
      });
      if (pr !== 0) throw new Error(`produce failed for ${topic}`);
      const offsets = await admin.fetchTopicOffsets(topic);
      const total = offsets.reduce((a, o) => a + Number(o.high), 0);
      const out = join(dir, `out-${k}`);
      const args = ['curate', ...service, '--models', 'builtin-shapes', '--topic', topic, '--group', `bench-${topic}`, '--out', out, '--drain',
        '--progress', 'off', '--threads', threads, '--session-timeout-ms', String(SESSION_TIMEOUT_MS), '--shard-rows', '100', '--idle-ms', '1000'];
      const t0 = performance.now();
      const members: Promise<Member>[] = [startMember(args, coreOf(0))];
      // lag every 500 ms, from the commit records (what the trainer can read)
      const lag: { t: number; lag: number }[] = [];
      let joinedAt: number | null = null;
      let done = false;
      const sampling = (async () => {
        while (!done) {
          const committed = (await allCommits(out)).reduce((a, c) => a + c.records, 0);
          lag.push({ t: Number(((performance.now() - t0) / 1000).toFixed(1)), lag: total - committed });
          if (joinedAt === null && k > 1 && committed > 0) {
            joinedAt = Date.now();
            for (let i = 1; i < k; i++) members.push(startMember(args, coreOf(i)));
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      })();
      const first = await members[0]!;
      const ended = await Promise.all(members);
      done = true;
      await sampling;
      void first;
      const wall = (Math.max(...ended.map((m) => m.exited)) - t0) / 1000;
      const bad = ended.find((m) => m.code !== 0);
      if (bad) throw new Error(`a curator failed: ${bad.stderr.slice(-500)}`);
      const commits = (await allCommits(out)).sort((a, b) => a.created_at - b.created_at);
      const committed = commits.reduce((a, c) => a + c.records, 0);
      // the longest stretch without a commit once the others joined (the rebalance pause)
      let pause = 0;
      if (joinedAt !== null) {
        const times = [joinedAt, ...commits.map((c) => c.created_at).filter((t) => t >= joinedAt!)];
        for (let i = 1; i < times.length; i++) pause = Math.max(pause, times[i]! - times[i - 1]!);
      }
      const rate = committed / wall;
      if (k === 1) single = rate;
      const per = ended.map((m) => committedEvents(m.stdout) / ((m.exited - m.started) / 1000));
      const cpu = ended.map((m) => m.cpu);
      // events per CPU second of all curators together: constant when scaling out costs nothing, so the
      // ratio to one process is what k processes would reach with k free cores (the broker elsewhere)
      const perCpu = committed / cpu.reduce((a, b) => a + b, 0);
      if (k === 1) singlePerCpu = perCpu;
      rows.push({
        processes: k,
        'events/s (all)': Number(rate.toFixed(1)),
        'vs 1 process': single ? Number((rate / single).toFixed(2)) : '-',
        'events/s per process': per.map((x) => x.toFixed(0)).join(' / '),
        'CPU s per process': cpu.map((x) => x.toFixed(0)).join(' / '),
        'events per CPU s': Number(perCpu.toFixed(1)),
        'CPU efficiency vs 1': singlePerCpu ? Number((perCpu / singlePerCpu).toFixed(2)) : '-',
        'rebalance pause s': joinedAt === null ? '-' : Number((pause / 1000).toFixed(1)),
        'max lag': Math.max(...lag.map((l) => l.lag)),
        'wall s': Number(wall.toFixed(1)),
      });
      runs.push({ processes: k, topic, events: total, committed, wall, perProcess: per, cpu, eventsPerCpuSecond: perCpu, pauseMs: pause, lag, commits: commits.length });
      if (committed !== total) throw new Error(`${committed} of ${total} records committed`);
      await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      rmSync(out, { recursive: true, force: true });
    }
  } finally {
    await admin.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
  table(`consumer-group scale-out, ${n} events on 6 partitions, --threads ${threads}, ${cpus().length} cores${pin ? ', each process pinned to one core' : ''}, session timeout ${SESSION_TIMEOUT_MS / 1000} s`, rows);
  const file = writeResult(pin ? 'scaleout-pinned' : 'scaleout', { pinned: pin, date: new Date().toISOString(), machine: machine(), events: n, threads, sessionTimeoutMs: SESSION_TIMEOUT_MS, table: rows, runs });
  console.log(`wrote ${file}`);
}
