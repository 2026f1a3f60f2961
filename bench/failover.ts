/**
 * Failover after a SIGKILL (`npm run bench -- failover`, needs deploy/services.sh): how long a consumer group
 * of curators goes without a commit when one member dies without leaving the group, for each session
 * timeout in BENCH_FAILOVER_TIMEOUTS (default 30000,10000: the old default and the new one).
 *
 * Per timeout: a fresh 4-partition topic, group and output directory; a producer in this process feeds
 * generated events at BENCH_FAILOVER_RATE events/s (default 100) for the whole scenario; two curators
 * (`--models none --shard-age-ms 1000 --idle-ms 1000 --session-timeout-ms T`, each with its own Kafka
 * client id, so that the group description says which member holds which partitions) share the group.
 * Once both have committed every partition they hold and BENCH_FAILOVER_STEADY_S (default 15) more seconds
 * passed without the assignment changing, member A (the first to start) is SIGKILLed. From the commit
 * records (`created_at`) over the next BENCH_FAILOVER_WATCH_S (default 60) seconds:
 *   longest group gap    the longest stretch with no commit of any partition (kill, commits..., kill + watch)
 *   max failover delay   over the partitions the killed member held (and had committed before the kill),
 *                        the time from the kill to the first commit of that partition after it
 *   partitions moved     how many of those got a commit from the survivor within the watch window
 * Then the survivor gets SIGTERM; every child is killed on the way out whatever happens.
 *
 * The pool of generated events (BENCH_FAILOVER_POOL, default 1000) is sent round and round; the curators
 * run with --no-dedup so repeats are rows like any other and every shard has rows to commit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AssignerProtocol, Kafka, logLevel, type Admin } from 'kafkajs';
import { eventFromJsonLine, writeGenJsonl } from '../src/gen';
import { eventKey } from '../src/cli/produce';
import { avroCodec, openRegistry, toCrawlEvent } from '../src/streams/kafka/registry-codec';
import { listCommittedPartitions, readCommits, type CommitRecord } from '../src/streams/shards/shard-log';
import { machine, ROOT, table, writeResult } from './lib';

const BIN = join(ROOT, 'bin', 'squeeze.js');
const PARTITIONS = 4;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Member {
  name: string;
  clientId: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
  exitCode: number | null | undefined;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** every child this bench started, so that a failure (or Ctrl-C) never leaves one behind */
const children = new Set<ChildProcess>();
function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);

function startMember(name: string, clientId: string, args: string[], dir: string): Member {
  // a config file is the one place a client id can be set, and the id is what describeGroups reports
  const config = join(dir, `${name}.json`);
  writeFileSync(config, JSON.stringify({ kafka: { clientId } }));
  const proc = spawn(process.execPath, [BIN, ...args, '--config', config], { cwd: ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  const m: Member = { name, clientId, proc, exited: null as unknown as Promise<number | null>, exitCode: undefined, signal: null, stdout: '', stderr: '' };
  proc.stdout!.on('data', (d) => (m.stdout += d));
  proc.stderr!.on('data', (d) => (m.stderr = (m.stderr + d).slice(-20_000)));
  m.exited = new Promise((resolve) => {
    proc.on('error', () => {
      children.delete(proc);
      m.exitCode = null;
      resolve(null);
    });
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      m.exitCode = code;
      m.signal = signal;
      resolve(code);
    });
  });
  return m;
}

