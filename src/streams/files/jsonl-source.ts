/**
 * JSON Lines input (docs/FORMATS.md, JSONL events): one raw event per line, with `image_b64` (base64, a `data:` URI prefix allowed)
 * or `image_path` instead of `image`. `image_path` is relative to the image root (`--image-root`, default the JSONL
 * file's directory) and must stay inside it: `..` escapes and symlinks that resolve outside it are `path_blocked`,
 * symlinks that stay inside are followed.
 *
 * Lines are split by hand rather than with readline so that a line longer than `maxRecordBytes` is dropped as
 * `record_too_large` while only its first `maxRecordBytes` bytes are held. A line that is empty or only
 * whitespace is skipped and takes no offset, so offsets count records, not line numbers.
 *
 * Field rules: `id` string (or integer) of 1..256 characters; `url`, `image_url`, `source` string or null;
 * `caption` string, missing or null read as ""; `crawl_time` epoch milliseconds as a number or numeric
 * string, or an ISO 8601 date, missing or null read as 0 (unknown); `attrs` an object whose non-string values are stringified (null values dropped);
 * `source` defaults to the file's base name. Unknown top-level fields are ignored.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CrawlEvent, DeadReason } from '../../records';
import { attrString, errorMessage, idProblem, readable, RecordFactory, type ReadableFields, type FileRecord, type FileSourceLimits, type InputMeter } from './file-record';

type Problem = { reason: DeadReason; message: string };

interface Line {
  /** the line without its newline (and without a trailing \r), or its first maxRecordBytes bytes when oversized */
  bytes: Buffer;
  /** full length of the line in bytes */
  size: number;
  oversized: boolean;
}

/** Splits a byte stream into lines, holding at most `max` bytes of any one line. */
async function* splitLines(chunks: AsyncIterable<Buffer>, max: number): AsyncGenerator<Line> {
  let parts: Buffer[] = [];
  let kept = 0;
  let size = 0;
  // Keep one byte more than max so a line of exactly max bytes plus "\r" is not taken for an oversized one.
  const add = (seg: Buffer): void => {
    size += seg.length;
    const room = max + 1 - kept;
    if (room > 0 && seg.length > 0) {
      const take = seg.length <= room ? seg : seg.subarray(0, room);
      parts.push(take);
      kept += take.length;
    }
  };
  const finish = (): Line => {
    let bytes = Buffer.concat(parts, kept);
    let full = size;
    if (full === bytes.length && full > 0 && bytes[full - 1] === 0x0d) {
      bytes = bytes.subarray(0, full - 1);
      full -= 1;
    }
    const oversized = full > max;
    parts = [];
    kept = 0;
    size = 0;
    return { bytes: oversized ? bytes.subarray(0, max) : bytes, size: full, oversized };
  };
  let first = true;
  for await (const chunk of chunks) {
    let buf = chunk;
    if (first) {
      first = false;
      if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3);
    }
    let pos = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, pos);
      if (nl === -1) {
        add(buf.subarray(pos));
        break;
      }
      add(buf.subarray(pos, nl));
      yield finish();
      pos = nl + 1;
    }
  }
  if (size > 0) yield finish();
}

function isBlank(b: Buffer): boolean {
  for (const c of b) if (c !== 0x20 && c !== 0x09 && c !== 0x0d && c !== 0x0b && c !== 0x0c) return false;
  return true;
}

/** Reads a JSONL file; see the module comment for the rules. `topic` names the input in the coordinates. */
export async function* readJsonl(
  file: string,
  topic: string,
  limits: FileSourceLimits,
  imageRoot: string | null = null,
  meter?: InputMeter,
): AsyncGenerator<FileRecord> {
  const root: ImageRoot = imageRoot
    ? { dir: imageRoot, name: `the image root ${imageRoot}` }
    : { dir: resolveRoot(file), name: "the JSONL file's directory" };
  const records = new RecordFactory(topic, limits);
  const defaultSource = path.basename(file);
  const stream = fs.createReadStream(file, { highWaterMark: 64 * 1024 });
  if (meter) Object.assign(meter, { done: 0, total: fs.statSync(file).size, unit: 'bytes' });
  try {
    for await (const line of splitLines(stream as AsyncIterable<Buffer>, limits.maxRecordBytes)) {
      if (meter) meter.done = Math.min(meter.total, meter.done + line.size + 1);
      if (line.oversized) {
        yield records.dead(
          'record_too_large',
          `line of ${line.size} bytes exceeds maxRecordBytes ${limits.maxRecordBytes}`,
          line.bytes,
          null,
          line.size,
        );
        continue;
      }
      if (isBlank(line.bytes)) continue;
      const result = await parseLine(line.bytes, root, limits, defaultSource);
      yield 'event' in result
        ? records.ok(result.event, line.bytes)
        : records.dead(result.reason, result.message, line.bytes, result.id, undefined, result);
    }
  } catch (err) {
    throw new Error(`cannot read ${file}: ${errorMessage(err)}`);
  } finally {
    stream.destroy();
  }
}

