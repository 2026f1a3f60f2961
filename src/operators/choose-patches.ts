/**
 * choosePatches: which image patches a sample keeps, decided once, right after the model pass. From the
 * per-patch saliency embed stored, keep the top ceil(rho * P) patches (or the smallest set holding a share
 * `mass` of the saliency), plus every patch a confident detection box overlaps. Writes `s.patches`
 * (row-major, ascending indices, and the grid); tag's zero-shot pass encodes those patches and condense
 * records them on the row.
 *
 * The patch grid spans the whole stored image: patch (r, c) covers columns [c*W/cols, (c+1)*W/cols) and
 * rows [r*H/rows, (r+1)*H/rows). Detection boxes are in the pixels of the decoded, EXIF-oriented image,
 * the same frame.
 *
 * @example
 * batches$.pipe(embed({ bundle }), choosePatches({ rho: 0.5, forceDetections: { minScore: 0.5 } }), tag({ bundle }))
 */
import type { OperatorFunction } from 'rxjs';
import type { Box, PatchGrid } from '../models/types';
import { type Batch, isKept } from './sample';
import { stage } from './stage';

export interface ChoosePatchesOptions {
  /** share of patches to keep, 0..1; default 0.5 */
  rho?: number;
  /** keep instead the smallest set of patches holding this share (0..1] of the saliency */
  mass?: number;
  /** patches overlapped by a detection box with at least this score are always kept */
  forceDetections?: { minScore: number };
}

export function choosePatches(options: ChoosePatchesOptions): OperatorFunction<Batch, Batch> {
  return stage('choose_patches', (batch) => {
    for (const s of batch.samples) {
      if (!isKept(s) || !s.image || !s.model) continue;
      const { saliency, grid } = s.model;
      const force: number[] = [];
      if (options.forceDetections) {
        for (const d of s.detections ?? []) {
          if (d.score >= options.forceDetections.minScore) force.push(...boxPatches(d.box, grid, s.image.width, s.image.height));
        }
      }
      s.patches = { kept: selectPatches(saliency, grid, { rho: options.rho, mass: options.mass, force }), grid: { ...grid } };
    }
    return batch;
  });
}

export interface SelectOptions {
  rho?: number;
  mass?: number;
  /** patch indices always kept */
  force?: Iterable<number>;
}

/**
 * Picks the patches to keep from per-patch saliency (row-major over `grid`). Ties go to the lower
 * index, so the choice is deterministic. `mass` (when given) wins over `rho`. Never returns an empty set
 * for a non-empty grid. Returns ascending indices.
 */
export function selectPatches(saliency: ArrayLike<number>, grid: PatchGrid, opts: SelectOptions = {}): number[] {
  const P = grid.rows * grid.cols;
  if (P <= 0) return [];
  const sal = (j: number): number => {
    const v = j < saliency.length ? saliency[j] : 0;
    return Number.isFinite(v) && v > 0 ? v : 0;
  };
  const order = Array.from({ length: P }, (_, j) => j).sort((a, b) => sal(b) - sal(a) || a - b);
  let n: number;
  if (opts.mass !== undefined) {
    const mass = Math.min(1, Math.max(0, opts.mass));
    let total = 0;
    for (let j = 0; j < P; j++) total += sal(j);
    if (total <= 0) n = P;
    else {
      const target = mass * total * (1 - 1e-9);
      let acc = 0;
      n = 0;
      while (n < P && acc < target) acc += sal(order[n++]);
    }
  } else {
    const rho = Math.min(1, Math.max(0, opts.rho ?? 0.5));
    n = Math.ceil(rho * P - 1e-9);
  }
  const keep = new Set(order.slice(0, Math.max(1, n)));
  for (const j of opts.force ?? []) if (Number.isInteger(j) && j >= 0 && j < P) keep.add(j);
  return [...keep].sort((a, b) => a - b);
}

/** The patches a box (x, y, w, h in image pixels) overlaps with positive area. */
export function boxPatches(box: Box, grid: PatchGrid, width: number, height: number): number[] {
  const [x, y, w, h] = box;
  const x0 = Math.max(0, x);
  const y0 = Math.max(0, y);
  const x1 = Math.min(width, x + w);
  const y1 = Math.min(height, y + h);
  if (!(x1 > x0 && y1 > y0) || width <= 0 || height <= 0) return [];
  const pw = width / grid.cols;
  const ph = height / grid.rows;
  // the patch holding x0 up to the patch holding the last point before x1
  const c0 = Math.min(grid.cols - 1, Math.floor(x0 / pw));
  const c1 = Math.min(grid.cols - 1, Math.ceil(x1 / pw) - 1);
  const r0 = Math.min(grid.rows - 1, Math.floor(y0 / ph));
  const r1 = Math.min(grid.rows - 1, Math.ceil(y1 / ph) - 1);
  const out: number[] = [];
  for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) out.push(r * grid.cols + c);
  return out;
}

/** A 0/1 mask over the grid from kept indices (what VisionEncoder.encode takes as `keep`). */
export function keepMask(kept: Iterable<number>, grid: PatchGrid): Uint8Array {
  const m = new Uint8Array(grid.rows * grid.cols);
  for (const j of kept) if (j >= 0 && j < m.length) m[j] = 1;
  return m;
}

/**
 * Share of ground-truth box pixels (the union of `boxes`, clipped to the image) that lie inside kept
 * patches, in 0..1. Exact (area on a compressed grid of box and patch edges). Returns 1 when there is
 * no box area to cover.
 */
export function objectCoverage(kept: Iterable<number>, grid: PatchGrid, width: number, height: number, boxes: Box[]): number {
  const clipped = boxes
    .map(([x, y, w, h]) => [Math.max(0, x), Math.max(0, y), Math.min(width, x + w), Math.min(height, y + h)] as const)
    .filter(([x0, y0, x1, y1]) => x1 > x0 && y1 > y0);
  if (clipped.length === 0) return 1;
  const mask = keepMask(kept, grid);
  const xs = new Set<number>();
  const ys = new Set<number>();
  for (let c = 0; c <= grid.cols; c++) xs.add((c * width) / grid.cols);
  for (let r = 0; r <= grid.rows; r++) ys.add((r * height) / grid.rows);
  for (const [x0, y0, x1, y1] of clipped) {
    xs.add(x0).add(x1);
    ys.add(y0).add(y1);
  }
  const X = [...xs].sort((a, b) => a - b);
  const Y = [...ys].sort((a, b) => a - b);
  let inBoxes = 0;
  let inKept = 0;
  for (let i = 0; i + 1 < X.length; i++) {
    const cx = (X[i] + X[i + 1]) / 2;
    const col = Math.min(grid.cols - 1, Math.floor((cx * grid.cols) / width));
    for (let k = 0; k + 1 < Y.length; k++) {
      const cy = (Y[k] + Y[k + 1]) / 2;
      if (!clipped.some(([x0, y0, x1, y1]) => cx > x0 && cx < x1 && cy > y0 && cy < y1)) continue;
      const area = (X[i + 1] - X[i]) * (Y[k + 1] - Y[k]);
      inBoxes += area;
      const row = Math.min(grid.rows - 1, Math.floor((cy * grid.rows) / height));
      if (mask[row * grid.cols + col]) inKept += area;
    }
  }
  return inBoxes > 0 ? inKept / inBoxes : 1;
}

