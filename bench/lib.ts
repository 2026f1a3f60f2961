/** Shared bench helpers: run the CLI as a child, sample its memory, print a table, write JSON. */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');
export const RESULTS = join(ROOT, 'bench', 'results');

export interface ChildRun {
  code: number | null;
  seconds: number;
  peakRssMb: number;
  rssSamplesMb: number[];
  stdout: string;
  stderr: string;
}

function rssOf(pid: number): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number((s.match(new RegExp(`${k}:\\s+(\\d+)`)) ?? [0, 0])[1]);
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

/** Runs `squeeze args`, sampling RSS every 250 ms (VmHWM gives the peak between samples). */
export function runSqueeze(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  onTick?: (elapsed: number) => void,
  onStart?: (child: import('node:child_process').ChildProcess) => void,
): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, [join(ROOT, 'bin', 'squeeze.js'), ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    let peak = 0;
    const samples: number[] = [];
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setInterval(() => {
      const m = p.pid ? rssOf(p.pid) : null;
      if (m) {
        peak = Math.max(peak, m.hwm);
        samples.push(Math.round(m.rss));
      }
      onTick?.((performance.now() - t0) / 1000);
    }, 250);
    p.on('error', reject);
    onStart?.(p);
    p.on('exit', (code) => {
      clearInterval(timer);
      resolve({ code, seconds: (performance.now() - t0) / 1000, peakRssMb: Math.round(peak), rssSamplesMb: samples, stdout, stderr });
    });
  });
}

export function table(title: string, rows: Record<string, string | number>[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(width[i])).join(' | ') + ' |';
  console.log(`\n${title}`);
  console.log(line(cols));
  console.log('|' + width.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(cols.map((c) => String(r[c]))));
}

export function writeResult(name: string, data: unknown): string {
  mkdirSync(RESULTS, { recursive: true });
  const file = join(RESULTS, `${name}.json`);
  writeFileSync(file, JSON.stringify({ name, at: new Date().toISOString(), machine: machine(), data }, null, 2));
  return file;
}

export function machine(): Record<string, unknown> {
  const os = require('node:os') as typeof import('node:os');
  return { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memGb: Math.round(os.totalmem() / 2 ** 30), node: process.version };
}

export function committedEvents(stdout: string): number {
  return Number((stdout.match(/curated (\d+) events/) ?? [0, 0])[1]);
}