function resolveRoot(file: string): string {
  const dir = path.dirname(path.resolve(file));
  try {
    return fs.realpathSync(dir);
  } catch {
    return dir;
  }
}

type Parsed = { event: CrawlEvent } | (Problem & ReadableFields & { id: string | null });

/** Where image_path values resolve: a real directory path, and how messages name it. */
export interface ImageRoot {
  dir: string;
  name: string;
}

async function parseLine(bytes: Buffer, root: ImageRoot, limits: FileSourceLimits, defaultSource: string): Promise<Parsed> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return { reason: 'schema_error', message: `invalid JSON: ${errorMessage(err)}`, id: null };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    return { reason: 'schema_error', message: `line is ${kind}, not a JSON object`, id: null };
  }
  const obj = value as Record<string, unknown>;
  // whatever check fails below, the dead letter keeps the fields that could be read
  const known = { url: readable(obj.url), image_url: readable(obj.image_url) };
  const fields = readFields(obj, defaultSource);
  if ('reason' in fields) return { ...fields, ...known };
  const { event, imageB64, imagePath } = fields;
  const fail = (p: Problem): Parsed => ({ ...p, ...known, id: event.id });

  if (imageB64 !== null) {
    const img = decodeBase64(imageB64, limits.maxImageBytes);
    if ('reason' in img) return fail(img);
    event.image = img.bytes;
  } else if (imagePath !== null) {
    const img = await readImagePath(imagePath, root, limits.maxImageBytes);
    if ('reason' in img) return fail(img);
    event.image = img.bytes;
  } else if (event.image_url === null) {
    return fail({ reason: 'missing_image', message: 'none of image_b64, image_path or image_url is given' });
  }
  return { event };
}

interface Fields {
  event: CrawlEvent;
  imageB64: string | null;
  imagePath: string | null;
}

function readFields(obj: Record<string, unknown>, defaultSource: string): Fields | (Problem & { id: string | null }) {
  const schema = (message: string, id: string | null = null): Problem & { id: string | null } => ({
    reason: 'schema_error',
    message,
    id,
  });

  const rawId = obj.id;
  let id: string;
  if (typeof rawId === 'string') id = rawId;
  else if (typeof rawId === 'number' && Number.isSafeInteger(rawId)) id = String(rawId);
  else if (rawId === undefined || rawId === null) return schema('id is missing');
  else return schema(`id must be a string, got ${describe(rawId)}`);
  const idBad = idProblem(id);
  if (idBad) return { reason: 'id_invalid', message: idBad, id: null };

  const optString = (name: string): string | null | Problem => {
    const v = obj[name];
    if (v === undefined || v === null) return null;
    if (typeof v === 'string') return v;
    return schema(`${name} must be a string or null, got ${describe(v)}`, id);
  };
  const url = optString('url');
  if (isProblem(url)) return { ...url, id };
  const imageUrl = optString('image_url');
  if (isProblem(imageUrl)) return { ...imageUrl, id };
  const source = optString('source');
  if (isProblem(source)) return { ...source, id };
  const caption = optString('caption');
  if (isProblem(caption)) return { ...caption, id };
  const imageB64 = optString('image_b64');
  if (isProblem(imageB64)) return { ...imageB64, id };
  const imagePath = optString('image_path');
  if (isProblem(imagePath)) return { ...imagePath, id };

  if (obj.image !== undefined && obj.image !== null) {
    return schema('image is not allowed in JSONL; give image_b64 or image_path', id);
  }
  const b64 = imageB64 === null || imageB64.trim() === '' ? null : imageB64;
  const rel = imagePath === null || imagePath === '' ? null : imagePath;
  if (b64 !== null && rel !== null) return schema('give only one of image_b64 and image_path', id);

  const crawlTime = readCrawlTime(obj.crawl_time);
  if (typeof crawlTime === 'string') return schema(crawlTime, id);

  const attrs: Record<string, string> = {};
  const rawAttrs = obj.attrs;
  if (rawAttrs !== undefined && rawAttrs !== null) {
    if (typeof rawAttrs !== 'object' || Array.isArray(rawAttrs)) {
      return schema(`attrs must be an object, got ${describe(rawAttrs)}`, id);
    }
    for (const [k, v] of Object.entries(rawAttrs as Record<string, unknown>)) {
      const s = attrString(v);
      if (s !== undefined) attrs[k] = s;
    }
  }

  const event: CrawlEvent = {
    id,
    url,
    image_url: imageUrl === null || imageUrl.trim() === '' ? null : imageUrl,
    image: null,
    caption: caption ?? '',
    crawl_time: crawlTime,
    source: source ?? defaultSource,
    attrs,
  };
  return { event, imageB64: b64, imagePath: rel };
}

