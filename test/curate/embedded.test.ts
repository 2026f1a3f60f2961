/**
 * Embedded mode end to end through the CLI: a generated crawl plus hostile lines, curated into
 * Parquet, audited with DuckDB; a re-run resumes; SIGKILLs at random moments lose and duplicate nothing.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { writeGenJsonl } from '../../src/gen';
import { auditOutput } from '../helpers/accounting';
import { squeeze } from '../helpers/cli';
import { duckQuery, sqlQuote } from '../helpers/duckdb';
import { assertModelColumns } from '../helpers/model-columns';

const dir = mkdtempSync(join(tmpdir(), 'embedded-'));
const input = join(dir, 'crawl.jsonl');
let lines = 0;
const hostile = [
  'not json at all',
  '[1, 2, 3]',
  '{"id": 5, "caption": "id is a number"}',
  '{"id": "ok-but-no-image", "caption": "x", "crawl_time": 1}',
  '{"id": "escape", "caption": "x", "crawl_time": 1, "image_path": "../../../etc/passwd"}',
  '{"id": "bad-b64", "caption": "x", "crawl_time": 1, "image_b64": "%%%not base64%%%"}',
  `{"id": "huge", "caption": "${'z'.repeat(1_200_000)}", "crawl_time": 1, "image_b64": ""}`,
  '{"id": "truncated json", "caption": ',
];

before(async () => {
  await writeGenJsonl(input, { n: 400, seed: 11 });
  appendFileSync(input, hostile.join('\n') + '\n');
  lines = readFileSync(input, 'utf8').split('\n').filter((l) => l.trim()).length;
});

const args = (out: string, extra: string[] = []) => [
  'curate', '--input', input, '--out', out, '--progress', 'off', '--batch-size', '32', '--models', 'builtin-shapes', ...extra,
];
const env = { SQUEEZE_TEST: '1' };

test('curates every line exactly once: rows, dead letters with reasons, filtered duplicates', async () => {
  const out = join(dir, 'out-a');
  const ran = await squeeze(args(out, ['--shard-rows', '40']), { env });
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /accounting/);
  const audit = await auditOutput(out, 'crawl.jsonl', new Map([[0, lines]]));
  assert.equal(audit.rows + audit.dead + audit.filtered, lines);
  assert.ok(audit.shards.length >= 3, 'rolled several shards');
  assert.ok((audit.filteredByReason.duplicate_exact ?? 0) >= 5, 'exact duplicates removed');
  for (const reason of ['schema_error', 'decode_error', 'missing_image', 'image_too_large', 'image_too_small', 'unsupported_format', 'id_invalid', 'fetch_blocked']) {
    assert.ok((audit.deadByReason[reason] ?? 0) > 0, `some ${reason} dead letters`);
  }
  // every generated bad image with a deterministic verdict ended as that dead letter
  const expectDead: Record<string, string[]> = {
    corrupt: ['decode_error'], truncated: ['decode_error'], oversized: ['image_too_large'], tiny: ['image_too_small'],
    aspect: ['bad_aspect_ratio', 'image_too_small'], svg: ['unsupported_format'], private_url: ['fetch_blocked'],
    long_id: ['id_invalid'], empty: ['missing_image'], missing: ['missing_image'],
  };
  const dlq = readdirSync(join(out, '_dlq', 'topic=crawl.jsonl', 'partition=0'))
    .flatMap((f) => readFileSync(join(out, '_dlq', 'topic=crawl.jsonl', 'partition=0', f), 'utf8').trim().split('\n'))
    .map((l) => JSON.parse(l) as { source_offset: number; reason: string });
  // no blank lines in the input, so a record's offset is its line index
  const truth = readFileSync(input, 'utf8').split('\n').filter((l) => l.trim()).slice(0, 400).map((l) => JSON.parse(l));
  const deadReason = new Map(dlq.map((d) => [d.source_offset, d.reason]));
  truth.forEach((t, offset) => {
    const bad = t.attrs?.truth_bad as string | undefined;
    if (!bad || !(bad in expectDead)) return;
    assert.ok(expectDead[bad].includes(deadReason.get(offset) ?? 'kept'), `${bad} input at ${offset} -> ${deadReason.get(offset) ?? 'kept'}`);
  });
  assert.ok(truth.some((t) => t.attrs?.truth_bad), 'the generated crawl has bad inputs');
  // huge and hostile captions are never dead letters; rows of them are truncated and cleaned
  truth.forEach((t, offset) => {
    if (t.attrs?.truth_bad === 'huge_caption' || t.attrs?.truth_bad === 'hostile_caption') {
      assert.equal(deadReason.get(offset), undefined, `${t.attrs.truth_bad} at ${offset} is curated, not dead-lettered`);
    }
  });
  const rows = await duckQuery(
    `SELECT caption, caption_raw, copies FROM read_parquet(${sqlQuote(join(out, 'topic=crawl.jsonl/partition=0/*.parquet'))})`,
  );
  for (const r of rows) {
    assert.ok(String(r.caption).length <= 2000);
    assert.doesNotMatch(String(r.caption), /[\u0000-\u0008\u202e]/);
    assert.ok(Number(r.copies) >= 1, 'soft-cap writes only samples with copies');
  }
  // the built-in bundle ran: condensed, tagged, enriched, scored rows that name the model
  await assertModelColumns(join(out, 'topic=crawl.jsonl/partition=0/*.parquet'));
  // soft-cap meets its target rate of 1 copy per sample it saw, give or take
  const copies = rows.reduce((a, r) => a + Number(r.copies), 0);
  const sampled = rows.length + (audit.filteredByReason.zero_copies ?? 0);
  assert.ok(Math.abs(copies / sampled - 1) < 0.25, `copies per sampled input ${copies / sampled}`);
});

test('a second run over the same output resumes and adds nothing', async () => {
  const out = join(dir, 'out-a');
  const ran = await squeeze(args(out, ['--shard-rows', '40']), { env });
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /curated 0 events/);
  await auditOutput(out, 'crawl.jsonl', new Map([[0, lines]]));
});

test('SIGKILL at random moments, restart each time: nothing lost, nothing twice, no uncommitted shard visible', async () => {
  const out = join(dir, 'out-crash');
  let kills = 0;
  for (let attempt = 0; attempt < 12; attempt++) {
    const delay = 400 + Math.floor(Math.random() * 1500);
    const ran = await squeeze(args(out, ['--shard-rows', '25']), {
      env,
      onStart: (p) => setTimeout(() => (kills < 3 ? p.kill('SIGKILL') : undefined), delay),
    });
    if (ran.signal === 'SIGKILL') {
      kills++;
      continue;
    }
    assert.equal(ran.code, 0, ran.stderr);
    if (kills >= 3) break;
  }
  assert.ok(kills >= 3, `killed ${kills} times`);
  const audit = await auditOutput(out, 'crawl.jsonl', new Map([[0, lines]]));
  const clean = await auditOutput(join(dir, 'out-a'), 'crawl.jsonl', new Map([[0, lines]]));
  assert.deepEqual([audit.rows, audit.dead, audit.filtered], [clean.rows, clean.dead, clean.filtered]);
  const rows = (o: string) =>
    duckQuery(
      `SELECT id, copies, score, scores, kept_patches, tags, caption
       FROM read_parquet(${sqlQuote(join(o, 'topic=crawl.jsonl/partition=0/*.parquet'))}) ORDER BY source_offset`,
    );
  assert.deepEqual(await rows(out), await rows(join(dir, 'out-a')), 'the same rows (ids, copies, scores, patches, tags) as an uninterrupted run');
});
