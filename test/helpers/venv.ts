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
  const cache = join(tmpdir(), 'squeeze-pip-cache');
  mkdirSync(cache, { recursive: true });
  const pip = spawnSync(python, ['-m', 'pip', 'install', '--quiet', '--cache-dir', cache, ...packages], { encoding: 'utf8', timeout: 240_000, env: PY_ENV });
  return pip.status === 0 ? python : null;
}