function isProblem(v: unknown): v is Problem {
  return v !== null && typeof v === 'object' && 'reason' in v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v).slice(0, 40)}`;
}

/** Epoch milliseconds, or a message saying why the value is not acceptable. */
function readCrawlTime(v: unknown): number | string {
  // img2dataset and LAION JSONL carry no crawl time: missing is 0 (unknown), as in Parquet metadata input
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number') {
    return Number.isFinite(v) && Math.abs(v) <= 8.64e15 ? Math.trunc(v) : `crawl_time ${v} is not a valid epoch-millisecond time`;
  }
  if (typeof v === 'string') {
    const s = v.trim();
    if (/^-?\d+$/.test(s)) return readCrawlTime(Number(s));
    const t = Date.parse(s);
    if (!Number.isNaN(t)) return t;
    return `crawl_time ${JSON.stringify(v.slice(0, 40))} is neither epoch milliseconds nor an ISO 8601 date`;
  }
  return `crawl_time must be a number or an ISO 8601 string, got ${describe(v)}`;
}

const BASE64_RE = /^[A-Za-z0-9+/_-]*={0,2}$/;

function decodeBase64(input: string, maxBytes: number): { bytes: Buffer } | Problem {
  let s = input;
  const dataUri = /^\s*data:[^,]*;base64,/i.exec(s);
  if (dataUri) s = s.slice(dataUri[0].length);
  s = s.replace(/\s+/g, '');
  if (s.length === 0) return { reason: 'missing_image', message: 'image_b64 is empty' };
  if (!BASE64_RE.test(s) || s.length % 4 === 1) {
    return { reason: 'decode_error', message: 'image_b64 is not valid base64' };
  }
  const padding = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const decodedSize = Math.floor((s.length * 3) / 4) - padding;
  if (decodedSize > maxBytes) {
    return { reason: 'image_too_large', message: `image_b64 decodes to ${decodedSize} bytes, more than maxImageBytes ${maxBytes}` };
  }
  const bytes = Buffer.from(s, 'base64');
  if (bytes.length === 0) return { reason: 'missing_image', message: 'image_b64 decodes to no bytes' };
  return { bytes };
}

function isInside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}

/** Reads `rel` under `root.dir` (a real path), refusing anything that lands outside it, symlinks included. */
export async function readImagePath(rel: string, imageRoot: ImageRoot, maxBytes: number): Promise<{ bytes: Buffer } | Problem> {
  const root = imageRoot.dir;
  const shown = JSON.stringify(rel.length > 200 ? `${rel.slice(0, 200)}...` : rel);
  const blocked = (why: string): Problem => ({ reason: 'path_blocked', message: `image_path ${shown} ${why}` });
  if (rel.includes('\0')) return blocked('contains a NUL byte');
  if (path.isAbsolute(rel) || path.win32.isAbsolute(rel)) return blocked(`is absolute; it must be relative to ${imageRoot.name}`);
  const joined = path.resolve(root, rel);
  if (!isInside(root, joined)) return blocked(`escapes ${imageRoot.name}`);
  let real: string;
  try {
    real = await fs.promises.realpath(joined);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') return blocked('is a symlink loop');
    return { reason: 'missing_image', message: `image_path ${shown} not found (${code ?? errorMessage(err)})` };
  }
  if (!isInside(root, real)) return blocked(`resolves (through a symlink) outside ${imageRoot.name}`);
  let handle: fs.promises.FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO must not hang the reader; O_NOFOLLOW: the checked path cannot become a symlink.
    handle = await fs.promises.open(real, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | (fs.constants.O_NOFOLLOW ?? 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') return blocked('became a symlink');
    return { reason: 'missing_image', message: `image_path ${shown} cannot be opened (${code ?? errorMessage(err)})` };
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) return { reason: 'missing_image', message: `image_path ${shown} is not a regular file` };
    if (st.size > maxBytes) {
      return { reason: 'image_too_large', message: `image_path ${shown} is ${st.size} bytes, more than maxImageBytes ${maxBytes}` };
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(1 << 20, maxBytes + 1 - n));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, n);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      n += bytesRead;
      if (n > maxBytes) return { reason: 'image_too_large', message: `image_path ${shown} grew past maxImageBytes ${maxBytes}` };
    }
    if (n === 0) return { reason: 'missing_image', message: `image_path ${shown} is empty` };
    return { bytes: Buffer.concat(chunks, n) };
  } catch (err) {
    return { reason: 'missing_image', message: `image_path ${shown} cannot be read (${errorMessage(err)})` };
  } finally {
    await handle.close().catch(() => undefined);
  }
}
