/**
 * `squeeze export --format webdataset`: the committed rows of a curated output as WebDataset tars, the
 * layout img2dataset writes and open_clip reads (`--dataset-type webdataset`). Per sample:
 *   <key>.jpg (or .webp)  the stored image (with --blank, the dropped patches painted grey)
 *   <key>.txt             the curated caption
 *   <key>.json            id, key, caption, caption_raw, tags, scores, kept_patches with the grid,
 *                         copies and which copy this is, source coordinates, model version
 * Per tar `<tar>_meta.jsonl` (one JSON line per sample, the .json above) and `<tar>_stats.json`; for the
 * whole export `manifest.json` with the sample count to pass as open_clip's `--train-num-samples` and
 * the brace pattern for `--train-data`.
 *
 * Soft-cap copies are materialised: a row with k copies becomes k samples with distinct keys, spread
 * evenly over its tar (copy c of a row sits at (c + u) / k of the tar, u a hash of its id), so no two
 * copies of one row are near each other.
 *
 * Committed rows only, through the one reader of commit records, and incremental: the export keeps its
 * own cursor (`_export.json`) in the output. Each tar is written under a temporary name and renamed; the
 * cursor moves only after the tar is in place. A run killed at any moment leaves no half-written file
 * under a final name, and the next run writes the same tar number again from the same cursor, so no row
 * is exported twice and none is skipped.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack } from 'tar-stream';
import { paintDropped } from '../operators/condense';
import { advance, type CommittedShard, committedAfter, type Cursor } from '../streams/shards/committed';
import type { ShardStore } from '../streams/shards/store';

export interface WebDatasetExportOptions {
  /** the directory the tars go to */
  out: string;
  /** a tar closes at the first commit record that brings it to this many samples (copies counted) */
  samplesPerTar: number;
  /** paint the dropped patches (for trainers that cannot use kept_patches) */
  blank: boolean;
  /** one line per tar written */
  log?: (line: string) => void;
  /** stops the export between tars (what is written stays, the cursor says where it stopped) */
  signal?: AbortSignal;
}

/** The export's own state in its output: where it is in the committed sequence. */
interface ExportState {
  version: 1;
  source: string;
  cursor: Cursor;
  tars: string[];
  samples: number;
  rows: number;
}

export interface ExportResult {
  /** tars written by this run */
  written: string[];
  /** samples and rows in the whole export (this run and earlier ones) */
  samples: number;
  rows: number;
}

type Row = Record<string, unknown> & { id: string; image: Buffer; image_mime: string; copies: number };

const STATE = '_export.json';

export async function exportWebDataset(store: ShardStore, o: WebDatasetExportOptions): Promise<ExportResult> {
  if (!(o.samplesPerTar >= 1)) throw new Error(`samples per tar must be at least 1, got ${o.samplesPerTar}`);
  await fs.mkdir(o.out, { recursive: true });
  const state = await readState(o.out, store.root.startsWith('s3://') ? store.root : resolve(store.root));
  // what a killed run left under temporary names
  for (const n of await fs.readdir(o.out)) if (n.startsWith('.tmp-')) await fs.rm(join(o.out, n), { force: true });
  const log = o.log ?? (() => undefined);
  const found = await committedAfter(store, state.cursor, (where, reason) => {
    throw new Error(`${where}: ${reason}`);
  });
  const written: string[] = [];
  let group: { shard: CommittedShard; rows: Row[] }[] = [];
  let samples = 0;
  const flush = async (): Promise<void> => {
    if (group.length === 0) return;
    const name = String(state.tars.length).padStart(5, '0');
    const n = await writeTar(o, name, group);
    for (const g of group) advance(state.cursor, g.shard.record);
    state.tars.push(`${name}.tar`);
    state.samples += n;
    state.rows += group.reduce((a, g) => a + g.rows.length, 0);
    await writeAtomically(join(o.out, STATE), JSON.stringify(state, null, 2));
    await writeManifest(o.out, state);
    written.push(`${name}.tar`);
    log(`squeeze: wrote ${name}.tar (${n} samples from ${group.reduce((a, g) => a + g.rows.length, 0)} rows)`);
    group = [];
    samples = 0;
  };
  for (const shard of found) {
    if (o.signal?.aborted) return { written, samples: state.samples, rows: state.rows };
    const rows = shard.record.shard ? await readRows(store, shard.record.shard) : [];
    group.push({ shard, rows });
    samples += rows.reduce((a, r) => a + copiesOf(r), 0);
    if (samples >= o.samplesPerTar) await flush();
  }
  if (samples > 0) await flush();
  else if (group.length > 0) {
    // commit records that kept no rows: the cursor still moves past them
    for (const g of group) advance(state.cursor, g.shard.record);
    await writeAtomically(join(o.out, STATE), JSON.stringify(state, null, 2));
  }
  if (state.tars.length === 0 && found.length === 0) await writeManifest(o.out, state);
  return { written, samples: state.samples, rows: state.rows };
}

