/**
 * The real photos the photo bundle is trained, calibrated and evaluated on: Flickr8k (images with five
 * human captions each) and the MS-COCO photos with their five captions, read from a `shared/` data
 * directory (beside the checkout on the project's machines; `SQUEEZE_SHARED` names another one). Nothing
 * of it is copied into the repository.
 *
 * Splits are by image, never by caption: a photo's key hashes to train (70%), cal (10%, thresholds and
 * calibration) or eval (20%, the benchmark; no training or calibration step reads it).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fmix32 } from '../../util/hash';

export type PhotoSplit = 'train' | 'cal' | 'eval';

export interface PhotoItem {
  /** `flickr8k/<file>` or `coco/<file>`: unique, and what the split hashes */
  key: string;
  path: string;
  captions: string[];
  source: 'flickr8k' | 'coco';
  split: PhotoSplit;
}

/** The shared data directory, or null when it is absent. */
export function sharedDir(env: NodeJS.ProcessEnv = process.env): string | null {
  const candidates = [env.SQUEEZE_SHARED, join(__dirname, '..', '..', '..', '..', '..', 'shared'), join(__dirname, '..', '..', '..', '..', 'shared')];
  for (const c of candidates) if (c && existsSync(join(c, 'data'))) return resolve(c);
  return null;
}

function stringHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = fmix32((h ^ s.charCodeAt(i)) + 0x9e3779b9);
  return h >>> 0;
}

export function photoSplit(key: string): PhotoSplit {
  const u = stringHash(key) / 4294967296;
  return u < 0.7 ? 'train' : u < 0.8 ? 'cal' : 'eval';
}

/** Every photo with its captions, in a fixed order (Flickr8k by file name, then COCO by file). */
export function loadPhotos(shared: string): PhotoItem[] {
  const out: PhotoItem[] = [];
  const flickr = join(shared, 'data', 'flickr8k');
  const csv = join(flickr, 'captions.csv');
  if (existsSync(csv)) {
    const byImage = new Map<string, string[]>();
    for (const line of readFileSync(csv, 'utf8').split('\n').slice(1)) {
      const comma = line.indexOf(',');
      if (comma <= 0) continue;
      const file = line.slice(0, comma).trim();
      const caption = line.slice(comma + 1).trim().replace(/^"|"$/g, '');
      if (!caption) continue;
      const list = byImage.get(file) ?? [];
      list.push(caption);
      byImage.set(file, list);
    }
    for (const file of [...byImage.keys()].sort()) {
      const path = join(flickr, 'images', file);
      if (!existsSync(path)) continue;
      const key = `flickr8k/${file}`;
      out.push({ key, path, captions: byImage.get(file)!, source: 'flickr8k', split: photoSplit(key) });
    }
  }
  out.push(...cocoPhotos(join(shared, 'data', 'coco')));
  return out;
}

/**
 * The COCO photos of a directory with a `captions.jsonl` index (one line per photo: `file`, relative to the
 * directory, and its `captions`), sorted by file; photos whose file is missing are left out. The shared
 * data's COCO set and the repository's examples/photos are both in this form.
 */
export function cocoPhotos(dir: string): PhotoItem[] {
  const index = join(dir, 'captions.jsonl');
  if (!existsSync(index)) return [];
  const rows = readFileSync(index, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { file: string; captions: string[] })
    .sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  const out: PhotoItem[] = [];
  for (const r of rows) {
    const path = join(dir, r.file);
    if (!existsSync(path) || !Array.isArray(r.captions) || r.captions.length === 0) continue;
    const key = `coco/${r.file}`;
    out.push({ key, path, captions: r.captions.map((c) => c.trim()), source: 'coco', split: photoSplit(key) });
  }
  return out;
}
