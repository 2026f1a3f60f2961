import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CuratedRow } from '../../../src/records';
import {
  CURATED_ROW_COLUMNS,
  PARQUET_SCHEMA_VERSION,
  PARQUET_SCHEMA_VERSION_KEY,
  readParquetRows,
  writeRowsParquet,
} from '../../../src/streams/shards/parquet-rows';
import { duckDescribe, duckQuery, sqlQuote } from '../../helpers/duckdb';

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'squeeze-parquet-rows-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A non-trivial "image": every byte value, zeros, 0xff runs, random tail. */
function fakeImage(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < 512 && i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  randomBytes(Math.max(0, n - 1024)).copy(b, 1024);
  return b;
}

function baseRow(i: number): CuratedRow {
  return {
    id: `row-${i}`,
    source_topic: 'crawl.events',
    source_partition: i % 3,
    source_offset: 2 ** 40 + i,
    image: fakeImage(3000 + i, i),
    image_mime: 'image/jpeg',
    width: 640,
    height: 480,
    grid_rows: 4,
    grid_cols: 6,
    kept_patches: [0, 3, 5, 23],
    keep_ratio: 0.1666,
    caption: `caption ${i}`,
    caption_raw: `  Caption ${i}  `,
    tags: [
      { label: 'cat', score: 0.91 },
      { label: 'sofa', score: 0.12 },
    ],
    clip_score: 0.31,
    score: 1.25,
    scores: { clip_score: 0.31, caption_quality: -0.5 },
    mix_version: 'default-1',
    copies: 1,
    image_embedding: [0.1, -0.2, 0.3, 1e-8, 3.5],
    text_embedding: [-1, 0, 1],
    model_version: 'tiny-clip@2024-06-01',
    config_hash: 'c0ffee',
    curated_at: 1_700_000_000_123 + i,
    attrs: { lang: 'en', source: 'demo' },
  };
}

const SAMPLE: CuratedRow[] = [
  {
    ...baseRow(0),
    image: fakeImage(30_000, 1),
    caption: 'Ünïcödé 猫 😀 עברית e\u0301 Ａ',
    caption_raw: '  Ünïcödé 猫 😀 עברית e\u0301 Ａ\n',
    attrs: { lang: 'ja', 'クラス': '猫', empty: '' },
  },
  {
    // every nullable column null, empty attrs
    ...baseRow(1),
    source_offset: 2 ** 53 - 1,
    grid_rows: null,
    grid_cols: null,
    kept_patches: null,
    keep_ratio: null,
    tags: null,
    clip_score: null,
    score: null,
    scores: {},
    mix_version: null,
    image_embedding: null,
    text_embedding: null,
    attrs: {},
  },
  {
    // empty (not null) lists, an empty image, int32 extremes
    ...baseRow(2),
    source_partition: 2_147_483_647,
    source_offset: 0,
    image: Buffer.alloc(0),
    width: 2_147_483_647,
    height: 1,
    kept_patches: [],
    tags: [],
    image_embedding: [],
    text_embedding: [],
    caption: '',
    caption_raw: '',
    copies: 7,
    curated_at: 0,
  },
  { ...baseRow(3), kept_patches: [-2_147_483_648, 2_147_483_647], tags: [{ label: '😀', score: -1.5 }], score: -0.25 },
];

const EXPECTED_TYPES: Record<string, string> = {
  id: 'VARCHAR',
  source_topic: 'VARCHAR',
  source_partition: 'INTEGER',
  source_offset: 'BIGINT',
  image: 'BLOB',
  image_mime: 'VARCHAR',
  width: 'INTEGER',
  height: 'INTEGER',
  grid_rows: 'INTEGER',
  grid_cols: 'INTEGER',
  kept_patches: 'INTEGER[]',
  keep_ratio: 'FLOAT',
  caption: 'VARCHAR',
  caption_raw: 'VARCHAR',
  tags: 'STRUCT("label" VARCHAR, score FLOAT)[]',
  clip_score: 'FLOAT',
  score: 'FLOAT',
  scores: 'MAP(VARCHAR, FLOAT)',
  mix_version: 'VARCHAR',
  copies: 'INTEGER',
  image_embedding: 'FLOAT[]',
  text_embedding: 'FLOAT[]',
  model_version: 'VARCHAR',
  config_hash: 'VARCHAR',
  // INT64 + converted type TIMESTAMP_MILLIS (Arrow reads it as timestamp[ms, tz=UTC])
  curated_at: 'TIMESTAMP',
  attrs: 'MAP(VARCHAR, VARCHAR)',
};

