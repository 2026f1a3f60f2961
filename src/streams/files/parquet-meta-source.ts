/**
 * Parquet metadata input (LAION `URL`/`TEXT`, DataComp and img2dataset `url`/`text`): one event per row with
 * `image` null and `image_url` set; images are fetched later under the limits of docs/FORMATS.md, Limits (`safe-fetch.ts`).
 *
 * Columns: URL from the first of url, URL, image_url (then any case-insensitive match); caption from caption,
 * TEXT, text (missing: ""); id from key, uid, id, SAMPLE_ID, else the SHA-1 of the URL, which is stable across
 * runs; crawl_time from a crawl_time column, else 0 (unknown). Other flat columns go to `attrs` as strings, except
 * pandas' `__index_level_N__`. Nested and repeated columns are not read.
 *
 * Read with parquetjs-lite one row group at a time. Before any row is read the file's codecs and encodings are
 * checked against what parquetjs-lite can decode (UNCOMPRESSED, SNAPPY, GZIP; PLAIN, RLE, dictionary), so an
 * unreadable file fails at once with a message saying why, not after part of it was emitted. Two compatibility
 * steps: the footer's format version 2 is accepted (the library refuses it although it can decode the pages
 * when the encodings are the ones above), and RLE_DICTIONARY data pages, which are byte-for-byte the
 * PLAIN_DICTIONARY layout, are decoded with the library's PLAIN_DICTIONARY codec.
 */
import { createHash } from 'node:crypto';
import type { CrawlEvent } from '../../records';
import { attrString, errorMessage, idProblem, RecordFactory, type FileRecord, type FileSourceLimits, type InputMeter } from './file-record';

// parquetjs-lite ships no typings; these are the few members used here.
interface PqField {
  name: string;
  isNested?: boolean;
  repetitionType?: string;
}
interface PqColumnChunk {
  meta_data?: { codec: number; encodings?: number[]; path_in_schema: string[] };
}
interface PqRowGroup {
  num_rows: unknown;
  columns: PqColumnChunk[];
}
interface PqMetadata {
  version: number;
  row_groups: PqRowGroup[];
}
interface PqSchema {
  fields: Record<string, PqField>;
}
interface PqEnvelopeReader {
  readHeader(): Promise<void>;
  readFooter(): Promise<PqMetadata>;
  readRowGroup(schema: PqSchema, rowGroup: PqRowGroup, columnList: string[][]): Promise<unknown>;
  close(): Promise<void>;
}
interface PqReader {
  schema: PqSchema;
}
interface PqLib {
  ParquetEnvelopeReader: { openFile(path: string): Promise<PqEnvelopeReader> };
  ParquetReader: new (metadata: PqMetadata, envelopeReader: PqEnvelopeReader, opts?: { rawStatistics?: boolean }) => PqReader;
  ParquetShredder: { materializeRecords(schema: PqSchema, buffer: unknown): Record<string, unknown>[] };
}
type PqCodecs = Record<string, unknown>;

const parquet = require('parquetjs-lite') as PqLib;

let codecShimInstalled = false;
function installCodecShim(): void {
  if (codecShimInstalled) return;
  codecShimInstalled = true;
  const codecs = require('parquetjs-lite/lib/codec') as PqCodecs;
  if (!('RLE_DICTIONARY' in codecs) && 'PLAIN_DICTIONARY' in codecs) codecs.RLE_DICTIONARY = codecs.PLAIN_DICTIONARY;
}

const CODECS = ['UNCOMPRESSED', 'SNAPPY', 'GZIP', 'LZO', 'BROTLI', 'LZ4', 'ZSTD', 'LZ4_RAW'];
const READABLE_CODECS = new Set([0, 1, 2]);
const ENCODINGS = [
  'PLAIN',
  'GROUP_VAR_INT',
  'PLAIN_DICTIONARY',
  'RLE',
  'BIT_PACKED',
  'DELTA_BINARY_PACKED',
  'DELTA_LENGTH_BYTE_ARRAY',
  'DELTA_BYTE_ARRAY',
  'RLE_DICTIONARY',
  'BYTE_STREAM_SPLIT',
];
// BIT_PACKED is listed by old parquet-mr writers for level streams they never use; let it through.
const READABLE_ENCODINGS = new Set([0, 2, 3, 4, 8]);

