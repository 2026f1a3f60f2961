/**
 * What the model stages need from a model bundle. The built-in shapes CLIP, the photo bundle's
 * encoders, a real CLIP ONNX export and a YOLOX detector all sit behind these interfaces; operators
 * know nothing else.
 */

/** Image preprocessing of one encoder, applied with sharp (EXIF orientation first). */
export interface ImagePreprocess {
  /** target [height, width] */
  size: [number, number];
  /** squash: resize to size ignoring aspect; shortest-crop: CLIP (shortest side to size, centre crop); letterbox: YOLOX (fit, pad) */
  resize: 'squash' | 'shortest-crop' | 'letterbox';
  /** per-channel mean and std in the model's channel order, applied after scaling */
  mean: [number, number, number];
  std: [number, number, number];
  channels: 'RGB' | 'BGR';
  /** pixel values before mean/std: 1 means 0..1, 255 means 0..255 */
  scale: 1 | 255;
  /** letterbox padding value (0..255), default 114 */
  pad?: number;
}

export interface PatchGrid {
  rows: number;
  cols: number;
}

export interface ImageEncoding {
  /** L2-normalised image embedding */
  embedding: Float32Array;
  /** per-patch saliency over grid rows*cols, row-major, non-negative, sums to 1 */
  saliency: Float32Array;
}

/** A box in the pixels of the decoded (EXIF-oriented) image: x, y, width, height. */
export type Box = [number, number, number, number];

export interface Detection {
  label: string;
  score: number;
  box: Box;
}

/**
 * One image made ready for one preprocessing (models/preprocess `prepareImage`): decoded, EXIF-oriented,
 * sRGB, resized as the plan of `ImagePreprocess` says, before the crop or padding, scaling and mean/std
 * that the encoder applies itself. decodeImage prepares these once per image, on the sample.
 */
export interface PreparedImage {
  /** which preprocessing it was made for (`preprocessKey`: resize mode and size) */
  key: string;
  /** uint8 RGB pixels of the resized image, row-major */
  data: Buffer;
  /** the oriented source image's size, in pixels */
  width: number;
  height: number;
}

export interface VisionEncoder {
  readonly grid: PatchGrid;
  /** how images are prepared for it (decodeImage does that once per image) */
  readonly preprocess: ImagePreprocess;
  /**
   * Encodes a batch of prepared images. `keep`, when given for an image, is a 0/1 mask over the grid: a
   * model with a `mask` input attends to the kept patches only, others see the dropped patches blanked in
   * the pixels (models/bundle.ts); the dropped patches get saliency 0.
   */
  encode(images: PreparedImage[], keep?: (Uint8Array | null)[]): Promise<ImageEncoding[]>;
}

export interface TextEncoder {
  /** L2-normalised text embeddings */
  encode(texts: string[]): Promise<Float32Array[]>;
}

export interface ObjectDetector {
  /** how images are prepared for it */
  readonly preprocess: ImagePreprocess;
  /** detections per prepared image, boxes in the pixels of the oriented source image */
  detect(images: PreparedImage[]): Promise<Detection[][]>;
}

export interface ModelBundle {
  /** recorded on every row as model_version */
  readonly version: string;
  readonly vision: VisionEncoder;
  readonly text: TextEncoder;
  readonly detector: ObjectDetector | null;
  /** class names for zero-shot tagging, with the prompt template that turns each into text */
  readonly tags: { vocabulary: string[]; prompt: string; threshold: number; confidence: 'softmax' | 'cosine' };
  /** what the bundle's builder measured on its calibration split (absent parts: the curator's defaults) */
  readonly calibration?: {
    enrich?: { threshold: number };
    domain?: { statistic: 'tag_confidence'; floor: number; expectedShare: number; warnShare: number; window: number };
    mix?: { weights: Record<string, number>; stats: Record<string, { mean: number; std: number }> };
    softCap?: { alpha: number; mode: 'faithful' | 'systematic' };
    /** how near duplicates are confirmed with this bundle's embeddings (thumbnails: the embedding is not stable enough) */
    dedup?: { confirm: 'embeddings' | 'thumbnails'; eps: number; maxThumbDistance?: number };
  };
  close(): Promise<void>;
}