const f32 = (x: number | null): number | null => (x === null ? null : Math.fround(x));
const f32s = (xs: number[] | null): number[] | null => (xs === null ? null : xs.map(Math.fround));

/** What DuckDB (through duckQuery) should return for a row. */
function expectedDuck(r: CuratedRow): Record<string, unknown> {
  return {
    ...r,
    keep_ratio: f32(r.keep_ratio),
    tags: r.tags === null ? null : r.tags.map((t) => ({ label: t.label, score: Math.fround(t.score) })),
    clip_score: f32(r.clip_score),
    score: f32(r.score),
    image_embedding: f32s(r.image_embedding),
    text_embedding: f32s(r.text_embedding),
    curated_at: new Date(r.curated_at),
    attrs: Object.entries(r.attrs).map(([key, value]) => ({ key, value })),
    scores: Object.entries(r.scores).map(([key, value]) => ({ key, value: Math.fround(value) })),
  };
}

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

async function writeSample(name: string, rows: CuratedRow[], opts?: Parameters<typeof writeRowsParquet>[2]): Promise<string> {
  const p = join(dir, name);
  const { bytes } = await writeRowsParquet(p, rows, opts);
  assert.equal(bytes, statSync(p).size);
  return p;
}

test('DuckDB sees the documented column types', async () => {
  const p = await writeSample('types.parquet', SAMPLE);
  const types = await duckDescribe(p);
  assert.deepEqual(Object.keys(types), [...CURATED_ROW_COLUMNS]);
  assert.deepEqual(types, EXPECTED_TYPES);
});

test('DuckDB reads back exact values: nulls, empty lists, unicode, binary, int64, timestamps, maps', async () => {
  const p = await writeSample('values.parquet', SAMPLE);
  const rows = await duckQuery(`SELECT * FROM read_parquet(${sqlQuote(p)})`);
  assert.equal(rows.length, SAMPLE.length);
  SAMPLE.forEach((r, i) => {
    const got = rows[i]!;
    assert.ok(Buffer.isBuffer(got['image']));
    assert.ok((got['image'] as Buffer).equals(r.image), `image bytes of row ${i}`);
    assert.deepEqual(got, expectedDuck(r), `row ${i}`);
  });

  const checks = await duckQuery(`
    SELECT id, md5(image) AS md5, octet_length(image) AS n, source_offset = 1099511627776 AS big,
           epoch_ms(curated_at) AS ms, kept_patches IS NULL AS kp_null, len(kept_patches) AS kp_len,
           tags IS NULL AS tags_null, len(tags) AS tags_len, cardinality(attrs) AS attrs_n,
           attrs['lang'] AS lang, length(caption) AS chars, strlen(caption) AS utf8_bytes
    FROM read_parquet(${sqlQuote(p)})`);
  assert.deepEqual(
    checks,
    SAMPLE.map((r) => ({
      id: r.id,
      md5: md5(r.image),
      n: r.image.length,
      big: r.source_offset === 2 ** 40,
      ms: r.curated_at,
      kp_null: r.kept_patches === null,
      kp_len: r.kept_patches === null ? null : r.kept_patches.length,
      tags_null: r.tags === null,
      tags_len: r.tags === null ? null : r.tags.length,
      attrs_n: Object.keys(r.attrs).length,
      lang: r.attrs['lang'] ?? null,
      chars: [...r.caption].length, // code points
      utf8_bytes: Buffer.byteLength(r.caption, 'utf8'),
    })),
  );
});

