/**
 * Locked features of photos through the SqueezeNet tower (features mode), for training and calibration.
 * Views: 1 is the image as it is, 2 adds its mirror image (flipped in the preprocessed tensor).
 */
import type { ModelSession } from '../../models/session';
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { prepareImage, preprocessBatch } from '../../models/preprocess';
import type { ImagePreprocess } from '../../models/types';
import { FEATURE_DIM, PHOTO_VISION_IO, SQUEEZENET, SQUEEZENET_MEAN } from './squeezenet-tower';

export const PHOTO_PREPROCESS: ImagePreprocess = {
  size: [SQUEEZENET.size, SQUEEZENET.size],
  resize: 'squash',
  mean: SQUEEZENET_MEAN,
  std: [1, 1, 1],
  channels: 'BGR',
  scale: 255,
};

function mirror(t: Float32Array, offset: number, H: number, W: number): void {
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < H; y++) {
      const row = offset + c * H * W + y * W;
      t.subarray(row, row + W).reverse();
    }
  }
}

/** Features [paths * views, FEATURE_DIM] and the CAM saliency [paths * views, 169], in path order. */
export async function photoFeatures(session: ModelSession, paths: (string | Buffer)[], views: 1 | 2, onProgress?: (done: number) => void): Promise<{ X: Float32Array; cam: Float32Array }> {
  const P = SQUEEZENET.grid * SQUEEZENET.grid;
  const [H, W] = PHOTO_PREPROCESS.size;
  const per = 3 * H * W;
  const X = new Float32Array(paths.length * views * FEATURE_DIM);
  const cam = new Float32Array(paths.length * views * P);
  const step = 16;
  for (let i = 0; i < paths.length; i += step) {
    const chunk = paths.slice(i, i + step);
    const bufs = await Promise.all(chunk.map((p) => (typeof p === 'string' ? readFile(p) : p)));
    const { tensor } = preprocessBatch(await Promise.all(bufs.map((b) => prepareImage(b, PHOTO_PREPROCESS))), PHOTO_PREPROCESS);
    const n = chunk.length * views;
    const input = new Float32Array(n * per);
    for (let k = 0; k < chunk.length; k++) {
      for (let v = 0; v < views; v++) {
        input.set(tensor.subarray(k * per, (k + 1) * per), (k * views + v) * per);
        if (v === 1) mirror(input, (k * views + v) * per, H, W);
      }
    }
    const res = await session.run({
      [PHOTO_VISION_IO.pixels]: new ort.Tensor('float32', input, [n, 3, H, W]),
      [PHOTO_VISION_IO.mask]: new ort.Tensor('float32', new Float32Array(n * P).fill(1), [n, P]),
    });
    X.set(res[PHOTO_VISION_IO.features].data as Float32Array, i * views * FEATURE_DIM);
    cam.set(res[PHOTO_VISION_IO.attention].data as Float32Array, i * views * P);
    onProgress?.(Math.min(paths.length, i + step));
  }
  return { X, cam };
}