async function readRows(store: ShardStore, rel: string): Promise<Row[]> {
  try {
    return (await store.readRows(rel)) as Row[];
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new Error(`${store.uri(rel)}: unreadable shard (${why.split('\n')[0]})`);
  }
}

const copiesOf = (r: Row): number => (Number.isInteger(r.copies) && r.copies > 0 ? r.copies : 1);

async function readState(out: string, source: string): Promise<ExportState> {
  let text: string;
  try {
    text = await fs.readFile(join(out, STATE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const names = (await fs.readdir(out)).filter((n) => !n.startsWith('.'));
    if (names.length > 0) throw new Error(`${out} holds files but no ${STATE}: export into a new directory or one an export wrote`);
    // the state exists before any tar does: a run killed after its first tar still finds its own directory
    const fresh: ExportState = { version: 1, source, cursor: {}, tars: [], samples: 0, rows: 0 };
    await writeAtomically(join(out, STATE), JSON.stringify(fresh, null, 2));
    return fresh;
  }
  const s = JSON.parse(text) as ExportState;
  if (s.version !== 1 || typeof s.cursor !== 'object' || !Array.isArray(s.tars)) throw new Error(`${join(out, STATE)}: not an export state this version writes`);
  if (s.source !== source) throw new Error(`${out} is an export of ${s.source}, not of ${source}`);
  return s;
}

/** A uniform number in [0, 1) from a string (the copies' offset within their tar). */
function unit(s: string): number {
  return createHash('sha256').update(s).digest().readUInt32BE(0) / 2 ** 32;
}

/** Writes one tar and its side files under temporary names, then renames them; returns its sample count. */
async function writeTar(o: WebDatasetExportOptions, name: string, group: { shard: CommittedShard; rows: Row[] }[]): Promise<number> {
  // every copy of every row, each at (c + u) / k of the tar: copies of one row lie far apart
  const placed: { row: Row; copy: number; at: number }[] = [];
  for (const { rows } of group) {
    for (const row of rows) {
      const k = copiesOf(row);
      const u = unit(row.id);
      for (let c = 0; c < k; c++) placed.push({ row, copy: c, at: (c + u) / k });
    }
  }
  placed.sort((a, b) => a.at - b.at || (a.row.id < b.row.id ? -1 : a.row.id > b.row.id ? 1 : 0) || a.copy - b.copy);
  const tmp = (f: string) => join(o.out, `.tmp-${f}`);
  const files = { tar: `${name}.tar`, meta: `${name}_meta.jsonl`, stats: `${name}_stats.json` };
  const tarball = pack();
  const done = pipeline(tarball, createWriteStream(tmp(files.tar)));
  const meta: string[] = [];
  try {
    const blanked = new Map<Row, Buffer>();
    for (let i = 0; i < placed.length; i++) {
      const { row, copy } = placed[i];
      const key = `${name}${String(i).padStart(5, '0')}`;
      const webp = row.image_mime === 'image/webp';
      let image = row.image;
      if (o.blank) {
        if (!blanked.has(row)) blanked.set(row, await blank(row));
        image = blanked.get(row)!;
      }
      const json = sampleJson(row, key, copy);
      await entry(tarball, `${key}.${webp ? 'webp' : 'jpg'}`, image);
      await entry(tarball, `${key}.txt`, Buffer.from(String(row.caption ?? ''), 'utf8'));
      await entry(tarball, `${key}.json`, Buffer.from(JSON.stringify(json), 'utf8'));
      meta.push(JSON.stringify(json));
    }
    tarball.finalize();
    await done;
    const ranges = group.map((g) => ({ topic: g.shard.record.topic, partition: g.shard.record.partition, start_offset: g.shard.record.start_offset, end_offset: g.shard.record.end_offset }));
    const stats = { count: placed.length, successes: placed.length, rows: group.reduce((a, g) => a + g.rows.length, 0), blank: o.blank, commit_records: ranges };
    await fs.writeFile(tmp(files.meta), meta.length ? meta.join('\n') + '\n' : '');
    await fs.writeFile(tmp(files.stats), JSON.stringify(stats, null, 2) + '\n');
    // the side files first, the tar last: a loader that globs *.tar never sees a tar without them
    await fs.rename(tmp(files.meta), join(o.out, files.meta));
    await fs.rename(tmp(files.stats), join(o.out, files.stats));
    await fs.rename(tmp(files.tar), join(o.out, files.tar));
    return placed.length;
  } catch (e) {
    tarball.destroy();
    await done.catch(() => undefined);
    await Promise.all(Object.values(files).map((f) => fs.rm(tmp(f), { force: true })));
    throw e;
  }
}

function entry(tarball: ReturnType<typeof pack>, name: string, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => tarball.entry({ name, size: body.length, mtime: new Date(0) }, body, (e) => (e ? reject(e) : resolve())));
}

/** What `<key>.json` holds: the row's fields a trainer or a filter may want, without the image. */
function sampleJson(row: Row, key: string, copy: number): Record<string, unknown> {
  const grid = row.grid_rows && row.grid_cols ? { rows: row.grid_rows, cols: row.grid_cols } : null;
  return {
    key,
    id: row.id,
    caption: row.caption,
    caption_raw: row.caption_raw,
    width: row.width,
    height: row.height,
    tags: row.tags ?? [],
    scores: row.scores ?? {},
    clip_score: row.clip_score ?? null,
    score: row.score ?? null,
    kept_patches: row.kept_patches ?? null,
    grid,
    copies: copiesOf(row),
    copy,
    source_topic: row.source_topic,
    source_partition: row.source_partition,
    source_offset: row.source_offset,
    model_version: row.model_version,
  };
}

/** The stored image with the patches not kept painted mid grey, as `condense --blank` paints them. */
async function blank(row: Row): Promise<Buffer> {
  const kept = row.kept_patches as number[] | null;
  if (!kept || !row.grid_rows || !row.grid_cols) return row.image;
  return paintDropped(row.image, row.image_mime, { rows: row.grid_rows as number, cols: row.grid_cols as number }, kept, [128, 128, 128], 90);
}

async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.tmp-${basename(path)}`);
  await fs.writeFile(tmp, text);
  await fs.rename(tmp, path);
}

/** manifest.json: what a trainer needs to read the whole export. */
async function writeManifest(out: string, s: ExportState): Promise<void> {
  const last = s.tars.length - 1;
  const manifest = {
    format: 'webdataset',
    source: s.source,
    tars: s.tars,
    samples: s.samples,
    rows: s.rows,
    // open_clip: --train-data '<out>/{00000..0000N}.tar' --train-num-samples <samples>
    train_data: last < 0 ? null : last === 0 ? join(out, s.tars[0]) : join(out, `{00000..${String(last).padStart(5, '0')}}.tar`),
    train_num_samples: s.samples,
  };
  await writeAtomically(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}