test('string filters find every row (parquetjs-lite byte-array statistics are off)', async () => {
  // JS orders '😀' (UTF-16 D83D) before 'Ａ' (FF21); UTF-8 bytes order them the other way round.
  // With parquetjs-lite's min/max, DuckDB would prune the row group and miss one of them.
  const rows = [
    { ...baseRow(10), caption: '😀', image: Buffer.from([0xff]) },
    { ...baseRow(11), caption: 'Ａ', image: Buffer.from([0xef, 0xbf, 0xbd]) },
  ];
  const p = await writeSample('filters.parquet', rows);
  const q = async (where: string): Promise<unknown> =>
    (await duckQuery(`SELECT count(*) AS n FROM read_parquet(${sqlQuote(p)}) WHERE ${where}`))[0]!['n'];
  assert.equal(await q(`caption = 'Ａ'`), 1);
  assert.equal(await q(`caption = '😀'`), 1);
  assert.equal(await q(`image = '\\xEF\\xBF\\xBD'::BLOB`), 1);
  assert.equal(await q(`image = '\\xFF'::BLOB`), 1);
  assert.equal(await q(`source_offset = ${2 ** 40 + 11}`), 1);
});

test('several row groups and pages, every codec', async () => {
  const rows = Array.from({ length: 23 }, (_, i) => ({
    ...baseRow(i),
    kept_patches: i % 4 === 0 ? null : Array.from({ length: i % 5 }, (_, k) => k * i),
    tags: i % 3 === 0 ? [] : [{ label: `t${i}`, score: i / 7 }],
  }));
  for (const compression of ['UNCOMPRESSED', 'GZIP', 'SNAPPY'] as const) {
    const p = await writeSample(`groups-${compression}.parquet`, rows, { rowGroupSize: 5, pageSize: 2, compression });
    const groups = await duckQuery(`SELECT count(DISTINCT row_group_id) AS g, min(compression) AS c FROM parquet_metadata(${sqlQuote(p)}) WHERE path_in_schema = 'id'`);
    assert.deepEqual(groups, [{ g: 5, c: compression }]);
    // encoded image bytes do not compress; the image column is always stored uncompressed
    const img = await duckQuery(`SELECT DISTINCT compression AS c FROM parquet_metadata(${sqlQuote(p)}) WHERE path_in_schema = 'image'`);
    assert.deepEqual(img, [{ c: 'UNCOMPRESSED' }]);
    const got = await duckQuery(`SELECT * FROM read_parquet(${sqlQuote(p)})`);
    assert.deepEqual(got, rows.map(expectedDuck), compression);
  }
});

test('file metadata carries the schema version', async () => {
  const p = await writeSample('kv.parquet', SAMPLE.slice(0, 1));
  const kv = await duckQuery(`SELECT decode(key) AS k, decode(value) AS v FROM parquet_kv_metadata(${sqlQuote(p)})`);
  assert.deepEqual(kv, [{ k: PARQUET_SCHEMA_VERSION_KEY, v: String(PARQUET_SCHEMA_VERSION) }]);
});

test('an empty row list still gives a readable, typed file', async () => {
  const p = await writeSample('empty.parquet', []);
  assert.deepEqual(await duckDescribe(p), EXPECTED_TYPES);
  assert.deepEqual(await duckQuery(`SELECT count(*) AS n FROM read_parquet(${sqlQuote(p)})`), [{ n: 0 }]);
});

test('invalid rows are rejected before anything is written', async () => {
  const p = join(dir, 'bad.parquet');
  await assert.rejects(writeRowsParquet(p, [{ ...baseRow(0), width: 3.5 }]), /width/);
  await assert.rejects(writeRowsParquet(p, [{ ...baseRow(0), source_offset: 2 ** 60 }]), /source_offset/);
  await assert.rejects(writeRowsParquet(p, [{ ...baseRow(0), score: NaN }]), /score/);
  await assert.rejects(writeRowsParquet(p, [{ ...baseRow(0), kept_patches: [1, 2 ** 31] }]), /kept_patches/);
  assert.equal(existsSync(p), false);
});

test('readParquetRows (project tooling) returns CuratedRow-shaped rows', async () => {
  const p = await writeSample('tooling.parquet', SAMPLE);
  const got = await readParquetRows(p);
  assert.deepEqual(
    got,
    SAMPLE.map((r) => ({
      ...expectedDuck(r),
      curated_at: r.curated_at,
      attrs: r.attrs,
      scores: Object.fromEntries(Object.entries(r.scores).map(([k, v]) => [k, Math.fround(v)])),
    })),
  );
});
