/**
 * Curated-row Parquet shards (docs/FORMATS.md, Output rows), written with parquetjs-lite.
 *
 * Physical layout (checked with DuckDB and pyarrow, see test/streams/parquet-rows.test.ts):
 * - lists (kept_patches, tags, image_embedding, text_embedding) use the standard 3-level
 *   LIST encoding `optional group x (LIST) { repeated group list { required <T> element } }`,
 *   so null and [] stay distinct. (A bare `repeated int32` would also read as INTEGER[] in
 *   DuckDB, but cannot be null and Arrow reads it as a non-nullable list.)
 * - attrs is `required group attrs (MAP) { repeated group key_value { required key (UTF8);
 *   required value (UTF8) } }` -> DuckDB MAP(VARCHAR, VARCHAR), Arrow map<string, string>.
 * - curated_at is INT64 with converted type TIMESTAMP_MILLIS (parquetjs-lite writes no
 *   LogicalType). DuckDB reads TIMESTAMP; Arrow reads timestamp[ms, tz=UTC]. Same instant.
 * - min/max statistics are switched off for every BYTE_ARRAY column: parquetjs-lite computes
 *   them with JS `<`/`>` (UTF-16 order for strings, lossy UTF-8-decoded strings for binary),
 *   which is not Parquet's unsigned byte order, and DuckDB prunes row groups with them, so
 *   `WHERE caption = ...` could silently miss rows. Numeric columns keep their statistics.
 * - `image` is always stored UNCOMPRESSED whatever `compression` says: encoded images do not
 *   compress, and snappyjs/gzip over them cost ~0.15 s/~1.1 s per 30 MB for nothing.
 * - data pages are V1 and the page index is not written: parquetjs-lite's V2 pages put the
 *   value count in num_rows for repeated columns, and its OffsetIndex has NaN first_row_index
 *   from the second page on.
 */