const URL_COLUMNS = ['url', 'URL', 'image_url'];
const CAPTION_COLUMNS = ['caption', 'TEXT', 'text'];
const ID_COLUMNS = ['key', 'uid', 'id', 'SAMPLE_ID'];

function pickColumn(names: string[], wanted: string[]): string | null {
  for (const w of wanted) if (names.includes(w)) return w;
  const lower = wanted.map((w) => w.toLowerCase());
  return names.find((n) => lower.includes(n.toLowerCase())) ?? null;
}

/** Reads a Parquet metadata file; see the module comment. `topic` names the input in the coordinates. */
export async function* readParquetMeta(file: string, topic: string, limits: FileSourceLimits, meter?: InputMeter): AsyncGenerator<FileRecord> {
  installCodecShim();
  const cannot = (why: string): Error => new Error(`cannot read Parquet file ${file}: ${why}`);
  let envelope: PqEnvelopeReader;
  try {
    envelope = await parquet.ParquetEnvelopeReader.openFile(file);
  } catch (err) {
    throw cannot(errorMessage(err));
  }
  try {
    let metadata: PqMetadata;
    let schema: PqSchema;
    try {
      await envelope.readHeader();
      metadata = await envelope.readFooter();
      if (metadata.version === 2) metadata.version = 1; // see the module comment
      schema = new parquet.ParquetReader(metadata, envelope, { rawStatistics: true }).schema;
    } catch (err) {
      throw cannot(`${errorMessage(err)} (not a Parquet file, or one parquetjs-lite cannot parse)`);
    }

    const flat = Object.values(schema.fields).filter((f) => !f.isNested && f.repetitionType !== 'REPEATED');
    const names = flat.map((f) => f.name);
    const urlCol = pickColumn(names, URL_COLUMNS);
    if (urlCol === null) {
      throw cannot(`no URL column (looked for ${URL_COLUMNS.join(', ')}); flat columns: ${names.join(', ') || 'none'}`);
    }
    const captionCol = pickColumn(names, CAPTION_COLUMNS);
    const idCol = pickColumn(names, ID_COLUMNS);
    const timeCol = pickColumn(names, ['crawl_time']);
    const attrCols = names.filter((n) => ![urlCol, captionCol, idCol, timeCol].includes(n) && !/^__index_level_\d+__$/.test(n));
    const columns = [urlCol, captionCol, idCol, timeCol, ...attrCols].filter((c): c is string => c !== null);
    checkReadable(metadata, new Set(columns), cannot);

    const records = new RecordFactory(topic, limits);
    if (meter) Object.assign(meter, { done: 0, total: metadata.row_groups.reduce((a, g) => a + Number(g.num_rows), 0), unit: 'rows' });
    let rowsRead = 0;
    for (let g = 0; g < metadata.row_groups.length; g++) {
      const group = metadata.row_groups[g];
      let rows: Record<string, unknown>[];
      try {
        const buffer = await envelope.readRowGroup(
          schema,
          group,
          columns.map((c) => [c]),
        );
        rows = parquet.ParquetShredder.materializeRecords(schema, buffer);
      } catch (err) {
        if (rowsRead === 0) throw cannot(`row group ${g}: ${errorMessage(err)}`);
        // Later groups: keep every row's offset by dead-lettering the rows this group should have held.
        const n = Number(group.num_rows);
        const msg = `row group ${g} of ${file} cannot be decoded: ${errorMessage(err)}`;
        for (let i = 0; i < n; i++) {
          if (meter) meter.done++;
          yield records.dead('decode_error', msg, Buffer.from(JSON.stringify({ row_group: g, row: i })));
        }
        continue;
      }
      for (const row of rows) {
        rowsRead++;
        if (meter) meter.done++;
        yield rowRecord(row, { urlCol, captionCol, idCol, timeCol, attrCols, topic }, records, limits);
      }
    }
  } finally {
    await envelope.close().catch(() => undefined);
  }
}

