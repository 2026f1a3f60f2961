import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseS3Url } from '../streams/shards/object-store';
import { UserError } from './errors';

const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** `--out` is a directory or s3://bucket/prefix; any other URL is a user mistake. */
export function checkOutputUrl(out: string, flag = '--out'): void {
  if (SCHEME.test(out) && !out.startsWith('s3://')) {
    throw new UserError(`${flag} ${out}: the output is a directory or an S3-compatible store (s3://bucket/prefix)`);
  }
  // parses the bucket name now, so a bad one is a usage error
  if (out.startsWith('s3://')) parseOrThrow(out);
}

function parseOrThrow(out: string): void {
  try {
    parseS3Url(out);
  } catch (e) {
    throw new UserError((e as Error).message);
  }
}

export const isObjectStore = (out: string): boolean => out.startsWith('s3://');

export function isEmptyOutput(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).length === 0;
}

/** Deletes an output directory, refusing anything that does not look like one Squeeze wrote. */
export function clearOutput(dir: string): void {
  if (isObjectStore(dir)) throw new UserError(`--fresh deletes directories only; to start over on ${dir}, give a new prefix (or delete it with your store's tools)`);
  if (isEmptyOutput(dir)) return;
  if (!existsSync(join(dir, '_commits'))) {
    throw new UserError(`refusing to delete ${dir}: it has files but no _commits folder, so Squeeze did not write it`);
  }
  rmSync(dir, { recursive: true, force: true });
}
