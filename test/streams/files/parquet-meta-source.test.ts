import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ParquetSchema, ParquetWriter } from 'parquetjs-lite';
import { openFileSource } from '../../../src/streams/files/file-source';
import { type FileRecord, type FileSourceLimits } from '../../../src/streams/files/file-record';

const limits: FileSourceLimits = { maxRecordBytes: 4096, maxImageBytes: 1 << 20 };
const SHARED = path.join(__dirname, '..', '..', '..', '..', '..', 'shared', 'data', 'web_alt_text', 'img2dataset_test_10000.parquet');

const sha1 = (s: string): string => createHash('sha1').update(s).digest('hex');

async function collect(it: AsyncIterable<FileRecord>, max = Infinity): Promise<FileRecord[]> {
  const out: FileRecord[] = [];
  for await (const r of it) {
    out.push(r);
    if (out.length >= max) break;
  }
  return out;
}

async function writeParquet(file: string, schema: ParquetSchema, rows: Record<string, unknown>[], rowGroupSize = 2): Promise<void> {
  const w = await ParquetWriter.openFile(schema, file, { rowGroupSize });
  for (const r of rows) await w.appendRow(r);
  await w.close();
}

/** DuckDB (a dev dependency) writes the codecs and encodings parquetjs-lite cannot; null when it is not installed. */
async function duckdbCopy(sql: string): Promise<boolean> {
  let duck: { DuckDBInstance: { create(path: string): Promise<{ connect(): Promise<{ run(sql: string): Promise<unknown> }> }> } };
  try {
    duck = require('@duckdb/node-api') as typeof duck;
  } catch {
    return false;
  }
  const db = await duck.DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run(sql);
  return true;
}