import { promises as fsp, createWriteStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { ParquetReader, ParquetSchema, ParquetWriter } from 'parquetjs-lite';
import { PARQUET_LOGICAL_TYPES } from 'parquetjs-lite/lib/types';
import type { ParquetCompression, ParquetFieldDefinition, ParquetSchemaDefinition } from 'parquetjs-lite';
import type { CuratedRow } from '../../records';

export const PARQUET_SCHEMA_VERSION = 2;
/** Key of the file-level key/value metadata entry holding PARQUET_SCHEMA_VERSION. */
export const PARQUET_SCHEMA_VERSION_KEY = 'squeeze.schema_version';

export const DEFAULT_ROW_GROUP_SIZE = 1024;
export const DEFAULT_PAGE_SIZE = 256;
export const DEFAULT_COMPRESSION: ParquetCompression = 'SNAPPY';

export interface WriteRowsParquetOptions {
  /** rows per row group (default 1024) */
  rowGroupSize?: number;
  /** codec for every column except `image`, which is stored uncompressed (already-encoded image bytes); default SNAPPY */
  compression?: ParquetCompression;
  /** rows per data page (default 256) */
  pageSize?: number;
}

const str = (): ParquetFieldDefinition => ({ type: 'UTF8', statistics: false });
const i32 = (): ParquetFieldDefinition => ({ type: 'INT32' });
const optI32 = (): ParquetFieldDefinition => ({ type: 'INT32', optional: true });
const optF32 = (): ParquetFieldDefinition => ({ type: 'FLOAT', optional: true });
/** 3-level LIST: optional group name (LIST) { repeated group list { required element } } */
const optList = (element: ParquetFieldDefinition): ParquetFieldDefinition => ({
  type: 'LIST',
  optional: true,
  fields: { list: { repeated: true, fields: { element } } },
});

function deepFreeze<T extends object>(o: T): T {
  for (const v of Object.values(o)) if (v && typeof v === 'object') deepFreeze(v as object);
  return Object.freeze(o);
}

/**
 * The parquetjs-lite schema definition of a curated row, in the column order of docs/FORMATS.md, Output rows.
 * Leaves carry no compression here; writeRowsParquet adds it to a copy
 * (parquetjs-lite mutates definitions it is given, so this object is never passed to it).
 */
export const CURATED_ROW_SCHEMA: Readonly<ParquetSchemaDefinition> = deepFreeze({
  id: str(),
  source_topic: str(),
  source_partition: i32(),
  source_offset: { type: 'INT64' },
  image: { type: 'BYTE_ARRAY', statistics: false },
  image_mime: str(),
  width: i32(),
  height: i32(),
  grid_rows: optI32(),
  grid_cols: optI32(),
  kept_patches: optList({ type: 'INT32' }),
  keep_ratio: optF32(),
  caption: str(),
  caption_raw: str(),
  tags: optList({ fields: { label: str(), score: { type: 'FLOAT' } } }),
  clip_score: optF32(),
  score: optF32(),
  scores: {
    type: 'MAP',
    fields: { key_value: { repeated: true, fields: { key: str(), value: { type: 'FLOAT' } } } },
  },
  mix_version: { type: 'UTF8', optional: true, statistics: false },
  copies: i32(),
  image_embedding: optList({ type: 'FLOAT' }),
  text_embedding: optList({ type: 'FLOAT' }),
  model_version: str(),
  config_hash: str(),
  curated_at: { type: 'TIMESTAMP_MILLIS' },
  attrs: {
    type: 'MAP',
    fields: { key_value: { repeated: true, fields: { key: str(), value: str() } } },
  },
});

/** The column names of a curated row, in file order. */
export const CURATED_ROW_COLUMNS: readonly (keyof CuratedRow)[] = Object.keys(CURATED_ROW_SCHEMA) as (keyof CuratedRow)[];

function withCompression(def: Readonly<ParquetSchemaDefinition>, compression: ParquetCompression): ParquetSchemaDefinition {
  const out: ParquetSchemaDefinition = {};
  for (const [name, field] of Object.entries(def)) {
    if (field.fields) {
      out[name] = { ...field, fields: withCompression(field.fields, compression) };
    } else {
      out[name] = { ...field, compression: name === 'image' && field.type === 'BYTE_ARRAY' ? 'UNCOMPRESSED' : compression };
    }
  }
  return out;
}

const schemaCache = new Map<ParquetCompression, ParquetSchema>();
function parquetSchema(compression: ParquetCompression): ParquetSchema {
  let s = schemaCache.get(compression);
  if (!s) {
    s = new ParquetSchema(withCompression(CURATED_ROW_SCHEMA, compression));
    schemaCache.set(compression, s);
  }
  return s;
}

const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

class RowError extends Error {
  constructor(row: number, id: unknown, column: string, what: string) {
    super(`parquet row ${row} (id ${JSON.stringify(id)}): column ${column} ${what}`);
    this.name = 'ParquetRowError';
  }
}

/**
 * Converts a CuratedRow into the nested shape parquetjs-lite shreds, validating values that the
 * library would otherwise coerce silently (parseInt truncates 3.7 to 3, int64 > 2^53 loses digits).
 */
function toParquetRecord(row: CuratedRow, index: number): Record<string, unknown> {
  const fail = (column: string, what: string): never => {
    throw new RowError(index, row.id, column, what);
  };
  const s = (column: keyof CuratedRow): string => {
    const v = row[column];
    return typeof v === 'string' ? v : fail(column, 'must be a string');
  };
  const int32 = (column: string, v: unknown): number =>
    typeof v === 'number' && Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX ? v : fail(column, `must be an int32, got ${String(v)}`);
  const optInt32 = (column: keyof CuratedRow): number | null => (row[column] === null ? null : int32(column, row[column]));
  const float = (column: string, v: unknown): number =>
    typeof v === 'number' && !Number.isNaN(v) ? v : fail(column, `must be a non-NaN number, got ${String(v)}`);
  const optFloat = (column: keyof CuratedRow): number | null => (row[column] === null ? null : float(column, row[column]));
  const list = <T>(column: keyof CuratedRow, conv: (v: unknown) => T): { list: { element: T }[] } | null => {
    const v = row[column];
    if (v === null) return null;
    if (!Array.isArray(v)) return fail(column, 'must be an array or null');
    return { list: v.map((e: unknown) => ({ element: conv(e) })) };
  };

  const offset = row.source_offset;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset)) fail('source_offset', `must be a safe integer, got ${String(offset)}`);
  const curatedAt = row.curated_at;
  if (typeof curatedAt !== 'number' || !Number.isSafeInteger(curatedAt) || curatedAt < 0) {
    fail('curated_at', `must be non-negative epoch milliseconds, got ${String(curatedAt)}`);
  }
  if (!((row.image as unknown) instanceof Uint8Array)) fail('image', 'must be a Buffer or Uint8Array');
  const attrs = row.attrs;
  if (attrs === null || typeof attrs !== 'object' || Array.isArray(attrs)) fail('attrs', 'must be an object of strings');
  const keyValue = Object.entries(attrs).map(([key, value]) =>
    typeof value === 'string' ? { key, value } : fail('attrs', `value of ${JSON.stringify(key)} must be a string`),
  );

  return {
    id: s('id'),
    source_topic: s('source_topic'),
    source_partition: int32('source_partition', row.source_partition),
    source_offset: offset,
    image: row.image,
    image_mime: s('image_mime'),
    width: int32('width', row.width),
    height: int32('height', row.height),
    grid_rows: optInt32('grid_rows'),
    grid_cols: optInt32('grid_cols'),
    kept_patches: list('kept_patches', (e) => int32('kept_patches[]', e)),
    keep_ratio: optFloat('keep_ratio'),
    caption: s('caption'),
    caption_raw: s('caption_raw'),
    tags: list('tags', (e) => {
      const t = e as { label?: unknown; score?: unknown } | null;
      if (t === null || typeof t !== 'object' || typeof t.label !== 'string') return fail('tags[]', 'must be {label: string, score: number}');
      return { label: t.label, score: float('tags[].score', t.score) };
    }),
    clip_score: optFloat('clip_score'),
    score: optFloat('score'),
    scores: { key_value: Object.entries(row.scores ?? {}).map(([key, value]) => ({ key, value: float(`scores.${key}`, value) })) },
    mix_version: row.mix_version === null ? null : s('mix_version'),
    copies: int32('copies', row.copies),
    image_embedding: list('image_embedding', (e) => float('image_embedding[]', e)),
    text_embedding: list('text_embedding', (e) => float('text_embedding[]', e)),
    model_version: s('model_version'),
    config_hash: s('config_hash'),
    curated_at: curatedAt,
    attrs: { key_value: keyValue },
  };
}