/** SIGTERM, then SIGKILL if it has not exited after `graceMs` */
async function stopMember(m: Member, graceMs = 20_000): Promise<string> {
  if (m.exitCode !== undefined) return `already exited (${m.exitCode ?? m.signal})`;
  m.proc.kill('SIGTERM');
  const done = await Promise.race([m.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (done) return `exited ${m.exitCode ?? m.signal} on SIGTERM`;
  m.proc.kill('SIGKILL');
  await m.exited;
  return `did not exit within ${graceMs / 1000} s of SIGTERM; SIGKILLed`;
}

async function allCommits(out: string): Promise<CommitRecord[]> {
  const all: CommitRecord[] = [];
  for (const { topic, partition } of await listCommittedPartitions(out).catch(() => [])) {
    all.push(...(await readCommits(out, topic, partition).catch(() => [])));
  }
  return all.sort((a, b) => a.created_at - b.created_at);
}

/** the group's state and, per client id, the partitions of `topic` it holds */
async function assignment(admin: Admin, group: string, topic: string): Promise<{ state: string; byClient: Map<string, number[]> }> {
  const { groups } = await admin.describeGroups([group]);
  const g = groups[0];
  const byClient = new Map<string, number[]>();
  for (const m of g?.members ?? []) {
    const a = m.memberAssignment.length ? AssignerProtocol.MemberAssignment.decode(m.memberAssignment) : null;
    byClient.set(m.clientId, [...(a?.assignment[topic] ?? [])].sort((x, y) => x - y));
  }
  return { state: g?.state ?? 'Unknown', byClient };
}

const key = (byClient: Map<string, number[]>) => JSON.stringify([...byClient.entries()].sort());

interface Producer {
  stop(): Promise<void>;
  sent(): number;
  /** the error that stopped sending, if one did */
  failed(): Error | null;
}

/** sends `rate` events a second (a quarter of them every 250 ms), round and round through `pool` */
async function startProducer(kafka: Kafka, registry: string, topic: string, pool: string[], rate: number): Promise<Producer> {
  const codec = await avroCodec(openRegistry(registry), topic, 'crawl-event', toCrawlEvent);
  const messages: { key: string; value: Buffer }[] = [];
  for (const line of pool) {
    const ev = eventFromJsonLine(line);
    const value = await codec.encode(ev);
    if (value.length < 900_000) messages.push({ key: eventKey(ev), value });
  }
  const producer = kafka.producer();
  await producer.connect();
  let running = true;
  let sent = 0;
  let i = 0;
  let failed: Error | null = null;
  const per = Math.max(1, Math.round(rate / 4));
  const loop = (async () => {
    while (running) {
      const tick = Date.now();
      const batch = [];
      for (let k = 0; k < per; k++) batch.push(messages[i++ % messages.length]!);
      await producer.send({ topic, messages: batch });
      sent += batch.length;
      await sleep(Math.max(0, 250 - (Date.now() - tick)));
    }
  })().catch((e: Error) => {
    failed = e;
  });
  return {
    sent: () => sent,
    failed: () => failed,
    stop: async () => {
      running = false;
      await loop;
      await producer.disconnect().catch(() => undefined);
    },
  };
}

interface Scenario {
  sessionTimeoutMs: number;
  topic: string;
  killedOwned: number[];
  survivorOwned: number[];
  longestGapMs: number;
  gapFrom: number;
  failoverMs: Record<number, number | null>;
  moved: number;
  survivorStop: string;
  produced: number;
  commitsAfterKill: { partition: number; t_s: number }[];
  steadyWaitS: number;
}

async function scenario(kafka: Kafka, admin: Admin, pool: string[], timeoutMs: number, dir: string): Promise<Scenario> {
  const brokers = process.env.SQUEEZE_BROKERS!;
  const registry = process.env.SQUEEZE_REGISTRY!;
  const rate = Number(process.env.BENCH_FAILOVER_RATE ?? 100);
  const steadyS = Number(process.env.BENCH_FAILOVER_STEADY_S ?? 15);
  const watchS = Number(process.env.BENCH_FAILOVER_WATCH_S ?? 60);
  const id = `${timeoutMs}.${Date.now()}`;
  const topic = `bench.failover.${id}`;
  const group = `bench-failover-${id}`;
  const out = join(dir, `out-${timeoutMs}`);
  await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }] });
  let producer: Producer | null = null;
  const members: Member[] = [];
  try {
    producer = await startProducer(kafka, registry, topic, pool, rate);
    const args = ['curate', '--brokers', brokers, '--registry', registry, '--topic', topic, '--group', group, '--out', out,
      '--models', 'none', '--no-dedup', '--shard-age-ms', '1000', '--idle-ms', '1000', '--session-timeout-ms', String(timeoutMs), '--progress', 'off'];
    const a = startMember('a', `failover-a-${process.pid}`, args, dir);
    members.push(a);
    const b = startMember('b', `failover-b-${process.pid}`, args, dir);
    members.push(b);
    const dead = () => members.find((m) => m.exitCode !== undefined);

    // steady: both members hold partitions, each has committed them since the assignment was last seen to
    // change, and then `steadyS` more seconds without the assignment changing
    const t0 = Date.now();
    let seen = '';
    let since = Date.now();
    let committedAll = false;
    for (;;) {
      const d = dead();
      if (d) throw new Error(`curator ${d.name} exited (${d.exitCode ?? d.signal}) before the kill: ${d.stderr.slice(-1500)}`);
      if (producer.failed()) throw new Error(`the producer stopped: ${producer.failed()!.message}`);
      if (Date.now() - t0 > 120_000) throw new Error(`the group did not settle with both members committing within 120 s (last assignment ${seen})`);
      const g = await assignment(admin, group, topic).catch(() => null);
      if (g && g.state === 'Stable' && g.byClient.size === 2 && [...g.byClient.values()].every((ps) => ps.length > 0)) {
        const k = key(g.byClient);
        if (k !== seen) {
          seen = k;
          since = Date.now();
          committedAll = false;
        }
        if (!committedAll) {
          const fresh = new Set((await allCommits(out)).filter((c) => c.created_at >= since).map((c) => c.partition));
          if ([...g.byClient.values()].flat().every((p) => fresh.has(p))) {
            committedAll = true;
            since = Date.now();
          }
        }
        if (committedAll && Date.now() - since >= steadyS * 1000) break;
      } else {
        seen = '';
      }
      await sleep(500);
    }
    const steadyWaitS = (Date.now() - t0) / 1000;
    const owned = await assignment(admin, group, topic);
    const killedOwnedAssigned = owned.byClient.get(a.clientId) ?? [];
    const survivorOwned = owned.byClient.get(b.clientId) ?? [];
    const before = await allCommits(out);
    const kill = Date.now();
    a.proc.kill('SIGKILL');
    await a.exited;
    // the killed member's partitions: those the group gave it that it had committed before the kill
    const committedBefore = new Set(before.filter((c) => c.created_at <= kill).map((c) => c.partition));
    const killedOwned = killedOwnedAssigned.filter((p) => committedBefore.has(p));
    process.stderr.write(`  failover bench, session timeout ${timeoutMs / 1000} s: SIGKILLed member a (partitions ${killedOwned.join(',')}; b holds ${survivorOwned.join(',')}), watching ${watchS} s\n`);
    while (Date.now() - kill < watchS * 1000) {
      if (producer.failed()) throw new Error(`the producer stopped: ${producer.failed()!.message}`);
      if (b.exitCode !== undefined) throw new Error(`the survivor exited (${b.exitCode ?? b.signal}) after the kill: ${b.stderr.slice(-1500)}`);
      await sleep(500);
    }
    const end = kill + watchS * 1000;
    const after = (await allCommits(out)).filter((c) => c.created_at > kill && c.created_at <= end);
    // (a) the longest stretch without any commit in the group, kill .. kill + watch
    const times = [kill, ...after.map((c) => c.created_at), end];
    let longestGapMs = 0;
    let gapFrom = kill;
    for (let i = 1; i < times.length; i++) {
      if (times[i]! - times[i - 1]! > longestGapMs) {
        longestGapMs = times[i]! - times[i - 1]!;
        gapFrom = times[i - 1]!;
      }
    }
    // (b) per partition of the killed member: kill -> first commit of it after the kill (the survivor's)
    const failoverMs: Record<number, number | null> = {};
    for (const p of killedOwned) {
      const first = after.find((c) => c.partition === p);
      failoverMs[p] = first ? first.created_at - kill : null;
    }
    const moved = Object.values(failoverMs).filter((v) => v !== null).length;
    await producer.stop();
    const produced = producer.sent();
    producer = null;
    const survivorStop = await stopMember(b);
    return {
      sessionTimeoutMs: timeoutMs,
      topic,
      killedOwned,
      survivorOwned,
      longestGapMs,
      gapFrom: gapFrom - kill,
      failoverMs,
      moved,
      survivorStop,
      produced,
      commitsAfterKill: after.map((c) => ({ partition: c.partition, t_s: Number(((c.created_at - kill) / 1000).toFixed(2)) })),
      steadyWaitS,
    };
  } finally {
    await producer?.stop();
    for (const m of members) await stopMember(m, 10_000);
    await admin.deleteTopics({ topics: [topic, `${topic}.dlq`, `${topic}.manifest`] }).catch(() => undefined);
    rmSync(out, { recursive: true, force: true });
  }
}

