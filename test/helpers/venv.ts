/**
 * A Python venv of a test's own, with the packages it reads Squeeze's output with (pip from PyPI, cached
 * across runs). Returns the venv's python, or null when the venv or the packages cannot be had (offline).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PY_ENV = { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PYTHONDONTWRITEBYTECODE: '1' };

export function pythonWith(dir: string, packages: string[]): string | null {
  const venv = join(dir, 'venv');
  const python = join(venv, 'bin', 'python');
  if (spawnSync('python3', ['-m', 'venv', venv], { encoding: 'utf8', timeout: 60_000 }).status !== 0) return null;
  return pipInstall(python, packages) ? python : null;
}

/** Installs more packages into a venv's python; false when they cannot be had. */
export function pipInstall(python: string, packages: string[], timeoutMs = 300_000): boolean {
  const cache = join(tmpdir(), 'squeeze-pip-cache');
  mkdirSync(cache, { recursive: true });
  return spawnSync(python, ['-m', 'pip', 'install', '--quiet', '--cache-dir', cache, ...packages], { encoding: 'utf8', timeout: timeoutMs, env: PY_ENV }).status === 0;
}
