/**
 * `npm run bench -- photos`: the default (photo) bundle on real photos that no training or calibration
 * step saw (the eval split of streams/files/shared-photos.ts: split by image). Needs a shared/ data directory.
 *
 * Input: every eval photo once; a quarter with one of its own human captions, the rest with a caption of
 * another eval photo (seeded). Measured:
 *  - clip_score ROC AUC true vs mismatched (in-process chain, every photo scored);
 *  - enrichment: words added to mismatched captions that one of the photo's own five captions names
 *    (precision), and synthetic shape words added;
 *  - soft-cap: share of true / mismatched pairs with >= 1 copy, from `squeeze curate` with its defaults
 *    (dedup and balance off, as the issue measured), read back with DuckDB;
 *  - condensation at keep 0.5: share of YOLOX box area on the kept patches, by saliency alone and with
 *    confident boxes forced in (condense's default);
 *  - near duplicates: recall on re-encodes, resizes and crops of eval photos, false positives on the
 *    originals, from `squeeze curate` with exact and near dedup on;
 *  - throughput: `squeeze curate` on the same JSONL with the photo bundle and with builtin-shapes, one run.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { firstValueFrom, from, toArray } from 'rxjs';
import { DuckDBInstance } from '@duckdb/node-api';
import { PHOTO_BUNDLE } from '../src/curate/models';
import { Rng } from '../src/gen/rng';
import { loadBundle } from '../src/models/bundle';
import { nearDuplicateForms, rocAuc } from '../src/builders/photo/calibrate';
import { loadPhotos, sharedDir, type PhotoItem } from '../src/streams/files/shared-photos';
import type { Box } from '../src/models/types';
import { boxPatches, choosePatches, keepMask, selectPatches } from '../src/operators/choose-patches';
import { decodeImage } from '../src/operators/decode-image';
import { embed } from '../src/operators/embed';
import { enrich } from '../src/operators/enrich';
import { modelNeeds } from '../src/operators/model-calls';
import { type Batch, newSample } from '../src/operators/sample';
import { tag } from '../src/operators/tag';
import { mentions } from '../src/text/english';
import { committedEvents, runSqueeze, table, writeResult } from './lib';

const SHAPES = ['circle', 'square', 'triangle', 'star', 'heart', 'cross', 'ring', 'diamond', 'hexagon', 'arrow', 'moon', 'pentagon', 'flower', 'bolt'];

interface Pair {
  id: string;
  photo: PhotoItem;
  caption: string;
  truth: 'true' | 'mismatched';
}

function pairsOf(photos: PhotoItem[], seed: number): Pair[] {
  const rng = new Rng(seed);
  return photos.map((p, i) => {
    const mismatched = rng.next() >= 0.25;
    const donor = mismatched ? photos[(i + 1 + rng.int(0, photos.length - 2)) % photos.length] : p;
    return { id: `p${String(i).padStart(5, '0')}`, photo: p, caption: donor.captions[rng.int(0, donor.captions.length - 1)], truth: mismatched ? 'mismatched' : 'true' };
  });
}

/** The share of the boxes' area (pixels of the union) that lies in kept patches. */
function boxCoverage(boxes: Box[], width: number, height: number, grid: { rows: number; cols: number }, kept: Uint8Array): { inside: number; total: number } {
  let inside = 0;
  let total = 0;
  const step = Math.max(1, Math.floor(Math.min(width, height) / 128));
  for (let y = 0; y < height; y += step) {
    for (let x = 0; x < width; x += step) {
      if (!boxes.some(([bx, by, bw, bh]) => x >= bx && x < bx + bw && y >= by && y < by + bh)) continue;
      total++;
      const r = Math.min(grid.rows - 1, Math.floor((y * grid.rows) / height));
      const c = Math.min(grid.cols - 1, Math.floor((x * grid.cols) / width));
      if (kept[r * grid.cols + c]) inside++;
    }
  }
  return { inside, total };
}

async function duck(sql: string): Promise<Record<string, unknown>[]> {
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  const r = await c.runAndReadAll(sql);
  return r.getRowObjectsJS() as Record<string, unknown>[];
}

