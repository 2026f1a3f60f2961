/**
 * Quality of the vision and text branches on `gen` data with truth, and on real COCO photos with
 * YOLOX (issue 3): condensation coverage, tag precision/recall, enrichment, clip_score ROC AUC on
 * mismatched captions, storage saved by blanking, and per-stage throughput.
 *   npm run bench -- quality            (BENCH_QUALITY_EVENTS, default 800)
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { firstValueFrom, of } from 'rxjs';
import { BUILTIN_BUNDLE } from '../src/curate/models';
import { generateCrawl } from '../src/gen';
import { loadBundle } from '../src/models/bundle';
import { prepareImage } from '../src/models/preprocess';
import type { Box } from '../src/models/types';
import { YoloxDetector } from '../src/models/yolox';
import { choosePatches, objectCoverage, selectPatches } from '../src/operators/choose-patches';
import { condense } from '../src/operators/condense';
import { modelNeeds } from '../src/operators/model-calls';
import { decodeImage } from '../src/operators/decode-image';
import { embed } from '../src/operators/embed';
import { enrich } from '../src/operators/enrich';
import { newSample, type Batch, type Sample } from '../src/operators/sample';
import { tag } from '../src/operators/tag';
import { validateEvent } from '../src/operators/validate-event';
import { mentions } from '../src/text/english';
import { ROOT, table, writeResult } from './lib';

const DECODE = { maxImageBytes: 20 << 20, maxPixels: 40e6, minSide: 32, maxAspect: 8, imageFormat: 'keep' as const, quality: 90 };

interface Truth {
  objects: { kind: string; box: Box }[];
  noise: string;
}
const truthOf = (s: Sample): Truth => ({
  objects: JSON.parse(s.event?.attrs.truth_objects || '[]') as { kind: string; box: Box }[],
  noise: s.event?.attrs.truth_noise ?? '',
});

function rocAuc(pos: number[], neg: number[]): number {
  let wins = 0;
  for (const p of pos) for (const n of neg) wins += p > n ? 1 : p === n ? 0.5 : 0;
  return pos.length && neg.length ? wins / (pos.length * neg.length) : NaN;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, (performance.now() - t0) / 1000];
}

export async function benchQuality(): Promise<void> {
  const n = Number(process.env.BENCH_QUALITY_EVENTS ?? 800);
  const bundle = await loadBundle(BUILTIN_BUNDLE, { threads: 1 });
  const samples: Sample[] = [];
  let offset = 0;
  for await (const ev of generateCrawl({ n, seed: 4242, badRate: 0, dupRate: 0 })) {
    const s = newSample({ topic: 'bench', partition: 0, offset: offset++ }, null);
    s.event = ev;
    s.caption = ev.caption;
    samples.push(s);
  }
  const batch: Batch = { topic: 'bench', partition: 0, samples };
  const [, decodeS] = await timed(() => firstValueFrom(of(batch).pipe(validateEvent({ maxCaptionChars: 2000 }), decodeImage({ ...DECODE, prepare: () => modelNeeds(bundle) }))));
  const [, embedS] = await timed(() => firstValueFrom(of(batch).pipe(embed({ bundle, batchSize: 32 }))));
  const [, tagS] = await timed(() => firstValueFrom(of(batch).pipe(choosePatches({ rho: 0.5 }), tag({ bundle }))));
  const clean = samples.filter((s) => s.outcome.kind === 'keep' && s.model && truthOf(s).objects.length > 0);

  // condensation coverage at three keep ratios, against random keeping with the same budget
  const coverageRows: Record<string, string | number>[] = [];
  for (const rho of [0.25, 0.5, 0.75]) {
    const cov: number[] = [];
    const rnd: number[] = [];
    let seed = 1;
    for (const s of clean) {
      const t = truthOf(s);
      const grid = s.model!.grid;
      const kept = selectPatches(s.model!.saliency, grid, { rho });
      cov.push(objectCoverage(kept, grid, s.image!.width, s.image!.height, t.objects.map((o) => o.box)));
      const all = Array.from({ length: grid.rows * grid.cols }, (_, i) => i);
      for (let i = all.length - 1; i > 0; i--) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        const j = seed % (i + 1);
        [all[i], all[j]] = [all[j], all[i]];
      }
      rnd.push(objectCoverage(all.slice(0, kept.length), grid, s.image!.width, s.image!.height, t.objects.map((o) => o.box)));
    }
    coverageRows.push({ keep_ratio: rho, object_pixel_coverage: f3(mean(cov)), random_keeping: f3(mean(rnd)), images: cov.length });
  }
  table(`Condensation: share of ground-truth object pixels inside kept patches (${bundle.version})`, coverageRows);

  // tags against the drawn objects
  let tp = 0;
  let fp = 0;
  let fn = 0;
  for (const s of clean) {
    const truth = new Set(truthOf(s).objects.map((o) => o.kind));
    const got = new Set((s.tags ?? []).map((t) => t.label));
    for (const g of got) (truth.has(g) ? tp++ : fp++);
    for (const t of truth) if (!got.has(t)) fn++;
  }
  const precision = tp / Math.max(1, tp + fp);
  const recall = tp / Math.max(1, tp + fn);
  table('Tags (zero-shot on kept patches) against the objects drawn', [{ images: clean.length, precision: f3(precision), recall: f3(recall), tags: tp + fp }]);

  // clip_score: matched vs mismatched captions
  const matched = samples.filter((s) => s.model && truthOf(s).noise === 'correct').map((s) => s.scores.clip_score);
  const mismatched = samples.filter((s) => s.model && truthOf(s).noise === 'mismatched').map((s) => s.scores.clip_score);
  const auc = rocAuc(matched, mismatched);
  table('clip_score: correct against mismatched captions', [{ correct: matched.length, mismatched: mismatched.length, roc_auc: f3(auc) }]);

  // enrichment and storage, through the operators as the pipeline runs them
  const beforeBytes = clean.reduce((a, s) => a + s.image!.bytes.length, 0);
  const namesTrue = (s: Sample, text: string) => truthOf(s).objects.some((o) => mentions(text, o.kind));
  const before = clean.filter((s) => namesTrue(s, s.event!.caption)).length;
  const cleanBatch: Batch = { topic: 'bench', partition: 0, samples: clean };
  const [, condenseS] = await timed(() => firstValueFrom(of(cleanBatch).pipe(condense({ blank: true, quality: 85 }))));
  // enrichment at several add thresholds, each from the crawled captions
  const captionsIn = clean.map((s) => s.caption);
  const flagsIn = clean.map((s) => [...s.flags]);
  const enrichRows: Record<string, string | number>[] = [];
  for (const threshold of [0.3, 0.4, 0.5]) {
    clean.forEach((s, i) => {
      s.caption = captionsIn[i];
      s.flags = [...flagsIn[i]];
    });
    await firstValueFrom(of(cleanBatch).pipe(enrich({ threshold, llm: null })));
    const after = clean.filter((s) => namesTrue(s, s.caption)).length;
    let added = 0;
    let wrong = 0;
    for (const s of clean) {
      const kinds = new Set(truthOf(s).objects.map((o) => o.kind));
      for (const f of s.flags.filter((x) => x.startsWith('enriched:+'))) {
        added++;
        if (!kinds.has(f.slice('enriched:+'.length))) wrong++;
      }
    }
    enrichRows.push({ add_threshold: threshold, captions: clean.length, naming_a_true_object_before: f3(before / clean.length), after: f3(after / clean.length), classes_added: added, added_wrong: f3(wrong / Math.max(1, added)) });
  }
  table('Enrichment (rule-based; a tag is added when its confidence >= the add threshold and the caption lacks it)', enrichRows);
  const afterBytes = clean.reduce((a, s) => a + s.image!.bytes.length, 0);
  table('Storage: stored image bytes per row, blanking the dropped half of the patches', [
    { rows: clean.length, bytes_per_row_before: Math.round(beforeBytes / clean.length), after: Math.round(afterBytes / clean.length), saved: f3(1 - afterBytes / beforeBytes) },
  ]);

  const perCore = (count: number, s: number, cores: number) => (count / s / cores).toFixed(0);
  const speed = [
    { stage: 'decode (sharp)', images: samples.length, seconds: decodeS.toFixed(2), images_per_s_per_core: perCore(samples.length, decodeS, 2) },
    { stage: `embed (${bundle.version}, 1 thread)`, images: samples.length, seconds: embedS.toFixed(2), images_per_s_per_core: perCore(samples.length, embedS, 1) },
    { stage: 'tag (second pass on kept patches)', images: samples.length, seconds: tagS.toFixed(2), images_per_s_per_core: perCore(samples.length, tagS, 1) },
    { stage: 'condense + blank + encode', images: clean.length, seconds: condenseS.toFixed(2), images_per_s_per_core: perCore(clean.length, condenseS, 2) },
  ];
  const coco = await cocoYolox(speed);
  table('Per-stage throughput on this machine (2 cores; per core = images/s divided by the cores the stage can use)', speed);
  await bundle.close();
  console.log(`-> ${writeResult('quality', { events: n, bundle: bundle.version, coverage: coverageRows, tags: { precision, recall }, clipScoreAuc: auc, enrichment: enrichRows, storage: { beforeBytes, afterBytes, rows: clean.length }, speed, coco })}`);
}

/** YOLOX on the shared COCO photos: how many detected labels the human captions name. */
async function cocoYolox(speed: Record<string, string | number>[]): Promise<Record<string, number> | null> {
  const shared = join(ROOT, '..', 'shared');
  const model = join(shared, 'models', 'yolox_nano', 'yolox_nano.onnx');
  const captions = join(shared, 'data', 'coco', 'captions.jsonl');
  if (!existsSync(model) || !existsSync(captions)) {
    console.log('skipped: ../shared COCO photos or YOLOX absent');
    return null;
  }
  const detector = await YoloxDetector.load(model, join(shared, 'models', 'yolox_nano', 'coco_classes.txt'), { scoreThreshold: 0.35, nmsIou: 0.45, threads: 1 });
  const rows = readFileSync(captions, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { file: string; split: string; captions: string[] });
  let pairs = 0;
  let named = 0;
  let images = 0;
  const t0 = performance.now();
  for (const r of rows) {
    // `file` is relative to data/coco (images/<split>/<name>.jpg); older copies list the bare name
    const path = [join(shared, 'data', 'coco', r.file), join(shared, 'data', 'coco', 'images', r.split, r.file)].find((p) => existsSync(p));
    if (!path) continue;
    const [dets] = await detector.detect([await prepareImage(readFileSync(path), detector.preprocess)]);
    images++;
    for (const label of new Set(dets.map((d) => d.label))) {
      pairs++;
      if (r.captions.some((c) => mentions(c, label))) named++;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  await detector.close();
  speed.push({ stage: 'YOLOX-nano detect (1 thread, incl. decode)', images, seconds: seconds.toFixed(2), images_per_s_per_core: (images / seconds).toFixed(0) });
  table('Real photos: YOLOX-nano labels named in any of the five human COCO captions (word or listed synonym)', [
    { photos: images, photo_label_pairs: pairs, named_in_captions: f3(named / Math.max(1, pairs)) },
  ]);
  return { photos: images, pairs, named };
}
