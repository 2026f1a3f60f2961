/**
 * `squeeze export --format webdataset` on a curated output: the `webdataset` Python package (in a venv of
 * the test's own) iterates the tars; every committed row appears exactly `copies` times with its caption and
 * an image PIL decodes; a second export after more commits adds only the new rows; an export killed with
 * SIGKILL and run again writes the same tars as one that was never interrupted; bad inputs are one line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/config/config';
import { curateFiles } from '../../src/curate/run-files';
import { exportWebDataset } from '../../src/export/webdataset';
import { committedAfter } from '../../src/streams/shards/committed';
import { LocalShardStore } from '../../src/streams/shards/shard-store';
import { squeeze } from '../helpers/cli';
import { PY_ENV, pythonWith } from '../helpers/venv';

const dir = mkdtempSync(join(tmpdir(), 'squeeze-export-'));
const shards = join(dir, 'shards');
after(() => rmSync(dir, { recursive: true, force: true }));

/** Curates `n` generated demo events into `shards` (a rerun with a larger n adds the rest as new commits). */
async function curate(n: number): Promise<void> {
  const cfg = loadConfig({ flags: { demo: String(n), demoKind: 'generated', out: shards, models: 'builtin-shapes', progress: 'off', 'shard.maxRows': '15', batchSize: '15', 'shard.idleMs': '60000' } });
  await curateFiles(cfg);
}

/** The committed rows: id -> copies and caption. */
async function committedRows(): Promise<Map<string, { copies: number; caption: string }>> {
  const store = new LocalShardStore(shards);
  const rows = new Map<string, { copies: number; caption: string }>();
  for (const { record } of await committedAfter(store)) {
    if (!record.shard) continue;
    for (const r of await store.readRows(record.shard)) rows.set(String(r.id), { copies: Number(r.copies), caption: String(r.caption) });
  }
  return rows;
}

const tarsOf = (out: string): string[] => readdirSync(out).filter((n) => n.endsWith('.tar')).sort();
const digest = (out: string): Record<string, string> =>
  Object.fromEntries(tarsOf(out).map((t) => [t, createHash('sha256').update(readFileSync(join(out, t))).digest('hex')]));

before(async () => {
  await curate(120);
});

const READ = `
import json, sys, webdataset as wds
out = []
for s in wds.WebDataset(sys.argv[1:], shardshuffle=False).decode("pil"):
    img = s.get("jpg") or s.get("webp")
    out.append({"key": s["__key__"], "id": s["json"]["id"], "copy": s["json"]["copy"], "caption": s["txt"], "size": list(img.size), "kept": s["json"]["kept_patches"]})
print(json.dumps(out))
`;

