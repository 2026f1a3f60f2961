/**
 * The photo bundle's calibration on held-out photos (build.ts runs it on the cal split, bench/photos.ts
 * measures the result on the eval split): ROC AUC, the enrichment threshold, the soft-cap setting, the
 * near-duplicate thumbnail distance, and the class names and near-duplicate forms both use.
 */
import { firstValueFrom, from, toArray } from 'rxjs';
import sharp from 'sharp';
import { decodeImage } from '../../operators/decode-image';
import { dedupNear } from '../../operators/dedup-near';
import { type Batch, newSample } from '../../operators/sample';
import { softplus } from '../../operators/soft-cap';

/** ROC AUC of positives over negatives (ties count half). */
export function rocAuc(pos: readonly number[], neg: readonly number[]): number {
  const all = [...pos.map((v) => [v, 1] as const), ...neg.map((v) => [v, 0] as const)].sort((a, b) => a[0] - b[0]);
  let rankSum = 0;
  for (let i = 0; i < all.length; ) {
    let j = i;
    while (j < all.length && all[j][0] === all[i][0]) j++;
    const rank = (i + j + 1) / 2;
    for (let k = i; k < j; k++) if (all[k][1] === 1) rankSum += rank;
    i = j;
  }
  return (rankSum - (pos.length * (pos.length + 1)) / 2) / Math.max(1, pos.length * neg.length);
}

export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length);
  return { mean, std: Math.sqrt(v) };
}

export const round = (x: number, d = 4) => Math.round(x * 10 ** d) / 10 ** d;

