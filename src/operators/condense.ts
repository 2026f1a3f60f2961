/**
 * condense: the vision branch of "Squeeze Out Tokens", for samples that will be written. Records the
 * patches choosePatches kept (`s.patches`, row-major, ascending) in `s.condensed`; with `blank`, paints
 * the dropped patches a flat colour and re-encodes the stored image (same width and height) so it
 * compresses smaller. A sample without a patch choice (no model pass) is left as it is.
 *
 * The patch grid spans the whole stored image (operators/choose-patches.ts).
 *
 * @example
 * batches$.pipe(embed({ bundle }), choosePatches({ rho: 0.5 }), ..., condense({ blank: true }))
 */
import type { OperatorFunction } from 'rxjs';
import sharp from 'sharp';
import type { PatchGrid } from '../models/types';
import { keepMask } from './choose-patches';
import { type Batch, forEachKept, type Sample } from './sample';
import { stage } from './stage';

export interface CondenseOptions {
  /** paint the dropped patches with `fill` and re-encode the stored image */
  blank: boolean;
  /** RGB of blanked patches; default mid grey [128, 128, 128] */
  fill?: [number, number, number];
  /** JPEG / WebP quality of the re-encoded image; default 90 */
  quality?: number;
  /** images blanked at once; default 2 */
  concurrency?: number;
}

/** Pixel column/row range [start, end) of patch column c (or row r): integer bounds that tile the image. */
const span = (i: number, n: number, size: number): [number, number] => [Math.floor((i * size) / n), Math.floor(((i + 1) * size) / n)];

/** Paints the patches not in `kept` with `fill` on an RGB raw buffer, in place. */
export function blankPatches(
  rgb: Buffer,
  width: number,
  height: number,
  channels: number,
  grid: PatchGrid,
  kept: Iterable<number>,
  fill: [number, number, number],
): void {
  const mask = keepMask(kept, grid);
  for (let r = 0; r < grid.rows; r++) {
    const [y0, y1] = span(r, grid.rows, height);
    for (let c = 0; c < grid.cols; c++) {
      if (mask[r * grid.cols + c]) continue;
      const [x0, x1] = span(c, grid.cols, width);
      for (let y = y0; y < y1; y++) {
        let p = (y * width + x0) * channels;
        for (let x = x0; x < x1; x++, p += channels) {
          rgb[p] = fill[0];
          rgb[p + 1] = fill[1];
          rgb[p + 2] = fill[2];
        }
      }
    }
  }
}

export function condense(options: CondenseOptions): OperatorFunction<Batch, Batch> {
  const fill = options.fill ?? [128, 128, 128];
  const quality = options.quality ?? 90;
  return stage('condense', (batch) =>
    forEachKept(batch, options.concurrency ?? 2, 'decode_error', async (s) => {
      if (!s.image || !s.patches) return;
      condenseOne(s as Sample & { patches: NonNullable<Sample['patches']> });
      if (options.blank) await blankOne(s, fill, quality);
    }),
  );
}

function condenseOne(s: Sample & { patches: NonNullable<Sample['patches']> }): void {
  const { kept, grid } = s.patches;
  const bytes = s.image!.bytes.length;
  s.condensed = { kept: [...kept], grid: { ...grid }, keepRatio: kept.length / (grid.rows * grid.cols), bytesBefore: bytes, bytesAfter: bytes };
}

/**
 * Blanks the dropped patches and re-encodes (WebP when stored as WebP, else JPEG). Keeps the original
 * bytes (and flags it) when the result would not be smaller or the image cannot be re-read: blanking
 * only saves storage, the kept indices carry the condensation.
 */
/**
 * An encoded image with the patches not in `kept` painted `fill`, re-encoded as WebP when `mime` is WebP,
 * else as JPEG (same width and height). Also what `squeeze export --blank` writes.
 */
export async function paintDropped(bytes: Buffer, mime: string, grid: PatchGrid, kept: number[], fill: [number, number, number], quality: number): Promise<Buffer> {
  const { data, info } = await sharp(bytes, { failOn: 'none' }).rotate().removeAlpha().raw().toBuffer({ resolveWithObject: true });
  blankPatches(data, info.width, info.height, info.channels, grid, kept, fill);
  const raw = sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels as 3 } });
  return mime === 'image/webp' ? raw.webp({ quality }).toBuffer() : raw.jpeg({ quality }).toBuffer();
}

async function blankOne(s: Sample, fill: [number, number, number], quality: number): Promise<void> {
  const img = s.image!;
  const c = s.condensed!;
  if (c.kept.length === c.grid.rows * c.grid.cols) return;
  try {
    const webp = img.mime === 'image/webp';
    const out = await paintDropped(img.bytes, img.mime, c.grid, c.kept, fill, quality);
    if (out.length >= img.bytes.length) {
      s.flags.push('condense_blank_not_smaller');
      return;
    }
    img.bytes = out;
    img.mime = webp ? 'image/webp' : 'image/jpeg';
    c.bytesAfter = out.length;
  } catch {
    s.flags.push('condense_blank_failed');
  }
}
