/** `squeeze gen --out FILE --n N [--seed S]`: the synthetic crawl as JSONL. */
import type { Config } from '../config/config';
import { writeGenJsonl } from '../gen';
import { UserError } from './errors';

export async function genCommand(cfg: Config, local: Record<string, string | boolean | undefined>): Promise<number> {
  const n = Number(local.n);
  if (!cfg.out) throw new UserError('--out FILE is required');
  if (!Number.isInteger(n) || n < 1) throw new UserError('--n must be a positive whole number');
  const tty = process.stderr.isTTY;
  const res = await writeGenJsonl(cfg.out, { n, seed: cfg.seed }, (done: number) => {
    if (tty && done % 100 === 0) process.stderr.write(`\r${done}/${n} events`);
  });
  if (tty) process.stderr.write('\n');
  process.stdout.write(`squeeze: wrote ${res.events} events (${(res.bytes / 1e6).toFixed(1)} MB) to ${cfg.out}\n`);
  return 0;
}
