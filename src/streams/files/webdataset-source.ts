/**
 * WebDataset tar shards as img2dataset writes them: consecutive members `KEY.jpg`, `KEY.txt`, `KEY.json` form
 * one sample. Key and extension split at the first dot of the member's base name (the WebDataset rule), the
 * directory part staying in the key; hidden members (`.`-prefixed, e.g. macOS `._x`) and non-file entries are
 * ignored. A key seen again after another key starts a new sample, as in WebDataset.
 *
 * Mapping: the image member (jpg, jpeg, png, webp, gif, avif, tif, tiff; the first one wins) is `image`;
 * `.txt` is the caption (else `caption` from the json); the json's `url` is `image_url`, its `key` is the id
 * (else the tar key), its `crawl_time` if numeric is kept, else the image member's mtime; every other scalar json
 * field goes to `attrs`; `source` is the shard's file name. Several shards (a directory) are read in sorted
 * order with offsets continuing across them.
 *
 * A shard that turns out corrupt midway yields the complete samples read so far, then one `decode_error` record
 * that names the shard (and the sample cut short, if any), and reading goes on with the next shard.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar-stream';
import type { CrawlEvent } from '../../records';
import { attrString, errorMessage, idProblem, IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS, RecordFactory, type FileRecord, type FileSourceLimits, type InputMeter } from './file-record';

/** Member names kept per sample for messages; a pathological sample cannot grow this without bound. */
const MAX_LISTED_MEMBERS = 32;

interface Part {
  name: string;
  /** null when the member was over its size limit and was skipped */
  bytes: Buffer | null;
  size: number;
}

interface Sample {
  key: string;
  members: string[];
  image: (Part & { mtime: number | null }) | null;
  otherImage: string | null;
  txt: Part | null;
  json: Part | null;
}

/** Splits a member name into WebDataset key and lower-cased extension; null for members that are no part of a sample. */
export function splitMemberName(name: string): { key: string; ext: string } | null {
  const clean = name.replace(/^(\.\/)+/, '');
  const slash = clean.lastIndexOf('/');
  const dir = clean.slice(0, slash + 1);
  const base = clean.slice(slash + 1);
  if (base === '' || base.startsWith('.')) return null;
  const dot = base.indexOf('.');
  if (dot <= 0 || dot === base.length - 1) return null;
  return { key: dir + base.slice(0, dot), ext: base.slice(dot + 1).toLowerCase() };
}

