/**
 * The Parquet shard sink and its commit protocol (docs/ARCHITECTURE.md, The commit protocol): it turns a closed chunk into curated rows,
 * dead letters, operator state and a commit record, and has its store place them (shard-store.ts: a
 * directory, renames and link(); an object store, attempt-unique keys and a conditional put). Only after the
 * commit record exists may the caller publish the manifest and commit `end + 1` to Kafka.
 */
import { traceparentOf } from '../../telemetry/event-trace';
import { gzipSync } from 'node:zlib';
import type { ShardChunk } from '../../operators/roll-shards';
import type { Sample } from '../../operators/sample';
import type { CuratedRow, DeadLetter, ShardManifest } from '../../records';
import { PARQUET_SCHEMA_VERSION } from './parquet-rows';
import { COMMIT_VERSION, type CommitRecord } from './shard-log';
import type { ShardStore } from './store';

export interface ShardSinkOptions {
  store: ShardStore;
  configHash: string;
  /** model version of rows no model stage touched */
  modelVersion: string;
  /** write image_embedding and text_embedding */
  embeddings?: boolean;
  deadLetterBytes: number;
  compression: 'UNCOMPRESSED' | 'GZIP' | 'SNAPPY';
  now?: () => number;
}

export interface CommitResult {
  record: CommitRecord;
  manifest: ShardManifest | null;
  deadLetters: DeadLetter[];
}

export class ShardSink {
  private readonly now: () => number;
  constructor(private readonly o: ShardSinkOptions) {
    this.now = o.now ?? Date.now;
  }

  /** `traceparent`: the commit span's context, recorded so the trainer's spans can refer to it (docs/TRACING.md) */
  async commit(chunk: ShardChunk, traceparent: string | null = null): Promise<CommitResult> {
    const { topic, partition, samples } = chunk;
    const start = samples[0].coord.offset;
    const end = samples[samples.length - 1].coord.offset;
    const created = this.now();
    const rows: CuratedRow[] = [];
    const dead: DeadLetter[] = [];
    const deadByReason: Record<string, number> = {};
    const filteredByReason: Record<string, number> = {};
    const filteredOffsets: Record<string, number[]> = {};
    for (const s of samples) {
      const o = s.outcome;
      if (o.kind === 'keep') rows.push(this.toRow(s, created));
      else if (o.kind === 'dead') {
        dead.push(this.toDeadLetter(s, o.reason, o.message, created));
        deadByReason[o.reason] = (deadByReason[o.reason] ?? 0) + 1;
      } else {
        filteredByReason[o.reason] = (filteredByReason[o.reason] ?? 0) + 1;
        (filteredOffsets[o.reason] ??= []).push(s.coord.offset);
      }
    }

    // the model(s) that processed this range: more than one when a bundle swap fell inside it
    const versions = [...new Set(samples.map((s) => s.modelVersion).filter((v): v is string => typeof v === 'string' && v.length > 0))];
    const modelVersion = versions.length > 0 ? versions.join(',') : this.o.modelVersion;
    const base: Omit<CommitRecord, 'shard' | 'shard_bytes' | 'dead_letters' | 'state'> = {
      version: COMMIT_VERSION,
      topic,
      partition,
      start_offset: start,
      end_offset: end,
      records: samples.length,
      rows: rows.length,
      dead: dead.length,
      filtered: samples.length - rows.length - dead.length,
      dead_by_reason: deadByReason,
      filtered_by_reason: filteredByReason,
      filtered_offsets: filteredOffsets,
      close_reason: chunk.reason,
      config_hash: this.o.configHash,
      model_version: modelVersion,
      schema_version: PARQUET_SCHEMA_VERSION,
      created_at: created,
    };
    // sampled events' trace contexts by offset (kept, dead and filtered), only when tracing is on
    const traced = samples.filter((s) => s.trace);
    if (traceparent) base.traceparent = traceparent;
    if (traced.length > 0) base.traces = Object.fromEntries(traced.map((s) => [String(s.coord.offset), traceparentOf(s.trace!.spanContext())]));
    const record = await this.o.store.commit({
      topic,
      partition,
      start,
      end,
      rows,
      compression: this.o.compression,
      deadLines: dead.length > 0 ? dead.map((d) => JSON.stringify(d)).join('\n') + '\n' : null,
      state: gzipSync(JSON.stringify(chunk.state)),
      record: base,
    });
    const shard = record.shard;

    const manifest: ShardManifest | null = shard
      ? {
          shard_uri: shard,
          rows: rows.length,
          source_topic: topic,
          source_partition: partition,
          start_offset: start,
          end_offset: end,
          created_at: created,
          model_version: modelVersion,
          config_hash: this.o.configHash,
          schema_version: PARQUET_SCHEMA_VERSION,
        }
      : null;
    return { record, manifest, deadLetters: dead };
  }

  private toRow(s: Sample, curatedAt: number): CuratedRow {
    const ev = s.event!;
    const img = s.image!;
    const attrs = { ...ev.attrs };
    if (s.flags.length) attrs.squeeze_flags = s.flags.join(',');
    return {
      id: ev.id,
      source_topic: s.coord.topic,
      source_partition: s.coord.partition,
      source_offset: s.coord.offset,
      image: img.bytes,
      image_mime: img.mime,
      width: img.width,
      height: img.height,
      grid_rows: s.condensed?.grid.rows ?? s.model?.grid.rows ?? null,
      grid_cols: s.condensed?.grid.cols ?? s.model?.grid.cols ?? null,
      kept_patches: s.condensed ? [...s.condensed.kept] : null,
      keep_ratio: s.condensed?.keepRatio ?? null,
      caption: s.caption,
      caption_raw: ev.caption,
      tags: s.tags ? s.tags.map((t) => ({ label: t.label, score: t.score })) : null,
      clip_score: s.scores.clip_score ?? null,
      score: s.mixed?.score ?? null,
      scores: { ...s.scores },
      mix_version: s.mixed?.weightsVersion ?? null,
      copies: s.copies,
      image_embedding: this.o.embeddings && s.model ? Array.from(s.model.imageEmbedding) : null,
      text_embedding: this.o.embeddings && s.model ? Array.from(s.model.textEmbedding) : null,
      model_version: s.modelVersion ?? this.o.modelVersion,
      config_hash: this.o.configHash,
      curated_at: curatedAt,
      attrs,
    };
  }

  private toDeadLetter(s: Sample, reason: DeadLetter['reason'], message: string, at: number): DeadLetter {
    const raw = s.raw ?? Buffer.alloc(0);
    const truncated = raw.length > this.o.deadLetterBytes;
    return {
      source_topic: s.coord.topic,
      source_partition: s.coord.partition,
      source_offset: s.coord.offset,
      // an event that decoded keeps its fields; a record an edge rejected keeps what the edge could read
      id: s.event?.id ?? s.rejected?.id ?? null,
      url: s.event ? s.event.url : (s.rejected?.url ?? null),
      image_url: s.event ? s.event.image_url : (s.rejected?.image_url ?? null),
      reason,
      message,
      original_b64: (truncated ? raw.subarray(0, this.o.deadLetterBytes) : raw).toString('base64'),
      original_bytes: raw.length,
      truncated,
      failed_at: at,
    };
  }
}
