/**
 * The domain check on real photos across a restart: the same crawl curated in one go and in two runs
 * over the same --out (the second resumes from the first's commit record, as after a crash or a grown
 * input file) gives the same rows: captions, flags, tags and copies per offset. The crawl leaves the
 * photo bundle's domain (out-of-focus frames) before the split and is still out after it, so the second
 * run flags the images below the floor only if the domain check's window came back from the state.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { loadConfig } from '../../src/config/config';
import { loadPhotos, sharedDir } from '../../src/streams/files/shared-photos';
import { curateFiles } from '../../src/curate/run-files';
import { duckQuery, sqlQuote } from '../helpers/duckdb';

const shared = sharedDir();
const noShared = shared ? false : 'skipped: ../shared (photos) absent';

const BATCH = 16;
/** the split falls on a batch boundary, so both runs batch the records alike (the check judges per batch) */
const SPLIT = 7 * BATCH;
const TOTAL = 11 * BATCH;

/**
 * Offsets 0-47 sharp photos (in the domain), 48-111 the next photos blurred beyond recognition (no
 * detection: the check goes out at about 80), 112-175 photos again with every fourth blurred (about 40%
 * below the floor: too few to go out from an empty window, enough to stay out from the restored one).
 */
async function crawlLines(): Promise<string[]> {
  const photos = loadPhotos(shared!).filter((p) => p.split === 'eval').slice(0, TOTAL);
  assert.equal(photos.length, TOTAL, 'enough eval photos');
  return Promise.all(
    photos.map(async (p, offset) => {
      const blurred = (offset >= 48 && offset < SPLIT) || (offset >= SPLIT && offset % 4 === 0);
      const bytes = readFileSync(p.path);
      const image = blurred ? await sharp(bytes).blur(25).jpeg({ quality: 85 }).toBuffer() : bytes;
      return JSON.stringify({ id: `photo-${offset}`, caption: p.captions[0], crawl_time: 1_700_000_000_000 + offset, image_b64: image.toString('base64') });
    }),
  );
}

async function curate(input: string, out: string): Promise<void> {
  const cfg = loadConfig({ flags: { input, out, progress: 'off', 'fetch.enabled': false, batchSize: String(BATCH) } });
  await curateFiles(cfg);
}

const rows = (out: string) =>
  duckQuery(
    `SELECT source_offset, caption, tags, copies, attrs['squeeze_flags'] AS flags
     FROM read_parquet(${sqlQuote(join(out, 'topic=crawl.jsonl/partition=0/*.parquet'))}) ORDER BY source_offset`,
  );

test('a restart while the photo stream is out of the domain gives the rows of an uninterrupted run', { skip: noShared, timeout: 10 * 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'domain-replay-'));
  const lines = await crawlLines();
  const whole = join(dir, 'whole');
  const split = join(dir, 'split');
  writeFileSync(join(dir, 'crawl.jsonl'), lines.join('\n') + '\n');
  await curate(join(dir, 'crawl.jsonl'), whole);
  // the same file name (the topic) holding only the first part, then grown to the whole crawl
  const input = join(mkdtempSync(join(dir, 'input-')), 'crawl.jsonl');
  writeFileSync(input, lines.slice(0, SPLIT).join('\n') + '\n');
  await curate(input, split);
  appendFileSync(input, lines.slice(SPLIT).join('\n') + '\n');
  await curate(input, split);

  const a = await rows(whole);
  const b = await rows(split);
  const flaggedAfter = (rs: typeof a) => rs.filter((r) => Number(r.source_offset) >= SPLIT && String(r.flags ?? '').split(',').includes('domain_out')).length;
  assert.ok(flaggedAfter(a) >= 8, `the uninterrupted run is still out after the split (${flaggedAfter(a)} rows flagged domain_out)`);
  assert.equal(b.length, a.length);
  for (let i = 0; i < a.length; i++) assert.deepEqual(b[i], a[i], `offset ${String(a[i].source_offset)}`);
});
