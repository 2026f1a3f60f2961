import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from './errors';

export function isEmptyOutput(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).length === 0;
}

/** Deletes an output directory, refusing anything that does not look like one Squeeze wrote. */
export function clearOutput(dir: string): void {
  if (isEmptyOutput(dir)) return;
  if (!existsSync(join(dir, '_commits'))) {
    throw new UserError(`refusing to delete ${dir}: it has files but no _commits folder, so Squeeze did not write it`);
  }
  rmSync(dir, { recursive: true, force: true });
}