export async function benchPhotos(): Promise<void> {
  const shared = sharedDir();
  if (!shared) {
    console.log('photos bench skipped: no shared/ data directory (photos and models) here');
    return;
  }
  const evalPhotos = loadPhotos(shared).filter((p) => p.split === 'eval');
  const limit = Number(process.env.BENCH_PHOTOS ?? evalPhotos.length);
  const photos = evalPhotos.slice(0, limit);
  const pairs = pairsOf(photos, 4242);
  const bundle = await loadBundle(PHOTO_BUNDLE, { threads: 2 });
  const threshold = bundle.calibration.enrich?.threshold ?? 0.4;
  const t0 = performance.now();

  // 1. in-process: embed, tag, enrich on every pair (no sampling), and condensation coverage
  const batches: Batch[] = [];
  for (let i = 0; i < pairs.length; i += 16) {
    const samples = await Promise.all(
      pairs.slice(i, i + 16).map(async (p, k) => {
        const s = newSample({ topic: 'photos', partition: 0, offset: i + k }, Buffer.from('raw'));
        s.event = { id: p.id, url: null, image_url: null, image: await readFile(p.photo.path), caption: p.caption, crawl_time: 0, source: p.photo.source, attrs: {} };
        s.caption = p.caption;
        return s;
      }),
    );
    batches.push({ topic: 'photos', partition: 0, samples });
  }
  const out = await firstValueFrom(
    from(batches).pipe(
      decodeImage({ maxImageBytes: 20 << 20, maxPixels: 40_000_000, minSide: 16, maxAspect: 8, imageFormat: 'keep', quality: 85, prepare: () => modelNeeds(bundle) }),
      embed({ bundle }),
      choosePatches({ rho: 0.5, forceDetections: { minScore: 0.5 } }),
      tag({ bundle }),
      enrich({ threshold }),
      toArray(),
    ),
  );
  const samples = out.flatMap((b) => b.samples);
  const chainSeconds = (performance.now() - t0) / 1000;
  const pos: number[] = [];
  const neg: number[] = [];
  let addedMis = 0;
  let rightMis = 0;
  let addedAll = 0;
  let synthetic = 0;
  let enrichedMis = 0;
  const cover = { saliency: { inside: 0, total: 0 }, forced: { inside: 0, total: 0 }, random: { inside: 0, total: 0 } };
  let forcedKept = 0;
  let boxed = 0;
  const rng = new Rng(99);
  samples.forEach((s, i) => {
    const p = pairs[i];
    if (s.outcome.kind !== 'keep') return;
    (p.truth === 'true' ? pos : neg).push(s.scores.clip_score);
    const added = s.flags.filter((f) => f.startsWith('enriched:+')).map((f) => f.slice('enriched:+'.length));
    addedAll += added.length;
    synthetic += added.filter((a) => SHAPES.includes(a)).length;
    if (p.truth === 'mismatched') {
      if (added.length) enrichedMis++;
      addedMis += added.length;
      rightMis += added.filter((a) => p.photo.captions.some((c) => mentions(c, a))).length;
    }
    // condensation: boxes of the detector's confident detections
    const dets = (s.detections ?? []).filter((d) => d.score >= 0.5);
    if (!s.model || !s.image || dets.length === 0) return;
    boxed++;
    const grid = s.model.grid;
    const P = grid.rows * grid.cols;
    const bySaliency = keepMask(selectPatches(s.model.saliency, grid, { rho: 0.5 }), grid);
    const force = dets.flatMap((d) => boxPatches(d.box, grid, s.image!.width, s.image!.height));
    const forced = keepMask(selectPatches(s.model.saliency, grid, { rho: 0.5, force }), grid);
    forcedKept += forced.reduce((a, v) => a + v, 0) / P;
    const order = Array.from({ length: P }, (_, j) => j).sort(() => rng.next() - 0.5);
    const random = keepMask(order.slice(0, Math.ceil(0.5 * P)), grid);
    for (const [k, mask] of [['saliency', bySaliency], ['forced', forced], ['random', random]] as const) {
      const r = boxCoverage(dets.map((d) => d.box), s.image.width, s.image.height, grid, mask);
      cover[k].inside += r.inside;
      cover[k].total += r.total;
    }
  });
  await bundle.close();
  const auc = rocAuc(pos, neg);

  // 2. the CLI on a JSONL of the same pairs: soft-cap copies with the defaults, and throughput per bundle
  const dir = mkdtempSync(join(tmpdir(), 'bench-photos-'));
  const root = join(shared, 'data');
  const jsonl = join(dir, 'photos.jsonl');
  writeFileSync(jsonl, pairs.map((p) => JSON.stringify({ id: p.id, caption: p.caption, crawl_time: 1_700_000_000_000, image_path: relative(root, p.photo.path), attrs: { truth: p.truth } })).join('\n') + '\n');
  const curate = (out: string, extra: string[]) => runSqueeze(['curate', '--input', jsonl, '--image-root', root, '--out', out, '--progress', 'off', ...extra]);
  const sampled = await curate(join(dir, 'sampled'), ['--no-dedup', '--no-near-dedup', '--no-balance']);
  if (sampled.code !== 0) throw new Error(sampled.stderr);
  const rows = await duck(`SELECT id, copies FROM read_parquet('${join(dir, 'sampled')}/topic=*/partition=*/*.parquet')`);
  const copies = new Map(rows.map((r) => [String(r.id), Number(r.copies)]));
  const keptShare = (truth: Pair['truth']) => {
    const group = pairs.filter((p) => p.truth === truth);
    return group.filter((p) => (copies.get(p.id) ?? 0) >= 1).length / group.length;
  };
  const speed: Record<string, string | number>[] = [];
  for (const models of ['photo', 'builtin-shapes']) {
    const r = await curate(join(dir, `speed-${models}`), ['--models', models]);
    if (r.code !== 0) throw new Error(r.stderr);
    const events = committedEvents(r.stdout);
    speed.push({ models, events, seconds: r.seconds.toFixed(1), events_per_s: (events / r.seconds).toFixed(1), peak_rss_mb: r.peakRssMb });
  }
  const ratio = Number(speed[0].events_per_s) / Number(speed[1].events_per_s);

  // 3. near duplicates: originals, then a re-encode, a resize and a crop of each
  const dupDir = join(dir, 'dups');
  const lines: string[] = [];
  const variants: { id: string; kind: string }[] = [];
  const originals = photos.slice(0, Math.min(photos.length, Number(process.env.BENCH_DUP_PHOTOS ?? 200)));
  for (const [i, p] of originals.entries()) lines.push(JSON.stringify({ id: `o${i}`, caption: p.captions[0], crawl_time: 1, image_b64: (await readFile(p.path)).toString('base64') }));
  for (const [i, p] of originals.entries()) {
    const forms = await nearDuplicateForms(await readFile(p.path));
    ['reencode', 'resize', 'crop'].forEach((kind, k) => {
      const id = `v${i}-${kind}`;
      variants.push({ id, kind });
      lines.push(JSON.stringify({ id, caption: p.captions[1] ?? p.captions[0], crawl_time: 1, image_b64: forms[k].toString('base64') }));
    });
  }
  writeFileSync(join(dir, 'dups.jsonl'), lines.join('\n') + '\n');
  const dd = await runSqueeze(['curate', '--input', join(dir, 'dups.jsonl'), '--out', dupDir, '--progress', 'off', '--no-soft-cap', '--no-balance']);
  if (dd.code !== 0) throw new Error(dd.stderr);
  const written = new Set((await duck(`SELECT id FROM read_parquet('${dupDir}/topic=*/partition=*/*.parquet')`)).map((r) => String(r.id)));
  const recall: Record<string, number> = {};
  for (const kind of ['reencode', 'resize', 'crop']) {
    const vs = variants.filter((v) => v.kind === kind);
    recall[kind] = vs.filter((v) => !written.has(v.id)).length / vs.length;
  }
  const allRecall = variants.filter((v) => !written.has(v.id)).length / variants.length;
  const falsePositive = originals.filter((_, i) => !written.has(`o${i}`)).length / originals.length;
  rmSync(dir, { recursive: true, force: true });

  const f = (x: number) => x.toFixed(3);
  const goals = [
    { measure: 'clip_score ROC AUC, true vs mismatched', result: f(auc), goal: '>= 0.85', n: `${pos.length} / ${neg.length}` },
    { measure: 'added-word precision on mismatched captions', result: addedMis ? f(rightMis / addedMis) : 'none added', goal: '>= 0.9', n: `${addedMis} words on ${enrichedMis} captions` },
    { measure: 'synthetic shape words added', result: synthetic, goal: '0', n: `${addedAll} words added in all` },
    { measure: 'true pairs with >= 1 copy (defaults)', result: f(keptShare('true')), goal: '>= 0.8', n: `${pairs.filter((p) => p.truth === 'true').length}` },
    { measure: 'mismatched pairs with >= 1 copy (defaults)', result: f(keptShare('mismatched')), goal: '<= 0.2', n: `${pairs.filter((p) => p.truth === 'mismatched').length}` },
    { measure: 'YOLOX box area on kept patches, keep 0.5, saliency alone', result: f(cover.saliency.inside / cover.saliency.total), goal: '>= 0.8', n: `${boxed} photos with a box >= 0.5` },
    { measure: 'same, confident boxes forced in (condense default)', result: f(cover.forced.inside / cover.forced.total), goal: '', n: `keeps ${f(forcedKept / Math.max(1, boxed))} of the patches` },
    { measure: 'same, random half of the patches', result: f(cover.random.inside / cover.random.total), goal: '', n: '' },
    { measure: 'near-duplicate recall (re-encode / resize / crop)', result: `${f(allRecall)} (${f(recall.reencode)} / ${f(recall.resize)} / ${f(recall.crop)})`, goal: '>= 0.95', n: `${variants.length} variants` },
    { measure: 'near-duplicate false positives on originals', result: f(falsePositive), goal: '<= 0.005', n: `${originals.length} originals` },
    { measure: 'throughput, photo / builtin-shapes bundle', result: ratio.toFixed(2), goal: '>= 0.5', n: `${speed[0].events_per_s} / ${speed[1].events_per_s} events/s` },
  ];
  table(`Photo bundle on ${pairs.length} held-out photos (eval split; a quarter with their own caption), in-process chain ${chainSeconds.toFixed(0)} s`, goals);
  table('squeeze curate on the same JSONL, default settings', speed);
  console.log(`-> ${writeResult('photos', { photos: pairs.length, enrichThreshold: threshold, auc, goals, speed, recall, falsePositive })}`);
}