async function readEntry(entry: tar.Entry): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of entry) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Reads tar shards in the given order; see the module comment. `topic` names the input in the coordinates. */
export async function* readWebDataset(
  shards: string[],
  topic: string,
  limits: FileSourceLimits,
  meter?: InputMeter,
): AsyncGenerator<FileRecord> {
  const records = new RecordFactory(topic, limits);
  if (meter) {
    const total = shards.reduce((a, s) => a + (fs.statSync(s, { throwIfNoEntry: false })?.size ?? 0), 0);
    Object.assign(meter, { done: 0, total, unit: 'bytes' });
  }
  for (const shard of shards) {
    try {
      fs.accessSync(shard, fs.constants.R_OK);
    } catch (err) {
      throw new Error(`cannot read shard ${shard}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
    yield* readShard(shard, records, limits, meter);
  }
}

async function* readShard(shard: string, records: RecordFactory, limits: FileSourceLimits, meter?: InputMeter): AsyncGenerator<FileRecord> {
  const shardName = path.basename(shard);
  const extract = tar.extract();
  const input = fs.createReadStream(shard);
  if (meter) input.on('data', (chunk) => (meter.done += chunk.length));
  input.on('error', (err) => extract.destroy(err));
  input.pipe(extract);
  let sample: Sample | null = null;
  let memberCount = 0;
  try {
    try {
      for await (const entry of extract) {
        memberCount++;
        const h = entry.header;
        const parts = h.type === 'file' || h.type === 'contiguous-file' ? splitMemberName(h.name) : null;
        if (parts === null) {
          entry.resume();
          continue;
        }
        if (sample !== null && sample.key !== parts.key) {
          yield buildRecord(sample, shardName, records, limits);
          sample = null;
        }
        sample ??= { key: parts.key, members: [], image: null, otherImage: null, txt: null, json: null };
        await addMember(sample, entry, parts.ext, limits);
      }
    } catch (err) {
      // The sample being read may lack members that never arrived, so it goes down with the shard's tail.
      const pending = sample === null ? '' : ` (sample ${sample.key} incomplete)`;
      const why = `shard ${shardName} is corrupt or truncated after ${memberCount} members${pending}: ${errorMessage(err)}`;
      const raw = Buffer.from(JSON.stringify({ shard: shardName, members_read: memberCount, sample: sample?.key ?? null }));
      yield records.dead('decode_error', why, raw, sample?.key ?? null);
      return;
    }
    if (sample !== null) yield buildRecord(sample, shardName, records, limits);
  } finally {
    input.destroy();
    extract.destroy();
  }
}

async function addMember(sample: Sample, entry: tar.Entry, ext: string, limits: FileSourceLimits): Promise<void> {
  const h = entry.header;
  const size = h.size ?? 0;
  if (sample.members.length < MAX_LISTED_MEMBERS) sample.members.push(h.name);
  const take = async (max: number): Promise<Part> => {
    if (size > max) {
      entry.resume();
      return { name: h.name, bytes: null, size };
    }
    return { name: h.name, bytes: await readEntry(entry), size };
  };
  if (IMAGE_EXTENSIONS.has(ext) && sample.image === null) {
    const mtime = h.mtime instanceof Date && !Number.isNaN(h.mtime.getTime()) ? h.mtime.getTime() : null;
    sample.image = { ...(await take(limits.maxImageBytes)), mtime };
  } else if (ext === 'txt' && sample.txt === null) {
    sample.txt = await take(limits.maxRecordBytes);
  } else if (ext === 'json' && sample.json === null) {
    sample.json = await take(limits.maxRecordBytes);
  } else {
    if (OTHER_IMAGE_EXTENSIONS.has(ext)) sample.otherImage ??= h.name;
    entry.resume();
  }
}

function buildRecord(s: Sample, shardName: string, records: RecordFactory, limits: FileSourceLimits): FileRecord {
  const raw =
    s.json?.bytes ?? s.txt?.bytes ?? Buffer.from(JSON.stringify({ __key__: s.key, members: s.members }));
  const rawBytes = s.json?.bytes ? s.json.size : s.txt?.bytes ? s.txt.size : raw.length;
  let imageUrl: string | null = null;
  const dead = (reason: Parameters<RecordFactory['dead']>[0], message: string, id: string | null): FileRecord =>
    records.dead(reason, `${shardName}: ${message}`, raw, id, rawBytes, { image_url: imageUrl });

  for (const part of [s.json, s.txt]) {
    if (part && part.bytes === null) {
      return dead('record_too_large', `${part.name} is ${part.size} bytes, more than maxRecordBytes ${limits.maxRecordBytes}`, null);
    }
  }
  let meta: Record<string, unknown> = {};
  if (s.json?.bytes) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(s.json.bytes.toString('utf8'));
    } catch (err) {
      return dead('schema_error', `${s.json.name} is not valid JSON: ${errorMessage(err)}`, null);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return dead('schema_error', `${s.json.name} is not a JSON object`, null);
    }
    meta = parsed as Record<string, unknown>;
    imageUrl = typeof meta.url === 'string' ? meta.url : null;
  }

  const metaKey = meta.key;
  const id =
    (typeof metaKey === 'string' && metaKey !== '') || (typeof metaKey === 'number' && Number.isSafeInteger(metaKey))
      ? String(metaKey)
      : s.key;
  const idBad = idProblem(id);
  if (idBad) return dead('id_invalid', `sample ${JSON.stringify(s.key.slice(0, 80))}: ${idBad}`, null);

  if (s.image === null) {
    if (s.otherImage !== null) return dead('unsupported_format', `${s.otherImage} is not a supported image format`, id);
    return dead('missing_image', `sample ${s.key} has no image member (members: ${s.members.join(', ')})`, id);
  }
  if (s.image.bytes === null) {
    return dead('image_too_large', `${s.image.name} is ${s.image.size} bytes, more than maxImageBytes ${limits.maxImageBytes}`, id);
  }
  if (s.image.bytes.length === 0) return dead('missing_image', `${s.image.name} is empty`, id);

  const caption = s.txt?.bytes
    ? s.txt.bytes.toString('utf8')
    : typeof meta.caption === 'string'
      ? meta.caption
      : '';
  const attrs: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) {
    if (k === 'key' || k === 'url' || k === 'caption' || k === 'crawl_time') continue;
    if (v !== null && typeof v === 'object') continue; // nested values (exif blobs and the like) stay out
    const str = attrString(v);
    if (str !== undefined) attrs[k] = str;
  }
  const crawlTime =
    typeof meta.crawl_time === 'number' && Number.isFinite(meta.crawl_time) ? Math.trunc(meta.crawl_time) : (s.image.mtime ?? 0);
  const event: CrawlEvent = {
    id,
    url: null,
    image_url: typeof meta.url === 'string' && meta.url !== '' ? meta.url : null,
    image: s.image.bytes,
    caption,
    crawl_time: crawlTime,
    source: shardName,
    attrs,
  };
  return records.ok(event, raw);
}
