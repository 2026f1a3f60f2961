/**
 * Parquet metadata input (LAION `URL`/`TEXT`, DataComp and img2dataset `url`/`text`): one event per row with
 * `image` null and `image_url` set; images are fetched later under the limits of docs/FORMATS.md, Limits (`safe-fetch.ts`).
 *
 * Columns: URL from the first of url, URL, image_url (then any case-insensitive match); caption from caption,
 * TEXT, text (missing: ""); id from key, uid, id, SAMPLE_ID, else the SHA-1 of the URL, which is stable across
 * runs; crawl_time from a crawl_time column, else 0 (unknown). Other flat columns go to `attrs` as strings, except
 * pandas' `__index_level_N__`. Nested and repeated columns are not read.
 *
 * Read with hyparquet one row group at a time, every codec the format has included (hyparquet-compressors:
 * SNAPPY, GZIP, BROTLI, ZSTD, LZ4, LZ4_RAW) and every encoding, format versions 1 and 2. A file that is not
 * Parquet, or whose first row group cannot be decoded, is the user's mistake (one line); a later row group
 * that cannot be decoded makes its rows dead letters, so every row keeps its offset.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { type AsyncBuffer, type FileMetaData, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import type { CrawlEvent } from '../../records';
import { attrString, errorMessage, idProblem, RecordFactory, type FileRecord, type FileSourceLimits, type InputMeter } from './file-record';

const URL_COLUMNS = ['url', 'URL', 'image_url'];
const CAPTION_COLUMNS = ['caption', 'TEXT', 'text'];
const ID_COLUMNS = ['key', 'uid', 'id', 'SAMPLE_ID'];

function pickColumn(names: string[], wanted: string[]): string | null {
  for (const w of wanted) if (names.includes(w)) return w;
  const lower = wanted.map((w) => w.toLowerCase());
  return names.find((n) => lower.includes(n.toLowerCase())) ?? null;
}

/** A file read by byte ranges, as hyparquet asks for them. */
async function fileBuffer(path: string): Promise<{ buffer: AsyncBuffer; close: () => Promise<void> }> {
  const handle = await fs.open(path, 'r');
  const { size } = await handle.stat();
  const buffer: AsyncBuffer = {
    byteLength: size,
    async slice(start: number, end = size): Promise<ArrayBuffer> {
      const out = new Uint8Array(Math.max(0, end - start));
      let at = 0;
      while (at < out.length) {
        const { bytesRead } = await handle.read(out, at, out.length - at, start + at);
        if (bytesRead === 0) break;
        at += bytesRead;
      }
      return out.buffer;
    },
  };
  return { buffer, close: () => handle.close() };
}

/** Reads a Parquet metadata file; see the module comment. `topic` names the input in the coordinates. */
export async function* readParquetMeta(file: string, topic: string, limits: FileSourceLimits, meter?: InputMeter): AsyncGenerator<FileRecord> {
  const cannot = (why: string): Error => new Error(`cannot read Parquet file ${file}: ${why}`);
  let opened: { buffer: AsyncBuffer; close: () => Promise<void> };
  try {
    opened = await fileBuffer(file);
  } catch (err) {
    throw cannot(errorMessage(err));
  }
  try {
    let metadata: FileMetaData;
    try {
      metadata = await parquetMetadataAsync(opened.buffer);
    } catch (err) {
      throw cannot(`${errorMessage(err)} (not a Parquet file)`);
    }
    const flat = parquetSchema(metadata).children.filter((c) => c.children.length === 0 && c.element.repetition_type !== 'REPEATED');
    const names = flat.map((c) => c.element.name);
    const urlCol = pickColumn(names, URL_COLUMNS);
    if (urlCol === null) {
      throw cannot(`no URL column (looked for ${URL_COLUMNS.join(', ')}); flat columns: ${names.join(', ') || 'none'}`);
    }
    const captionCol = pickColumn(names, CAPTION_COLUMNS);
    const idCol = pickColumn(names, ID_COLUMNS);
    const timeCol = pickColumn(names, ['crawl_time']);
    const attrCols = names.filter((n) => ![urlCol, captionCol, idCol, timeCol].includes(n) && !/^__index_level_\d+__$/.test(n));
    const columns = [urlCol, captionCol, idCol, timeCol, ...attrCols].filter((c): c is string => c !== null);

    const records = new RecordFactory(topic, limits);
    if (meter) Object.assign(meter, { done: 0, total: metadata.row_groups.reduce((a, g) => a + Number(g.num_rows), 0), unit: 'rows' });
    let rowsRead = 0;
    let rowStart = 0;
    for (let g = 0; g < metadata.row_groups.length; g++) {
      const n = Number(metadata.row_groups[g].num_rows);
      const rowEnd = rowStart + n;
      let rows: Record<string, unknown>[];
      try {
        rows = await parquetReadObjects({ file: opened.buffer, metadata, columns, rowStart, rowEnd, compressors });
      } catch (err) {
        if (rowsRead === 0) throw cannot(`row group ${g}: ${errorMessage(err)}`);
        // Later groups: keep every row's offset by dead-lettering the rows this group should have held.
        const msg = `row group ${g} of ${file} cannot be decoded: ${errorMessage(err)}`;
        for (let i = 0; i < n; i++) {
          if (meter) meter.done++;
          yield records.dead('decode_error', msg, Buffer.from(JSON.stringify({ row_group: g, row: i })));
        }
        rowStart = rowEnd;
        continue;
      }
      rowStart = rowEnd;
      for (const row of rows) {
        rowsRead++;
        if (meter) meter.done++;
        yield rowRecord(row, { urlCol, captionCol, idCol, timeCol, attrCols, topic }, records, limits);
      }
    }
  } finally {
    await opened.close().catch(() => undefined);
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
