/**
 * The curator's batching: shards close on batch boundaries, so the batches it makes decide how near a shard
 * comes to --shard-rows.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config';
import { curateFiles } from '../../src/curate/run-files';
import { readCommits } from '../../src/streams/shards/shard-log';

test('small --shard-rows gives shards near that size, not the size of the batches records arrive in', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'curator-'));
  const out = join(dir, 'out');
  // 300 generated events, pushed 300 at a time (one edge batch), 20 rows per shard
  const cfg = loadConfig({ flags: { demo: '300', demoKind: 'generated', out, models: 'none', progress: 'off', batchSize: '300', 'shard.maxRows': '20', 'shard.idleMs': '60000', 'shard.maxAgeMs': '600000' } });
  await curateFiles(cfg);
  const commits = await readCommits(out, 'demo', 0);
  const full = commits.filter((c) => c.close_reason === 'rows');
  assert.ok(full.length >= 4, `${full.length} shards closed on rows`);
  for (const c of full) {
    // it closes at the first batch boundary at or past 20 rows, and a batch holds at most 20 records
    assert.ok(c.rows >= 20 && c.rows < 40, `shard ${c.start_offset}-${c.end_offset} has ${c.rows} rows`);
  }
});