function openStream(path: string): Promise<WriteStream> {
  return new Promise((resolve, reject) => {
    const ws = createWriteStream(path, { flags: 'w' });
    ws.once('open', () => {
      ws.off('error', reject);
      resolve(ws);
    });
    ws.once('error', reject);
  });
}

function libError(err: unknown): Error {
  // parquetjs-lite throws bare strings
  return err instanceof Error ? err : new Error(`parquetjs-lite: ${String(err)}`);
}

/**
 * Writes `rows` to a new Parquet file at `path` (truncating it), fsyncs it and returns its size.
 * The caller writes to a temporary path and renames; on failure the partial file is removed.
 */
export async function writeRowsParquet(
  path: string,
  rows: CuratedRow[],
  opts: WriteRowsParquetOptions = {},
): Promise<{ bytes: number }> {
  const rowGroupSize = opts.rowGroupSize ?? DEFAULT_ROW_GROUP_SIZE;
  const pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
  const compression = opts.compression ?? DEFAULT_COMPRESSION;
  if (!Number.isInteger(rowGroupSize) || rowGroupSize < 1) throw new RangeError(`rowGroupSize must be a positive integer, got ${rowGroupSize}`);
  if (!Number.isInteger(pageSize) || pageSize < 1) throw new RangeError(`pageSize must be a positive integer, got ${pageSize}`);
  if (!['UNCOMPRESSED', 'GZIP', 'SNAPPY'].includes(compression)) throw new RangeError(`unsupported compression ${String(compression)}`);
  const schema = parquetSchema(compression);

  // Validate and convert everything before touching the file.
  const records = rows.map(toParquetRecord);

  const ws = await openStream(path);
  let streamError = null as Error | null;
  ws.on('error', (e: Error) => {
    streamError = e;
  });
  try {
    const writer = await ParquetWriter.openStream(schema, ws, {
      rowGroupSize,
      pageSize,
      useDataPageV2: false,
      pageIndex: false,
    });
    writer.setMetadata(PARQUET_SCHEMA_VERSION_KEY, String(PARQUET_SCHEMA_VERSION));
    try {
      for (const r of records) await writer.appendRow(r);
      await writer.close(); // ends the stream and waits for 'finish'
    } catch (e) {
      throw libError(e);
    }
    if (streamError) throw streamError;
    if (!ws.closed) await new Promise<void>((resolve) => ws.once('close', () => resolve()));
  } catch (e) {
    ws.destroy();
    await fsp.rm(path, { force: true }).catch(() => undefined);
    throw e;
  }

  const fh = await fsp.open(path, 'r+');
  try {
    await fh.sync();
    const st = await fh.stat();
    return { bytes: st.size };
  } finally {
    await fh.close();
  }
}

