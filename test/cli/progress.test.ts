import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { progressLine, type ProgressLine } from '../../src/cli/progress';
import type { Curator } from '../../src/curate/curator';
import { Stats } from '../../src/curate/stats';
import { writeGenJsonl } from '../../src/gen';
import { squeeze } from '../helpers/cli';

test('a multi-shard run reports committed rows while it runs, with the input read so far and an ETA', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'progress-'));
  const input = join(dir, 'crawl.jsonl');
  await writeGenJsonl(input, { n: 300, seed: 5 });
  const ran = await squeeze(['curate', '--input', input, '--out', join(dir, 'out'), '--models', 'none', '--progress', 'json', '--shard-rows', '30', '--batch-size', '32']);
  assert.equal(ran.code, 0, ran.stderr);
  const lines = ran.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as ProgressLine);
  // the first commit always gets a line, so a run of many shards shows one before it ends
  const during = lines.filter((l) => l.committed > 0 && l.committed < 300);
  assert.ok(during.length > 0, `a line with 0 < committed < 300: ${ran.stderr}`);
  const l = during[0];
  assert.ok(l.rows > 0 && l.rows <= l.committed, `rows ${l.rows}`);
  assert.ok(l.read >= l.committed, 'read counts events taken from the input, committed ones included');
  assert.deepEqual([l.input?.unit, l.input?.total], ['bytes', statSync(input).size]);
  assert.ok(l.input!.done > 0 && l.input!.done <= l.input!.total);
  assert.equal(typeof l.eta_s, 'number');
  assert.equal(l.lag, null);
  // committed never goes backwards
  for (let i = 1; i < lines.length; i++) assert.ok(lines[i].committed >= lines[i - 1].committed);
});

test('progressLine: rate since the previous line, ETA from the share of input read', () => {
  const stats = new Stats();
  stats.seen(300);
  stats.committedRecords = 200;
  stats.rows = 150;
  const at = stats.startedAt + 10_000;
  const line = progressLine({ stats } as Curator, null, { done: 250, total: 1000, unit: 'bytes' }, at, { read: 100, at: at - 4000 });
  assert.deepEqual(
    [line.elapsed_s, line.read, line.per_s, line.committed, line.rows, line.eta_s],
    [10, 300, 50, 200, 150, 30],
    '10 s for a quarter of the input leaves 30 s',
  );
  const kafka = progressLine({ stats } as Curator, 42, null, at, { read: 300, at });
  assert.deepEqual([kafka.lag, kafka.input, kafka.eta_s, kafka.per_s], [42, null, null, 0]);
});
