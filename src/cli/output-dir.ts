import { existsSync, readdirSync } from 'node:fs';

export function isEmptyOutput(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).length === 0;
}
