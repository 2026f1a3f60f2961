/**
 * Image preprocessing for the model bundle's encoders, with sharp.
 *
 * Order: decode -> EXIF orientation (`.rotate()`) -> alpha flattened on white -> sRGB, 3 channels ->
 * resize (squash | shortest-crop | letterbox) -> scale (0..1 or 0..255) -> (v - mean[c]) / std[c] ->
 * CHW float32 in the model's channel order (RGB or BGR).
 *
 * Decisions:
 * - Alpha is composited on white (as decodeImage does for its stored pixels), not dropped: HF's
 *   `convert_rgb` (PIL `convert('RGB')`) keeps whatever colour the transparent pixels happen to hold,
 *   often black, which is arbitrary; white is what a viewer shows. Opaque images are unaffected.
 * - `shortest-crop` follows HF CLIPImageProcessor: the shortest side becomes the target exactly, the
 *   long side `floor(target * long / short)` (HF `get_resize_output_image_size`, default_to_square=False),
 *   bicubic, rounded to uint8, then a centre crop with `top = floor((h - H) / 2)`,
 *   `left = floor((w - W) / 2)` (HF `center_crop`; torchvision rounds instead, which can differ by one
 *   pixel for odd margins). With a non-square target the short side is resized to the larger target
 *   side so the crop always fits.
 *   Differences from PIL that remain: libvips' `cubic` kernel is Catmull-Rom (Keys a = -0.5), the same
 *   kernel as PIL's BICUBIC, and both widen it when downsampling (antialiasing), but their fixed-point
 *   rounding differs: against a Pillow-bicubic reference (test/models/preprocess.test.ts) about 80% of
 *   values are identical and the rest differ by one level out of 255 (mean 0.2 levels, max 3-7 on COCO
 *   photos, also for a 7.6x downscale), i.e. under 0.02 of one normalised std. sharp also honours
 *   embedded ICC profiles (converting to sRGB), which PIL ignores, and JPEG decoders may differ by a
 *   level. With `fastShrinkOnLoad: false` sharp still shrinks JPEGs on load (by 2, 4 or 8), but leaves at
 *   least a factor of two to the resize kernel. HF configs
 *   whose `size.shortest_edge` differs from `crop_size` (resize 256, crop 224) cannot be expressed:
 *   here the short side always goes to the crop size.
 * - `letterbox` follows YOLOX `preproc`: r = min(H / h, W / w), resize to (floor(w r), floor(h r)) with
 *   a bilinear kernel, placed at the top-left, the rest filled with `pad` (default 114) in every
 *   channel (before scaling and mean/std, like YOLOX). OpenCV's INTER_LINEAR does not antialias when
 *   downsampling and libvips' linear does; boxes are insensitive to this.
 * - `squash` resizes to exactly the target with the bicubic kernel, ignoring aspect.
 *
 * `meta` maps model pixels back to the oriented image: x_model = x * scale + padX,
 * y_model = y * scaleY + padY, so x = (x_model - padX) / scale. For `letterbox` padX = padY = 0 and
 * scale = scaleY = r (YOLOX's ratio; the floor of the resized size makes the true scales differ from r
 * by under a pixel over the image); for `shortest-crop` padX/padY are minus the crop offsets and the
 * scales are the resized over the source size; for `squash` the two scales differ.
 */
import sharp from 'sharp';
import type { ImagePreprocess, PreparedImage } from './types';

export interface PreprocessMeta {
  /** oriented source image size in pixels */
  width: number;
  height: number;
  /** horizontal scale from source to model pixels (for letterbox the single uniform scale r) */
  scale: number;
  /** vertical scale; equals `scale` for letterbox, nearly for shortest-crop, differs for squash */
  scaleY: number;
  padX: number;
  padY: number;
}

export interface Preprocessed {
  /** CHW, 3 * H * W */
  tensor: Float32Array;
  meta: PreprocessMeta;
}

interface Plan {
  /** size the source is resized to */
  rw: number;
  rh: number;
  /** offset of the resized image inside the target (negative: cropped) */
  ox: number;
  oy: number;
  kernel: 'cubic' | 'linear';
  /** the uniform scale of letterbox (YOLOX's r), reported instead of rw / w */
  r?: number;
}

function plan(w: number, h: number, p: ImagePreprocess): Plan {
  const [H, W] = p.size;
  switch (p.resize) {
    case 'squash':
      return { rw: W, rh: H, ox: 0, oy: 0, kernel: 'cubic' };
    case 'shortest-crop': {
      const target = Math.max(H, W);
      let rw: number;
      let rh: number;
      if (w <= h) {
        rw = target;
        rh = Math.max(target, Math.floor((target * h) / w));
      } else {
        rh = target;
        rw = Math.max(target, Math.floor((target * w) / h));
      }
      // 0 - x rather than -x: no negative zero in meta
      return { rw, rh, ox: 0 - Math.floor((rw - W) / 2), oy: 0 - Math.floor((rh - H) / 2), kernel: 'cubic' };
    }
    case 'letterbox': {
      const r = Math.min(H / h, W / w);
      return { rw: Math.max(1, Math.floor(w * r)), rh: Math.max(1, Math.floor(h * r)), ox: 0, oy: 0, kernel: 'linear', r };
    }
  }
}