export async function benchFailover(): Promise<void> {
  const brokers = process.env.SQUEEZE_BROKERS!;
  const timeouts = (process.env.BENCH_FAILOVER_TIMEOUTS ?? '30000,10000').split(',').map(Number);
  const poolSize = Number(process.env.BENCH_FAILOVER_POOL ?? 1000);
  const rate = Number(process.env.BENCH_FAILOVER_RATE ?? 100);
  const watchS = Number(process.env.BENCH_FAILOVER_WATCH_S ?? 60);
  const dir = mkdtempSync(join(tmpdir(), 'bench-failover-'));
  const onSignal = () => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const crawl = join(dir, 'crawl.jsonl');
  await writeGenJsonl(crawl, { n: poolSize, seed: 41, badRate: 0 });
  const pool = readFileSync(crawl, 'utf8').split('\n').filter((l) => l.length > 0);
  rmSync(crawl, { force: true });
  const kafka = new Kafka({ clientId: 'bench-failover', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const runs: Scenario[] = [];
  try {
    for (const t of timeouts) runs.push(await scenario(kafka, admin, pool, t, dir));
  } finally {
    await admin.disconnect().catch(() => undefined);
    killAll();
    rmSync(dir, { recursive: true, force: true });
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  const s = (ms: number) => Number((ms / 1000).toFixed(1));
  const rows = runs.map((r) => {
    const delays = Object.values(r.failoverMs);
    const missing = delays.some((d) => d === null);
    const max = Math.max(0, ...delays.map((d) => d ?? 0));
    return {
      'session timeout': `${r.sessionTimeoutMs / 1000} s${r.sessionTimeoutMs === 10_000 ? ' (new default)' : r.sessionTimeoutMs === 30_000 ? ' (before)' : ''}`,
      'longest group gap s': s(r.longestGapMs),
      'max failover delay s': missing ? `> ${watchS}` : s(max),
      'partitions moved': `${r.moved} of ${r.killedOwned.length}`,
    };
  });
  table(`failover after SIGKILL of 1 of 2 curators, ${PARTITIONS} partitions, ${rate} events/s, --models none --shard-age-ms 1000 --idle-ms 1000, gaps over ${watchS} s after the kill, ${cpus().length} cores`, rows);
  for (const r of runs) {
    console.log(`  ${r.sessionTimeoutMs / 1000} s: killed member held ${r.killedOwned.join(',')}, survivor ${r.survivorOwned.join(',')}; ` +
      `failover per partition ${Object.entries(r.failoverMs).map(([p, d]) => `p${p} ${d === null ? '-' : s(d)} s`).join(', ')}; ` +
      `longest gap from +${s(r.gapFrom)} s; survivor ${r.survivorStop}`);
  }
  const file = writeResult('failover', { date: new Date().toISOString(), machine: machine(), partitions: PARTITIONS, rate, watchS, table: rows, runs });
  console.log(`wrote ${file}`);
}
