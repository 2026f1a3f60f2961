/**
 * Fills this process's metrics the way real runs do: an embedded curation of a generated crawl with
 * the shapes bundle (every stage, commits, soft-cap copies, the model version), then the trainer's
 * gauges as `squeeze train` records them (test/train/trainer.test.ts scrapes a real trainer).
 * Telemetry must have been started with a Prometheus port first.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config';
import { curateFiles } from '../../src/curate/run-files';
import { writeGenJsonl } from '../../src/gen';
import { recordLag, recordTrainer } from '../../src/telemetry/telemetry';

export async function curateAndTrainMetrics(seed: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'metrics-run-'));
  await writeGenJsonl(join(dir, 'crawl.jsonl'), { n: 60, seed, badRate: 0.1 });
  await curateFiles(loadConfig({ flags: { input: join(dir, 'crawl.jsonl'), out: join(dir, 'out'), models: 'builtin-shapes', progress: 'off', 'fetch.enabled': false } }));
  recordLag(3);
  recordTrainer('step', 4);
  recordTrainer('loss', 2.1);
  recordTrainer('recall', 0.25, { direction: 't2i', k: '5' });
  recordTrainer('zero_shot', 0.4);
  recordTrainer('published_step', 4, { version: 'builtin-clip-1-t4' });
}