function checkPreprocess(p: ImagePreprocess): void {
  const [H, W] = p.size;
  if (!(Number.isInteger(H) && Number.isInteger(W) && H > 0 && W > 0)) throw new Error(`preprocess.size must be two positive integers, got ${JSON.stringify(p.size)}`);
  if (p.std.some((s) => !(s > 0))) throw new Error(`preprocess.std must be positive, got ${JSON.stringify(p.std)}`);
}

/** Identifies what a prepared image is good for: the plan depends on the size and the resize mode only. */
export const preprocessKey = (p: ImagePreprocess): string => `${p.resize}:${p.size[0]}x${p.size[1]}`;

/** The size `p` resizes a `width` x `height` image to before placing it in the model input. */
export function resizedSize(width: number, height: number, p: ImagePreprocess): { width: number; height: number } {
  const pl = plan(width, height, p);
  return { width: pl.rw, height: pl.rh };
}

/**
 * Decodes encoded bytes straight to what `p` resizes them to (sharp's shrink-on-load included): the
 * pixels the bundle's models were built with. `size` skips reading the header again; `strict` makes a
 * damaged image an error instead of decoding what can be read (decodeImage's check).
 */
export async function prepareImage(
  bytes: Buffer,
  p: ImagePreprocess,
  opts: { size?: { width: number; height: number }; strict?: { limitInputPixels: number } } = {},
): Promise<PreparedImage> {
  let w = opts.size?.width;
  let h = opts.size?.height;
  if (!w || !h) {
    const info = await sharp(bytes).metadata();
    w = info.autoOrient?.width ?? info.width;
    h = info.autoOrient?.height ?? info.height;
  }
  if (!w || !h) throw new Error('preprocess: image has no size');
  const pl = plan(w, h, p);
  const input = opts.strict ? { failOn: 'error' as const, limitInputPixels: opts.strict.limitInputPixels } : { failOn: 'none' as const };
  const { data, info: ri } = await sharp(bytes, input)
    .rotate()
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb')
    .resize(pl.rw, pl.rh, { fit: 'fill', kernel: pl.kernel, fastShrinkOnLoad: false })
    .removeAlpha()
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (ri.width !== pl.rw || ri.height !== pl.rh || ri.channels !== 3) throw new Error(`preprocess: resized to ${ri.width}x${ri.height}x${ri.channels}, expected ${pl.rw}x${pl.rh}x3`);
  return { key: preprocessKey(p), data, width: w, height: h };
}

/**
 * Writes one preprocessed image into `out` at `offset` (CHW) and returns its meta.
 */
function preprocessInto(img: PreparedImage, p: ImagePreprocess, out: Float32Array, offset: number): PreprocessMeta {
  const [H, W] = p.size;
  if (img.key !== preprocessKey(p)) throw new Error(`preprocess: image was prepared for ${img.key}, the model needs ${preprocessKey(p)}`);
  const { data, width: w, height: h } = img;
  const pl = plan(w, h, p);
  if (data.length !== pl.rw * pl.rh * 3) throw new Error(`preprocess: resized image has ${data.length} bytes, expected ${pl.rw}x${pl.rh}x3`);
  const C = 3;
  const k = p.scale === 255 ? 1 : 1 / 255;
  const plane = H * W;
  const pad = p.pad ?? 114;
  for (let c = 0; c < 3; c++) {
    const src = p.channels === 'BGR' ? 2 - c : c;
    const mean = p.mean[c];
    const inv = 1 / p.std[c];
    const padValue = (pad * k - mean) * inv;
    const base = offset + c * plane;
    for (let y = 0; y < H; y++) {
      const sy = y - pl.oy;
      const row = base + y * W;
      if (sy < 0 || sy >= pl.rh) {
        out.fill(padValue, row, row + W);
        continue;
      }
      const srow = sy * pl.rw * C;
      for (let x = 0; x < W; x++) {
        const sx = x - pl.ox;
        out[row + x] = sx < 0 || sx >= pl.rw ? padValue : (data[srow + sx * C + src] * k - mean) * inv;
      }
    }
  }
  return { width: w, height: h, scale: pl.r ?? pl.rw / w, scaleY: pl.r ?? pl.rh / h, padX: pl.ox, padY: pl.oy };
}

/** Prepares encoded images for one preprocessing (tools and tests that start from bytes). */
export const prepareImages = (images: Buffer[], p: ImagePreprocess): Promise<PreparedImage[]> => Promise.all(images.map((b) => prepareImage(b, p)));

/** Preprocesses one encoded image into a CHW float32 tensor (3 * H * W). */
export async function preprocessImage(bytes: Buffer, p: ImagePreprocess): Promise<Preprocessed> {
  checkPreprocess(p);
  const tensor = new Float32Array(3 * p.size[0] * p.size[1]);
  const meta = preprocessInto(await prepareImage(bytes, p), p, tensor, 0);
  return { tensor, meta };
}

/** Preprocesses N prepared images into one float32 tensor [N, 3, H, W]. */
export function preprocessBatch(images: PreparedImage[], p: ImagePreprocess): { tensor: Float32Array; metas: PreprocessMeta[]; dims: [number, number, number, number] } {
  checkPreprocess(p);
  const [H, W] = p.size;
  const per = 3 * H * W;
  const tensor = new Float32Array(images.length * per);
  const metas = images.map((img, i) => preprocessInto(img, p, tensor, i * per));
  return { tensor, metas, dims: [images.length, 3, H, W] };
}