test('the webdataset package reads the export: each committed row `copies` times, captions and images intact; more commits add only new rows', { timeout: 600_000 }, async (t) => {
  const out = join(dir, 'wds');
  const first = await exportWebDataset(new LocalShardStore(shards), { out, samplesPerTar: 40, blank: false });
  assert.ok(first.written.length >= 2, `${first.written.length} tars`);
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { samples: number; train_num_samples: number; train_data: string; tars: string[] };
  assert.equal(manifest.train_num_samples, first.samples);
  assert.deepEqual(manifest.tars, tarsOf(out));
  assert.ok(existsSync(join(out, `${manifest.tars[0].replace('.tar', '')}_stats.json`)));

  // nothing new: nothing written
  assert.deepEqual((await exportWebDataset(new LocalShardStore(shards), { out, samplesPerTar: 40, blank: false })).written, []);
  // more commits, then an export adds only their rows
  await curate(200);
  const second = await exportWebDataset(new LocalShardStore(shards), { out, samplesPerTar: 40, blank: false });
  assert.ok(second.written.length >= 1);
  assert.ok(second.written.every((t) => !first.written.includes(t)), 'new tars only');

  const rows = await committedRows();
  const expected = [...rows.values()].reduce((a, r) => a + r.copies, 0);
  assert.equal(second.samples, expected, 'samples = the committed rows\' copies');
  const python = pythonWith(dir, ['webdataset', 'pillow']);
  if (!python) {
    t.skip('webdataset reading: skipped, the webdataset package could not be installed (offline?)');
    return;
  }
  const r = spawnSync(python, ['-c', READ, ...tarsOf(out).map((n) => join(out, n))], { encoding: 'utf8', env: PY_ENV, maxBuffer: 64 << 20, timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const samples = JSON.parse(r.stdout) as { key: string; id: string; copy: number; caption: string; size: number[]; kept: number[] | null }[];
  assert.equal(samples.length, expected);
  assert.equal(new Set(samples.map((s) => s.key)).size, samples.length, 'distinct keys');
  const copies = new Map<string, number[]>();
  for (const s of samples) {
    const row = rows.get(s.id);
    assert.ok(row, `${s.id} is a committed row`);
    assert.equal(s.caption, row.caption);
    assert.ok(s.size[0] > 0 && s.size[1] > 0, 'PIL decoded the image');
    copies.set(s.id, [...(copies.get(s.id) ?? []), s.copy]);
  }
  for (const [id, row] of rows) assert.deepEqual((copies.get(id) ?? []).sort(), Array.from({ length: row.copies }, (_, i) => i), id);
  // copies of one row are spread over their tar, not side by side
  const order = samples.map((s) => s.id);
  const adjacent = order.filter((id, i) => i > 0 && order[i - 1] === id).length;
  assert.equal(adjacent, 0, 'no two copies of a row next to each other');
});

test('an export killed with SIGKILL and run again writes exactly the tars of an uninterrupted one', { timeout: 300_000 }, async () => {
  const whole = join(dir, 'whole');
  const args = (out: string) => ['export', '--shards', shards, '--format', 'webdataset', '--out', out, '--samples-per-tar', '10', '--blank'];
  const once = await squeeze(args(whole));
  assert.equal(once.code, 0, once.stderr);
  assert.match(once.stdout, /samples? from \d+ rows? in all/);
  const killed = join(dir, 'killed');
  await squeeze(args(killed), {
    onStart: (p) => {
      const poll = setInterval(() => {
        if (existsSync(killed) && tarsOf(killed).length >= 2) {
          clearInterval(poll);
          p.kill('SIGKILL');
        }
      }, 5);
      p.on('exit', () => clearInterval(poll));
    },
  });
  assert.ok(tarsOf(killed).length < tarsOf(whole).length, 'the kill came before the end');
  assert.deepEqual(readdirSync(killed).filter((n) => !n.startsWith('.') && !/^(\d{5}(\.tar|_meta\.jsonl|_stats\.json)|manifest\.json|_export\.json)$/.test(n)), [], 'only final names and temporaries');
  const again = await squeeze(args(killed));
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(digest(killed), digest(whole));
  assert.deepEqual(readdirSync(killed).filter((n) => n.startsWith('.tmp-')), [], 'no temporaries left');
});

test('bad input: no commit records, an unreadable shard, a foreign directory: one line, nothing under a final name', async () => {
  const empty = mkdtempSync(join(dir, 'empty-'));
  const none = await squeeze(['export', '--shards', empty, '--format', 'webdataset', '--out', join(dir, 'x')]);
  assert.equal(none.code, 2);
  assert.match(none.stderr.trim(), /^squeeze: .*has no commit records/);
  assert.equal(none.stderr.trim().split('\n').length, 1);

  const fmt = await squeeze(['export', '--shards', shards, '--format', 'mds', '--out', join(dir, 'x')]);
  assert.equal(fmt.code, 2);
  assert.match(fmt.stderr, /--format mds/);

  const foreign = mkdtempSync(join(dir, 'foreign-'));
  writeFileSync(join(foreign, 'notes.txt'), 'mine');
  const f = await squeeze(['export', '--shards', shards, '--format', 'webdataset', '--out', foreign]);
  assert.notEqual(f.code, 0);
  assert.match(f.stderr, /holds files but no _export\.json/);

  // a copy of the output whose first shard is damaged
  const damaged = join(dir, 'damaged');
  spawnSync('cp', ['-r', shards, damaged]);
  const store = new LocalShardStore(damaged);
  const [firstShard] = (await committedAfter(store)).filter((c) => c.record.shard);
  writeFileSync(join(damaged, firstShard.record.shard!), 'PAR1 not parquet PAR1');
  const out = join(dir, 'from-damaged');
  const bad = await squeeze(['export', '--shards', damaged, '--format', 'webdataset', '--out', out, '--samples-per-tar', '1000000']);
  assert.notEqual(bad.code, 0);
  assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  assert.match(bad.stderr, /unreadable shard/);
  assert.deepEqual(existsSync(out) ? readdirSync(out).filter((n) => n.endsWith('.tar')) : [], []);
});