describe('parquet-meta-source', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'squeeze-pq-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads url/text rows as events with image_url set, ids from the url hash', async () => {
    const file = path.join(dir, 'meta.parquet');
    const schema = new ParquetSchema({
      url: { type: 'UTF8', optional: true },
      text: { type: 'UTF8', optional: true },
      similarity: { type: 'DOUBLE', optional: true },
      width: { type: 'INT64', optional: true },
    });
    await writeParquet(file, schema, [
      { url: 'https://img.example/0.jpg', text: 'a red square', similarity: 0.31, width: 640 },
      { url: 'https://img.example/1.jpg', text: 'ünïcödé caption' },
      { text: 'row without url' },
      { url: '  ', text: 'blank url' },
      { url: 'https://img.example/4.jpg' },
    ]);
    const recs = await collect(openFileSource(file, limits));
    assert.equal(recs.length, 5);
    recs.forEach((r, i) => assert.deepEqual(r.coord, { topic: 'meta.parquet', partition: 0, offset: i }));

    const e0 = recs[0].event!;
    assert.equal(e0.id, sha1('https://img.example/0.jpg'));
    assert.equal(e0.image_url, 'https://img.example/0.jpg');
    assert.equal(e0.image, null);
    assert.equal(e0.url, null);
    assert.equal(e0.caption, 'a red square');
    assert.equal(e0.source, 'meta.parquet');
    assert.equal(e0.crawl_time, 0);
    assert.deepEqual(e0.attrs, { similarity: '0.31', width: '640' });
    assert.deepEqual(JSON.parse(recs[0].raw.toString()), { url: 'https://img.example/0.jpg', text: 'a red square', similarity: 0.31, width: '640' });

    assert.equal(recs[1].event!.caption, 'ünïcödé caption');
    assert.deepEqual(recs[1].event!.attrs, {});
    assert.equal(recs[2].error?.reason, 'missing_image');
    assert.equal(recs[3].error?.reason, 'missing_image');
    assert.equal(recs[4].event!.caption, '');
  });

  it('takes LAION column names and an explicit id column', async () => {
    const file = path.join(dir, 'laion.parquet');
    const schema = new ParquetSchema({
      SAMPLE_ID: { type: 'INT64' },
      URL: { type: 'UTF8' },
      TEXT: { type: 'UTF8', optional: true },
      NSFW: { type: 'UTF8', optional: true },
    });
    await writeParquet(file, schema, [
      { SAMPLE_ID: 1234567, URL: 'http://img.example/a.png', TEXT: 'alt text', NSFW: 'UNLIKELY' },
      { SAMPLE_ID: 42, URL: 'http://img.example/b.png', TEXT: '' },
    ]);
    const recs = await collect(openFileSource(file, limits));
    assert.deepEqual(
      recs.map((r) => [r.event!.id, r.event!.image_url, r.event!.caption, r.event!.attrs]),
      [
        ['1234567', 'http://img.example/a.png', 'alt text', { NSFW: 'UNLIKELY' }],
        ['42', 'http://img.example/b.png', '', {}],
      ],
    );
  });

  it('throws a clear error for a file without a URL column or one that is not Parquet', async () => {
    const noUrl = path.join(dir, 'nourl.parquet');
    await writeParquet(noUrl, new ParquetSchema({ caption: { type: 'UTF8' } }), [{ caption: 'x' }]);
    await assert.rejects(collect(openFileSource(noUrl, limits)), /no URL column .*caption/);
    const fake = path.join(dir, 'fake.parquet');
    fs.writeFileSync(fake, 'definitely not parquet');
    await assert.rejects(collect(openFileSource(fake, limits)), /cannot read Parquet file .*fake\.parquet/);
  });

  it('reads every codec (ZSTD, BROTLI, LZ4_RAW, GZIP, SNAPPY), DELTA encodings and format-2 files', async (t) => {
    const repeated = `SELECT 'http://img.example/' || (i % 3) || '.jpg' AS url, 'caption ' || (i % 2) AS text, i AS n FROM range(60) t(i)`;
    const unique = `SELECT 'http://img.example/' || i || '.jpg' AS url, 'caption ' || i AS text, i AS n FROM range(6) t(i)`;
    const files: [string, string, number][] = [];
    let sql = '';
    for (const codec of ['zstd', 'brotli', 'lz4_raw', 'gzip', 'snappy']) {
      const f = path.join(dir, `${codec}.parquet`);
      files.push([f, codec, 60]);
      sql += `COPY (${repeated}) TO '${f}' (FORMAT parquet, COMPRESSION ${codec}, ROW_GROUP_SIZE 25);`;
    }
    const v2 = path.join(dir, 'v2-dict.parquet');
    const delta = path.join(dir, 'v2-delta.parquet');
    sql += `COPY (${repeated}) TO '${v2}' (FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2);`;
    sql += `COPY (${unique}) TO '${delta}' (FORMAT parquet, COMPRESSION snappy, PARQUET_VERSION v2);`;
    files.push([v2, 'format 2, dictionary', 60], [delta, 'format 2, delta', 6]);
    if (!(await duckdbCopy(sql))) {
      t.skip('@duckdb/node-api not installed');
      return;
    }
    for (const [f, what, n] of files) {
      const recs = await collect(openFileSource(f, limits));
      assert.equal(recs.length, n, what);
      recs.forEach((r, i) => {
        const k = n === 6 ? i : i % 3;
        assert.equal(r.event?.image_url, `http://img.example/${k}.jpg`, `${what} row ${i}`);
        assert.equal(r.event?.caption, `caption ${n === 6 ? i : i % 2}`, `${what} row ${i}`);
        assert.equal(r.event?.attrs.n, String(i), `${what}: the INT64 column as a string attr`);
        assert.equal(r.coord.offset, i);
      });
    }
  });

  it('reads the img2dataset test file from ../shared (first 100 rows)', async (t) => {
    if (!fs.existsSync(SHARED)) {
      console.log('skipped: ../shared data absent');
      t.skip('../shared data absent');
      return;
    }
    const recs = await collect(openFileSource(SHARED, limits), 100);
    assert.equal(recs.length, 100);
    recs.forEach((r, i) => {
      assert.equal(r.coord.offset, i);
      assert.equal(r.coord.topic, 'img2dataset_test_10000.parquet');
      assert.ok(r.event, `row ${i}: ${r.error?.message}`);
      assert.match(r.event.image_url!, /^https?:\/\//);
      assert.equal(r.event.id, sha1(r.event.image_url!));
      assert.equal(r.event.image, null);
      assert.deepEqual(r.event.attrs, {}, 'the pandas index column is not carried');
    });
    assert.equal(recs[0].event!.image_url, 'http://direct.rhapsody.com/imageserver/v2/albums/Alb.131805200/images/170x170.jpg');
    assert.equal(recs[0].event!.caption, 'Classical Masterpieces: Xerses & More, Vol. 8 by Various Artists');
  });
});
