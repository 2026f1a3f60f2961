import assert from 'node:assert/strict';
import { test } from 'node:test';
import { histogram, htmlReport, mimeOf, type ReportRow } from '../../src/report/html-report';
import type { CommitRecord } from '../../src/streams/shards/shard-log';

const row = (i: number, over: Partial<ReportRow> = {}): ReportRow => ({
  id: `id-${i}`,
  image: Buffer.from([0xff, 0xd8, 0xff, 0xe0, i]),
  width: 200,
  height: 100,
  caption: `caption ${i}`,
  caption_raw: `caption ${i}`,
  tags: [{ label: 'star', score: 0.8 }],
  kept_patches: [0, 5, 63],
  grid_rows: 8,
  grid_cols: 8,
  copies: 1 + (i % 3),
  score: i / 10,
  clip_score: 0.5,
  scores: { clip_score: 0.5, caption_quality: 0.25 },
  model_version: 'builtin-clip-1-test',
  ...over,
});

const commit = (over: Partial<CommitRecord> = {}): CommitRecord => ({
  version: 1, topic: 't', partition: 0, start_offset: 0, end_offset: 9, records: 10, rows: 4, dead: 2, filtered: 4,
  dead_by_reason: { decode_error: 2 }, filtered_by_reason: { zero_copies: 3, duplicate_exact: 1 }, filtered_offsets: {},
  shard: 'x.parquet', shard_bytes: 1, dead_letters: null, state: null, close_reason: 'drain', config_hash: 'h',
  model_version: 'm', schema_version: 2, created_at: 0, ...over,
});

test('histogram: equal bins over the finite values, the maximum in the last bin', () => {
  const h = histogram([0, 1, 2, 3, NaN, Infinity], 3);
  assert.deepEqual(h, { lo: 0, hi: 3, counts: [1, 1, 2] });
  assert.deepEqual(histogram([5, 5], 4).counts, [2, 0, 0, 0]);
  assert.deepEqual(histogram([NaN]).counts, []);
});

test('mimeOf sniffs JPEG, PNG and WebP and falls back to the format hint', () => {
  assert.equal(mimeOf(Buffer.from([0xff, 0xd8, 0xff])), 'image/jpeg');
  assert.equal(mimeOf(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), 'image/png');
  assert.equal(mimeOf(Buffer.from('RIFF\0\0\0\0WEBPVP8 ', 'latin1')), 'image/webp');
  assert.equal(mimeOf(Buffer.from('????'), 'gif'), 'image/gif');
  assert.equal(mimeOf(Buffer.from('????')), 'application/octet-stream');
});

test('report: totals from the commit records, one tile per row with kept and dropped patches, captions escaped', () => {
  const hostile = '<script>alert(1)</script> & "quotes"';
  const html = htmlReport({
    title: 'demo <1>',
    commits: [commit(), commit({ start_offset: 10, end_offset: 19, dead: 0, dead_by_reason: {} })],
    rows: [row(0, { caption_raw: hostile }), row(1), row(2, { kept_patches: null, image: null })],
  });
  assert.match(html, /20 input records in 2 commit records: <b>8<\/b> rows \(6 copies for the trainer\),\s+2 dead letters, 8 filtered/);
  assert.match(html, /<td>zero_copies<\/td><td>6<\/td>/);
  assert.equal((html.match(/<article>/g) ?? []).length, 3);
  // rows 0 and 1 outline 3 kept patches and shade the other 61
  assert.equal((html.match(/class="kept"/g) ?? []).length, 6);
  assert.equal((html.match(/class="dropped"/g) ?? []).length, 122);
  assert.equal((html.match(/data:image\/jpeg;base64,/g) ?? []).length, 2);
  assert.doesNotMatch(html, /<script>/);
  assert.match(html, /was: &lt;script&gt;alert\(1\)&lt;\/script&gt; &amp; &quot;quotes&quot;/);
  assert.match(html, /<title>demo &lt;1&gt;: squeeze report<\/title>/);
  for (const chart of ['mixed score of written rows', 'copies per written row', 'caption_quality', 'clip_score']) assert.ok(html.includes(`aria-label="${chart}"`), chart);
  assert.equal((htmlReport({ title: 't', commits: [], rows: [row(0), row(1)], gallery: 1 }).match(/<article>/g) ?? []).length, 1);
});

test('report wording: counts agree in number; score entries never break inside a name or between name and value', () => {
  const one = htmlReport({ title: 't', commits: [commit({ records: 1, rows: 1, dead: 1, filtered: 0, dead_by_reason: { decode_error: 1 }, filtered_by_reason: {} })], rows: [row(0, { copies: 1 })] });
  assert.match(one, /1 input record in 1 commit record: <b>1<\/b> row \(1 copy for the trainer\),\s+1 dead letter, 0 filtered/);
  const two = htmlReport({ title: 't', commits: [commit(), commit()], rows: [row(1)] });
  assert.match(two, /20 input records in 2 commit records: <b>8<\/b> rows \(2 copies for the trainer\),\s+4 dead letters/);
  // the score line: each "name value" is one unbreakable unit, and nothing breaks words anywhere in the page
  assert.match(one, /<span class="kv">caption_quality&nbsp;0\.25<\/span> · <span class="kv">clip_score&nbsp;0\.50<\/span>/);
  assert.match(one, /\.kv\{white-space:nowrap\}/);
  assert.doesNotMatch(one, /word-break:\s*break-all/);
});

test('report: the trainer\'s held-out evaluations become one polyline per metric, scaled to the last step', () => {
  const learning = [0, 50, 100].map((step, i) => ({ step, mean_r5: 0.2 + 0.3 * i, i2t_r1: 0.1 * i, zero_shot: 0.5 }));
  const html = htmlReport({ title: 't', commits: [], rows: [], learning });
  assert.match(html, /aria-label="held-out learning curve"/);
  const lines = [...html.matchAll(/<polyline [^>]*points="([^"]+)"/g)].map((m) => m[1]!.split(' '));
  assert.equal(lines.length, 3);
  assert.ok(lines.every((pts) => pts.length === 3));
  // mean_r5 at the last step (0.8) is at x = 410, y = 160 - 0.8 * 160
  assert.equal(lines[0]![2], '410.0,32.0');
  assert.doesNotMatch(htmlReport({ title: 't', commits: [], rows: [] }), /learning curve/);
});
