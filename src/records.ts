/**
 * One TypeScript type per record that crosses Kafka or lands in Parquet (docs/FORMATS.md; docs/ARCHITECTURE.md, Record shapes).
 * `test/records.test.ts` checks these against the Avro schemas in `schemas/`.
 */

/** Raw crawl event, `schemas/crawl-event.avsc` (docs/FORMATS.md, JSONL events and Kafka events). */
export interface CrawlEvent {
  id: string;
  url: string | null;
  image_url: string | null;
  image: Buffer | null;
  caption: string;
  /** epoch milliseconds */
  crawl_time: number;
  source: string | null;
  attrs: Record<string, string>;
}

/** Where an input record came from. For files: topic = the file's name, partition 0, offset = record index. */
export interface Coord {
  topic: string;
  partition: number;
  offset: number;
}

export const DEAD_REASONS = [
  'schema_error',
  'missing_image',
  'decode_error',
  'unsupported_format',
  'image_too_large',
  'image_too_small',
  'bad_aspect_ratio',
  'fetch_blocked',
  'fetch_failed',
  'caption_invalid',
  'id_invalid',
  'record_too_large',
  'path_blocked',
  /** a model (encoder or detector) failed on this one image */
  'model_error',
] as const;
export type DeadReason = (typeof DEAD_REASONS)[number];

/**
 * Why a readable event is left out of the output on purpose (counted per reason in the commit record's
 * `filtered_offsets`; docs/FORMATS.md, Commit records). Not an error: nothing goes to the dead letters.
 */
export const FILTER_REASONS = [
  /** the same content hash as an earlier image of the partition */
  'duplicate_exact',
  /** a near copy of an earlier image (dHash, thumbnail, embedding) */
  'duplicate_near',
  /** its concepts are over-represented (concept balancing) */
  'balanced_out',
  /** soft-cap found no usable score on it */
  'no_score',
  /** soft-cap drew zero copies for it */
  'zero_copies',
] as const;
export type FilterReason = (typeof FILTER_REASONS)[number];

/** A dead letter (docs/FORMATS.md, Dead letters): every input that cannot be curated. */
export interface DeadLetter {
  source_topic: string;
  source_partition: number;
  source_offset: number;
  id: string | null;
  /** the input's page and image URLs, when they could be read */
  url: string | null;
  image_url: string | null;
  reason: DeadReason;
  message: string;
  /** base64 of the original record bytes, truncated to the configured limit */
  original_b64: string;
  original_bytes: number;
  truncated: boolean;
  failed_at: number;
}

export interface Tag {
  label: string;
  score: number;
}

/** Curated row, one per kept sample (docs/FORMATS.md, Output rows). Columns later stages fill are null until they exist. */
export interface CuratedRow {
  id: string;
  source_topic: string;
  source_partition: number;
  source_offset: number;
  image: Buffer;
  image_mime: string;
  width: number;
  height: number;
  grid_rows: number | null;
  grid_cols: number | null;
  kept_patches: number[] | null;
  keep_ratio: number | null;
  caption: string;
  caption_raw: string;
  tags: Tag[] | null;
  clip_score: number | null;
  score: number | null;
  /** every per-sample score that went into the mix, by name */
  scores: Record<string, number>;
  /** which mixing weights produced `score` */
  mix_version: string | null;
  copies: number;
  image_embedding: number[] | null;
  text_embedding: number[] | null;
  model_version: string;
  config_hash: string;
  /** epoch milliseconds */
  curated_at: number;
  attrs: Record<string, string>;
}

/** Manifest event, `schemas/shard-manifest.avsc`, one per committed shard in Kafka mode. */
export interface ShardManifest {
  shard_uri: string;
  rows: number;
  source_topic: string;
  source_partition: number;
  start_offset: number;
  end_offset: number;
  created_at: number;
  model_version: string;
  config_hash: string;
  schema_version: number;
}

/** Control event, `schemas/control.avsc`: model versions and mixing weights. */
export interface ControlEvent {
  kind: 'model_version' | 'mix_weights';
  model_version: string | null;
  bundle_uri: string | null;
  weights: Record<string, number>;
  bias: number | null;
  published_at: number;
  publisher: string | null;
}
