import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..', '..');
export const BIN = join(ROOT, 'bin', 'squeeze.js');

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the squeeze CLI as a user would; resolves when it exits. SQUEEZE_* variables of the test
 * process (CI exports the service addresses) are not passed on: tests say what they mean with flags.
 */
export function squeeze(args: string[], opts: { env?: NodeJS.ProcessEnv; onStart?: (p: ChildProcess) => void } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SQUEEZE_')));
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
    opts.onStart?.(p);
  });
}
