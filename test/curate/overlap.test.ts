/**
 * The throughput machinery must not change what is curated: the same input curated with the models on
 * the event loop, one image decoded at a time and small batches, and with the defaults (models in
 * worker threads, several images decoding at once, larger batches overlapping in the chain) gives the
 * same rows and the same decision for every offset.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { writeGenJsonl } from '../../src/gen';
import { readCommits } from '../../src/streams/shards/shard-log';
import { auditOutput } from '../helpers/accounting';
import { squeeze } from '../helpers/cli';
import { duckQuery, sqlQuote } from '../helpers/duckdb';

const dir = mkdtempSync(join(tmpdir(), 'overlap-'));
const input = join(dir, 'crawl.jsonl');
const N = 360;

before(async () => {
  await writeGenJsonl(input, { n: N, seed: 23 });
});

async function curate(name: string, extra: string[]): Promise<string> {
  const out = join(dir, name);
  const r = await squeeze(['curate', '--input', input, '--out', out, '--progress', 'off', '--models', 'builtin-shapes', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

interface Decisions {
  rows: Map<string, Record<string, unknown>>;
  /** offset -> what happened to it (filtered offsets by reason, dead letters by reason) */
  outcome: Map<number, string>;
}

async function decisions(out: string): Promise<Decisions> {
  const topic = 'crawl.jsonl';
  await auditOutput(out, topic, new Map([[0, N]]));
  const rows = new Map<string, Record<string, unknown>>();
  const found = await duckQuery(
    `SELECT id, source_offset, copies, caption, clip_score, score, kept_patches, tags, image_mime, md5(image) AS image_md5 FROM read_parquet(${sqlQuote(join(out, 'topic=*', 'partition=*', '*.parquet'))})`,
  );
  const outcome = new Map<number, string>();
  for (const r of found) {
    rows.set(String(r.id), r);
    outcome.set(Number(r.source_offset), 'row');
  }
  for (const c of await readCommits(out, topic, 0)) {
    for (const [reason, offsets] of Object.entries(c.filtered_offsets ?? {})) for (const o of offsets as number[]) outcome.set(o, `filtered:${reason}`);
    if (!c.dead_letters) continue;
    for (const line of readFileSync(join(out, c.dead_letters), 'utf8').trim().split('\n')) {
      const d = JSON.parse(line) as { source_offset: number; reason: string };
      outcome.set(d.source_offset, `dead:${d.reason}`);
    }
  }
  return { rows, outcome };
}

interface Fixture {
  events: number;
  rows: { id: string; source_offset: number; copies: number; caption: string; clip_score: number; score: number; kept_patches: number[] | null; tags: unknown; image_mime: string; image_md5: string }[];
  outcome: Record<string, string>;
}

let serialRun: Decisions | null = null;

test('models in workers, overlapping batches and parallel decodes curate exactly what the serial setting does', async () => {
  const serial = await decisions(await curate('serial', ['--inference', 'main', '--concurrency', '1', '--batch-size', '16']));
  serialRun = serial;
  const overlapped = await decisions(await curate('overlapped', ['--inference', 'worker', '--concurrency', '8', '--batch-size', '128']));
  assert.ok(serial.rows.size > 50, `only ${serial.rows.size} rows`);
  assert.deepEqual([...overlapped.rows.keys()].sort(), [...serial.rows.keys()].sort(), 'the same rows');
  for (const [id, a] of serial.rows) {
    const b = overlapped.rows.get(id)!;
    for (const k of ['source_offset', 'copies', 'caption', 'kept_patches', 'tags', 'image_mime', 'image_md5']) {
      assert.deepEqual(b[k], a[k], `${id}: ${k}`);
    }
    assert.ok(Math.abs(Number(b.clip_score) - Number(a.clip_score)) < 1e-6, `${id}: clip_score ${a.clip_score} vs ${b.clip_score}`);
    assert.ok(Math.abs(Number(b.score) - Number(a.score)) < 1e-6, `${id}: score`);
  }
  // every other offset was filtered or dead-lettered for the same reason
  assert.ok([...serial.outcome.values()].some((v) => v.startsWith('dead:')) && [...serial.outcome.values()].some((v) => v.startsWith('filtered:')));
  for (let o = 0; o < N; o++) assert.equal(overlapped.outcome.get(o), serial.outcome.get(o), `offset ${o}`);
});

test('the same input curated before the model-input and patch-choice contracts: identical rows and decisions', async (t) => {
  if (!serialRun) return t.skip('the serial run above failed');
  const before = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'test', 'fixtures', 'curate-before-issue-24.json'), 'utf8')) as Fixture;
  assert.equal(before.events, N);
  for (let o = 0; o < N; o++) assert.equal(serialRun.outcome.get(o), before.outcome[String(o)], `offset ${o}`);
  assert.equal(serialRun.rows.size, before.rows.length);
  const plain = (v: unknown) => JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x))) as unknown;
  for (const b of before.rows) {
    const a = serialRun.rows.get(b.id);
    assert.ok(a, `${b.id} is a row again`);
    assert.ok(Math.abs(Number(a.clip_score) - b.clip_score) < 1e-6, `${b.id}: clip_score ${b.clip_score} before, ${a.clip_score} now`);
    assert.ok(Math.abs(Number(a.score) - b.score) < 1e-6, `${b.id}: score`);
    for (const k of ['source_offset', 'copies', 'caption', 'kept_patches', 'tags', 'image_mime', 'image_md5'] as const) {
      assert.deepEqual(plain(a[k]), plain(b[k]), `${b.id}: ${k}`);
    }
  }
});
