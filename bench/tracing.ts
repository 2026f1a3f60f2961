/**
 * What tracing costs: `squeeze curate` on the same generated crawl with `--traces none`, with OTLP at the
 * default ratio (0.1) and with every event traced (ratio 1), runs interleaved so machine noise hits all
 * modes alike. Spans go to a receiver in this process that counts and discards them, or to Jaeger when
 * BENCH_TRACING_JAEGER=1 and SQUEEZE_JAEGER_OTLP is set. BENCH_TRACING_EVENTS (default 1500),
 * BENCH_TRACING_ROUNDS (default 3).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeGenJsonl } from '../src/gen';
import { committedEvents, machine, ROOT, table, writeResult } from './lib';
import { runChild } from './throughput';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function benchTracing(): Promise<void> {
  const n = Number(process.env.BENCH_TRACING_EVENTS ?? 1500);
  const rounds = Number(process.env.BENCH_TRACING_ROUNDS ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'bench-tracing-'));
  const input = join(dir, 'crawl.jsonl');
  await writeGenJsonl(input, { n, seed: 42 });

  let spans = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => {
      spans++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const jaeger = process.env.BENCH_TRACING_JAEGER === '1' && process.env.SQUEEZE_JAEGER_OTLP;
  const endpoint = jaeger ? process.env.SQUEEZE_JAEGER_OTLP! : `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const modes: { name: string; args: string[] }[] = [
    { name: 'off', args: ['--traces', 'none'] },
    { name: 'otlp ratio 0.1 (default)', args: ['--traces', 'otlp', '--trace-ratio', '0.1'] },
    { name: 'otlp ratio 1', args: ['--traces', 'otlp', '--trace-ratio', '1'] },
  ];
  const results = new Map<string, { rate: number[]; cpuRate: number[]; posts: number[]; kb: number[] }>();
  try {
    for (let r = 0; r < rounds; r++) {
      for (const m of r % 2 ? [...modes].reverse() : modes) {
        const out = join(dir, `out-${r}-${m.args.join('')}`);
        spans = 0;
        bytes = 0;
        const run = await runChild(
          process.execPath,
          [join(ROOT, 'bin', 'squeeze.js'), 'curate', '--input', input, '--out', out, '--models', 'builtin-shapes', '--progress', 'off', ...m.args],
          { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint },
        );
        if (run.code !== 0) throw new Error(`curate failed (${m.name}): ${run.stderr.split('\n').slice(-3).join(' ')}`);
        const events = committedEvents(run.stdout);
        const entry = results.get(m.name) ?? { rate: [], cpuRate: [], posts: [], kb: [] };
        entry.rate.push(events / run.wall);
        entry.cpuRate.push(events / run.cpu);
        entry.posts.push(spans);
        entry.kb.push(bytes / 1024);
        results.set(m.name, entry);
        rmSync(out, { recursive: true, force: true });
        console.log(`round ${r + 1}/${rounds} ${m.name}: ${(events / run.wall).toFixed(1)} events/s, ${(events / run.cpu).toFixed(1)} events/cpu-s`);
      }
    }
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = median(results.get('off')!.rate);
  const cpuBase = median(results.get('off')!.cpuRate);
  const rows = [...results].map(([name, e]) => ({
    mode: name,
    'events/s (median)': Number(median(e.rate).toFixed(1)),
    'vs off': Number((median(e.rate) / base).toFixed(3)),
    'events/cpu-s (median)': Number(median(e.cpuRate).toFixed(1)),
    'cpu vs off': Number((median(e.cpuRate) / cpuBase).toFixed(3)),
    'OTLP posts': jaeger ? 'jaeger' : Math.round(median(e.posts)),
    'OTLP KiB': jaeger ? 'jaeger' : Math.round(median(e.kb)),
  }));
  table(`tracing cost, ${n} events x ${rounds} rounds, receiver: ${jaeger ? 'Jaeger' : 'in-process sink'}`, rows);
  const file = writeResult('tracing', { date: new Date().toISOString(), machine: machine(), events: n, rounds, receiver: jaeger ? 'jaeger' : 'sink', modes: Object.fromEntries(results), table: rows });
  console.log(`wrote ${file}`);
}