/** A list column as parquetjs-lite's reader materializes it: absent = null, {} = [], {list: [{element}]}. */
function fromList(v: unknown): unknown[] | null {
  if (v === undefined || v === null) return null;
  const list = (v as { list?: { element?: unknown }[] }).list;
  return list ? list.map((e) => (e && 'element' in e ? e.element : null)) : [];
}

function fromMap(v: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const kvs = v ? (v as { key_value?: { key?: unknown; value?: unknown }[] }).key_value : undefined;
  for (const kv of kvs ?? []) out[String(kv.key)] = kv.value ?? null;
  return out;
}

function fromInt64(v: unknown): unknown {
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return v;
}

/**
 * parquetjs-lite 0.8.7 decodes INT64 as bigint but converts TIMESTAMP_MILLIS with `new Date(+v)`,
 * which throws on a bigint, so its reader cannot open any file with a TIMESTAMP_MILLIS column
 * (not even its own: the column statistics are decoded on open). Make that conversion accept
 * bigint; numbers behave as before. Idempotent; only affects reading.
 */
function patchTimestampMillisDecoding(): void {
  const t = PARQUET_LOGICAL_TYPES['TIMESTAMP_MILLIS'];
  if (!t || (t.fromPrimitive as { squeezePatched?: boolean } | undefined)?.squeezePatched) return;
  const fromPrimitive = (v: unknown): Date => new Date(Number(v));
  (fromPrimitive as { squeezePatched?: boolean }).squeezePatched = true;
  t.fromPrimitive = fromPrimitive;
}

/**
 * Reads a Parquet file with parquetjs-lite's own reader, for project tooling. Curated-row files
 * come back in CuratedRow shape (lists as arrays or null, attrs as an object, source_offset as a
 * number when safe, curated_at as epoch ms); unknown columns are passed through as the library
 * returns them. Tests of the writer must use an independent reader (DuckDB) instead.
 */
export async function readParquetRows(path: string): Promise<Record<string, unknown>[]> {
  patchTimestampMillisDecoding();
  const reader = await ParquetReader.openFile(path);
  try {
    const inFile = new Set(Object.keys(reader.getSchema().fields));
    const columns = CURATED_ROW_COLUMNS.filter((c) => inFile.has(c));
    const cursor = reader.getCursor();
    const out: Record<string, unknown>[] = [];
    for (let rec = await cursor.next(); rec; rec = await cursor.next()) {
      const row: Record<string, unknown> = {};
      for (const col of columns) {
        const v = rec[col];
        if (col === 'kept_patches' || col === 'tags' || col === 'image_embedding' || col === 'text_embedding') row[col] = fromList(v);
        else if (col === 'attrs' || col === 'scores') row[col] = fromMap(v);
        else if (col === 'source_offset') row[col] = fromInt64(v);
        else if (col === 'curated_at') row[col] = v instanceof Date ? v.getTime() : fromInt64(v);
        else row[col] = v === undefined ? null : v;
      }
      for (const [k, v] of Object.entries(rec)) if (!(k in row)) row[k] = typeof v === 'bigint' ? fromInt64(v) : v;
      out.push(row);
    }
    return out;
  } finally {
    await reader.close();
  }
}
