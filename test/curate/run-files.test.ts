/**
 * Embedded runs in-process (curateFiles with --models none): what reaches the output directory.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { loadConfig } from '../../src/config/config';
import { duckQuery, sqlQuote } from '../helpers/duckdb';
import { ROOT } from '../helpers/cli';
import { curateFiles } from '../../src/curate/run-files';
import type { DeadLetter } from '../../src/records';

function deadLetters(out: string, topic: string): DeadLetter[] {
  const dir = join(out, '_dlq', `topic=${topic}`, 'partition=0');
  return readdirSync(dir).flatMap((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as DeadLetter));
}

test('dead letters keep the id and URLs of a line that fails validation, at every stage that can fail it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'run-files-'));
  const png = await sharp({ create: { width: 48, height: 48, channels: 3, background: '#0a0' } }).png().toBuffer();
  const page = 'https://page.example/p';
  const img = 'https://img.example/i.jpg';
  const lines = [
    /* 0: fails in the JSONL reader, after the id */ { id: 'bad-time', url: page, image_url: img, caption: 'x', crawl_time: 'last tuesday' },
    /* 1: no id at all, the URLs are still readable */ { url: page, image_url: img, caption: 'x', crawl_time: 1 },
    /* 2: blocked image path */ { id: 'escapes', url: page, caption: 'x', crawl_time: 1, image_path: '../../etc/passwd' },
    /* 3: decodes as an event, fails at the image decode */ { id: 'garbage', url: page, caption: 'x', crawl_time: 1, image_b64: Buffer.from('not an image at all').toString('base64') },
    /* 4: a good one */ { id: 'good', url: page, caption: 'a green square', crawl_time: 1, image_b64: png.toString('base64') },
  ].map((l) => JSON.stringify(l));
  lines.push('{"id": "cut-short", "url": ');
  const input = join(dir, 'crawl.jsonl');
  writeFileSync(input, lines.join('\n') + '\n');
  const cfg = loadConfig({ flags: { input, out: join(dir, 'out'), models: 'none', progress: 'off', 'fetch.enabled': false } });
  const curator = await curateFiles(cfg);
  assert.equal(curator.stats.committedRecords, lines.length);

  const byOffset = new Map(deadLetters(join(dir, 'out'), 'crawl.jsonl').map((d) => [d.source_offset, d]));
  const pick = (o: number) => {
    const d = byOffset.get(o);
    assert.ok(d, `offset ${o} is a dead letter`);
    return { reason: d.reason, id: d.id, url: d.url, image_url: d.image_url, topic: d.source_topic, partition: d.source_partition };
  };
  const coords = { topic: 'crawl.jsonl', partition: 0 };
  assert.deepEqual(pick(0), { reason: 'schema_error', id: 'bad-time', url: page, image_url: img, ...coords });
  assert.deepEqual(pick(1), { reason: 'schema_error', id: null, url: page, image_url: img, ...coords });
  assert.deepEqual(pick(2), { reason: 'path_blocked', id: 'escapes', url: page, image_url: null, ...coords });
  assert.deepEqual(pick(3), { reason: 'decode_error', id: 'garbage', url: page, image_url: null, ...coords });
  assert.deepEqual(pick(5), { reason: 'schema_error', id: null, url: null, image_url: null, ...coords }, 'nothing readable in broken JSON');
  assert.ok(!byOffset.has(4));
  // every dead letter keeps its line as it was in the file, also the one that failed after parsing
  for (const o of [0, 1, 2, 3, 5]) {
    assert.equal(Buffer.from(byOffset.get(o)!.original_b64, 'base64').toString('utf8'), lines[o], `offset ${o}: the original line`);
  }
});

test('the example crawl of docs/FORMATS.md curates: three rows, no dead letters, fields carried through', async () => {
  const out = mkdtempSync(join(tmpdir(), 'example-'));
  const input = join(ROOT, 'examples', 'crawl.jsonl');
  const cfg = loadConfig({ flags: { input, out, models: 'none', progress: 'off', 'softCap.enabled': false, 'fetch.enabled': false } });
  const curator = await curateFiles(cfg);
  assert.deepEqual([curator.stats.committedRecords, curator.stats.rows, curator.stats.dead, curator.stats.filtered], [3, 3, 0, 0]);
  const rows = await duckQuery(
    `SELECT id, caption_raw, width, height, image_mime, attrs['lang'] AS lang, attrs['width_hint'] AS hint, image_embedding IS NULL AS no_embedding, kept_patches IS NULL AS no_patches
     FROM read_parquet(${sqlQuote(join(out, 'topic=crawl.jsonl', 'partition=0', '*.parquet'))}) ORDER BY source_offset`,
  );
  assert.deepEqual(rows.map((r) => [r.id, r.caption_raw, r.width, r.height, r.image_mime]), [
    ['example-1', 'a red circle on a white background', 64, 64, 'image/jpeg'],
    ['example-2', 'two blue bars', 64, 64, 'image/jpeg'],
    ['example-3', 'a green triangle', 64, 64, 'image/jpeg'],
  ]);
  assert.equal(rows[1].hint, '64', 'non-string attrs are stringified');
  assert.ok(rows.every((r) => r.lang === (r.id === 'example-3' ? null : 'en') && r.no_embedding === true && r.no_patches === true), JSON.stringify(rows));
});