/** Wilson score lower bound of a proportion `right / n` at `z` standard errors. */
export function wilsonLower(right: number, n: number, z: number): number {
  if (n === 0) return 0;
  const p = right / n;
  const z2 = z * z;
  return (p + z2 / (2 * n) - z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
}

/**
 * The lowest detection score at which the classes enrichment would add are right (named by one of the
 * photo's own human captions) at least `minPrecision` of the time, over the candidate scores. With `z` > 0
 * the Wilson lower bound at z standard errors must reach it (a small calibration split measures precision
 * only roughly; z = 1 asks for about one standard error of margin).
 */
export function calibrateEnrichThreshold(added: { score: number; right: boolean }[], minPrecision: number, floor: number, z = 0): { threshold: number; precision: number; added: number } {
  const sorted = [...added].sort((a, b) => b.score - a.score);
  let right = 0;
  let best = { threshold: 1, precision: 1, added: 0 };
  for (let i = 0; i < sorted.length; i++) {
    if (sorted[i].right) right++;
    const next = sorted[i + 1]?.score ?? -1;
    if (next === sorted[i].score) continue;
    const precision = right / (i + 1);
    if ((z > 0 ? wilsonLower(right, i + 1, z) : precision) >= minPrecision && sorted[i].score >= floor) best = { threshold: sorted[i].score, precision, added: i + 1 };
  }
  return { threshold: round(best.threshold, 3), precision: round(best.precision), added: best.added };
}

/** The official COCO 2017 names for the VOC-style ones some YOLOX class files use (same order, same classes). */
const COCO_NAMES: Record<string, string> = { motorbike: 'motorcycle', aeroplane: 'airplane', sofa: 'couch', pottedplant: 'potted plant', diningtable: 'dining table', tvmonitor: 'tv' };
export const cocoNames = (classes: string[]): string[] => classes.map((c) => COCO_NAMES[c] ?? c);

/** The near-duplicate forms the calibration and the benchmark use: a JPEG re-encode at quality 60, a 0.6x resize, a 90% centre crop. */
export async function nearDuplicateForms(bytes: Buffer): Promise<Buffer[]> {
  const meta = await sharp(bytes).metadata();
  const w = meta.width ?? 224;
  const h = meta.height ?? 224;
  return Promise.all([
    sharp(bytes).jpeg({ quality: 60 }).toBuffer(),
    sharp(bytes).resize(Math.round(w * 0.6), Math.round(h * 0.6)).jpeg({ quality: 90 }).toBuffer(),
    sharp(bytes).extract({ left: Math.round(w * 0.05), top: Math.round(h * 0.05), width: Math.round(w * 0.9), height: Math.round(h * 0.9) }).jpeg({ quality: 90 }).toBuffer(),
  ]);
}

/**
 * The smallest colour-thumbnail distance (dedupNear maxThumbDistance) at which dedup finds at least
 * `minRecall` of the near-duplicate forms of the given originals and filters none of the originals,
 * trying `candidates` in order; the last candidate when none does.
 */
export async function calibrateThumbDistance(originals: Buffer[], forms: Buffer[], candidates: number[], minRecall: number): Promise<{ distance: number; recall: number; falsePositives: number }> {
  let last = { distance: candidates[candidates.length - 1], recall: 0, falsePositives: 0 };
  for (const distance of candidates) {
    const images = [...originals, ...forms];
    const samples = images.map((b, i) => {
      const s = newSample({ topic: 'cal', partition: 0, offset: i }, null);
      s.event = { id: `cal-${i}`, url: null, image_url: null, image: b, caption: '', crawl_time: 0, source: null, attrs: {} };
      return s;
    });
    const batches: Batch[] = [];
    for (let i = 0; i < samples.length; i += 64) batches.push({ topic: 'cal', partition: 0, samples: samples.slice(i, i + 64) });
    const out = (await firstValueFrom(
      from(batches).pipe(
        decodeImage({ maxImageBytes: 1 << 28, maxPixels: 1 << 28, minSide: 1, maxAspect: 100, imageFormat: 'keep', quality: 90 }),
        dedupNear({ useEmbeddings: false, maxThumbDistance: distance }),
        toArray(),
      ),
    )).flatMap((b) => b.samples);
    const falsePositives = out.slice(0, originals.length).filter((x) => x.outcome.kind !== 'keep').length;
    const recall = out.slice(originals.length).filter((x) => x.outcome.kind !== 'keep').length / Math.max(1, forms.length);
    last = { distance, recall: round(recall, 3), falsePositives };
    if (recall >= minRecall && falsePositives === 0) return last;
  }
  return last;
}

/**
 * Picks the clip_score weight and the soft-cap alpha (systematic draws) on the cal split: true pairs
 * and mismatched ones in the proportion `trueShare`, mixed score w * (x - mean) / std, lambda solved so
 * the copies per input are `rate` (the fluid limit softplus(s + lambda) / alpha), and a pair counted as
 * kept with probability min(1, expected copies). The choice keeps the most true pairs while at most
 * `maxFpr` of the mismatched keep a copy (the fewest mismatched when none does).
 */
export function tuneSoftCap(pos: readonly number[], neg: readonly number[], stat: { mean: number; std: number }, o: { trueShare: number; rate: number; maxFpr: number }): { weight: number; alpha: number; tpr: number; fpr: number } {
  let best: { weight: number; alpha: number; tpr: number; fpr: number } | null = null;
  let fallback: { weight: number; alpha: number; tpr: number; fpr: number } | null = null;
  const wPos = o.trueShare / pos.length;
  const wNeg = (1 - o.trueShare) / neg.length;
  for (const weight of [1, 1.5, 2, 3, 4]) {
    const zp = pos.map((x) => (weight * (x - stat.mean)) / stat.std);
    const zn = neg.map((x) => (weight * (x - stat.mean)) / stat.std);
    for (const alpha of [0.15, 0.25, 0.5, 1, 2]) {
      const mean = (lambda: number) => (zp.reduce((a, s) => a + softplus(s + lambda), 0) * wPos + zn.reduce((a, s) => a + softplus(s + lambda), 0) * wNeg) / alpha;
      let lo = -60;
      let hi = 60;
      for (let k = 0; k < 80; k++) {
        const mid = (lo + hi) / 2;
        if (mean(mid) > o.rate) hi = mid;
        else lo = mid;
      }
      const lambda = (lo + hi) / 2;
      const kept = (zs: number[]) => zs.reduce((a, s) => a + Math.min(1, softplus(s + lambda) / alpha), 0) / zs.length;
      const r = { weight, alpha, tpr: round(kept(zp)), fpr: round(kept(zn)) };
      if (r.fpr <= o.maxFpr && (!best || r.tpr > best.tpr)) best = r;
      if (!fallback || r.fpr < fallback.fpr) fallback = r;
    }
  }
  return best ?? fallback!;
}