function checkReadable(metadata: PqMetadata, wanted: Set<string>, cannot: (why: string) => Error): void {
  for (const group of metadata.row_groups) {
    for (const chunk of group.columns) {
      const md = chunk.meta_data;
      if (!md || !wanted.has(md.path_in_schema[0])) continue;
      const column = md.path_in_schema.join('.');
      if (!READABLE_CODECS.has(md.codec)) {
        throw cannot(
          `column ${column} uses ${CODECS[md.codec] ?? `codec ${md.codec}`} compression; parquetjs-lite reads UNCOMPRESSED, SNAPPY and GZIP (rewrite the file with one of those)`,
        );
      }
      const bad = (md.encodings ?? []).filter((e) => !READABLE_ENCODINGS.has(e));
      if (bad.length > 0) {
        const list = bad.map((e) => ENCODINGS[e] ?? String(e)).join(', ');
        throw cannot(
          `column ${column} uses ${list} encoding, which parquetjs-lite cannot decode (rewrite with Parquet format version 1.0 encodings)`,
        );
      }
    }
  }
}

interface RowColumns {
  urlCol: string;
  captionCol: string | null;
  idCol: string | null;
  timeCol: string | null;
  attrCols: string[];
  topic: string;
}

function rowJson(row: Record<string, unknown>): Buffer {
  const out: Record<string, string | number | boolean | null> = {};
  for (const [k, v] of Object.entries(row)) {
    out[k] = typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined ? (v ?? null) : (attrString(v) ?? null);
  }
  return Buffer.from(JSON.stringify(out));
}

function timeValue(v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v)) return Math.trunc(v);
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Date && !Number.isNaN(v.getTime())) return v.getTime();
  if (typeof v === 'string') {
    const t = /^-?\d+$/.test(v.trim()) ? Number(v) : Date.parse(v);
    return Number.isFinite(t) ? t : 0;
  }
  return 0;
}

function rowRecord(row: Record<string, unknown>, cols: RowColumns, records: RecordFactory, limits: FileSourceLimits): FileRecord {
  const raw = rowJson(row);
  const url = (attrString(row[cols.urlCol]) ?? '').trim();
  const explicitId = cols.idCol ? (attrString(row[cols.idCol]) ?? '') : '';
  if (url === '') {
    return records.dead('missing_image', `column ${cols.urlCol} is empty`, raw, explicitId || null);
  }
  const id = explicitId !== '' ? explicitId : createHash('sha1').update(url).digest('hex');
  const idBad = idProblem(id);
  if (idBad) return records.dead('id_invalid', `${cols.idCol}: ${idBad}`, raw, null, undefined, { image_url: url });
  if (raw.length > limits.maxRecordBytes) {
    return records.dead('record_too_large', `row of ${raw.length} bytes exceeds maxRecordBytes ${limits.maxRecordBytes}`, raw, id, undefined, { image_url: url });
  }
  const attrs: Record<string, string> = {};
  for (const c of cols.attrCols) {
    const s = attrString(row[c]);
    if (s !== undefined) attrs[c] = s;
  }
  const event: CrawlEvent = {
    id,
    url: null,
    image_url: url,
    image: null,
    caption: cols.captionCol ? (attrString(row[cols.captionCol]) ?? '') : '',
    crawl_time: cols.timeCol ? timeValue(row[cols.timeCol]) : 0,
    source: cols.topic,
    attrs,
  };
  return records.ok(event, raw);
}
