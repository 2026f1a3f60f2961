/**
 * The Parquet shard sink and its commit protocol (DESIGN 5): write the shard under a temporary
 * name, fsync, rename to <start>-<end>.parquet; the same for dead letters and operator state; then
 * create the commit record exclusively (temp + link, which fails if another curator got there first).
 * Only after that may the caller publish the manifest and commit `end + 1` to Kafka.
 */
import { traceparentOf } from '../telemetry/event-trace';
import { promises as fs } from 'node:fs';
import { join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { ShardChunk } from '../operators/roll-shards';
import type { Sample } from '../operators/sample';
import type { CuratedRow, DeadLetter, ShardManifest } from '../records';
import { writeRowsParquet, PARQUET_SCHEMA_VERSION } from './parquet-rows';
import {
  COMMIT_VERSION,
  type CommitRecord,
  clearOrphans,
  FencedError,
  fsyncDir,
  pad,
  partitionPaths,
  writeTemp,
} from './shard-log';

export interface ShardSinkOptions {
  out: string;
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
    const paths = partitionPaths(this.o.out, topic, partition);
    const commitPath = join(paths.commits, `${pad(start)}.json`);
    if (await exists(commitPath)) throw new FencedError(topic, partition, start);

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
    const range = `${pad(start)}-${pad(end)}`;
    // A temporary (or its directory) that vanishes while we write or place it was removed by a curator that
    // was assigned this partition and recovered it: this one is a zombie for it and re-syncs, as when it
    // loses the commit race. Files it placed already may carry the new owner's names; the next recovery
    // removes them unless a commit record names them.
    const owned = async <T>(step: () => Promise<T>): Promise<T> => {
      try {
        return await step();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FencedError(topic, partition, start);
        throw e;
      }
    };

    const placed: string[] = [];
    const place = async (write: () => Promise<string>, dir: string, name: string): Promise<string> => {
      const final = join(dir, name);
      const tmp = await owned(write);
      await owned(() => fs.rename(tmp, final));
      placed.push(final);
      return relative(this.o.out, final);
    };

    let shard: string | null = null;
    let shardBytes = 0;
    if (rows.length > 0) {
      await fs.mkdir(paths.shards, { recursive: true });
      const writeShard = async (): Promise<string> => {
        const tmp = join(paths.shards, `.tmp-${range}-${process.pid}-${Math.random().toString(36).slice(2)}.parquet`);
        shardBytes = (await writeRowsParquet(tmp, rows, { compression: this.o.compression })).bytes;
        return tmp;
      };
      shard = await place(writeShard, paths.shards, `${range}.parquet`);
    }
    let deadLetters: string | null = null;
    if (dead.length > 0) {
      const lines = dead.map((d) => JSON.stringify(d)).join('\n') + '\n';
      deadLetters = await place(() => writeTemp(paths.dlq, range, lines), paths.dlq, `${range}.jsonl`);
    }
    const stateBytes = gzipSync(JSON.stringify(chunk.state));
    const state = await place(() => writeTemp(paths.state, range, stateBytes), paths.state, `${pad(start)}.json.gz`);

    const record: CommitRecord = {
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
      shard,
      shard_bytes: shardBytes,
      dead_letters: deadLetters,
      state,
      close_reason: chunk.reason,
      config_hash: this.o.configHash,
      model_version: modelVersion,
      schema_version: PARQUET_SCHEMA_VERSION,
      created_at: created,
    };
    // sampled events' trace contexts by offset (kept, dead and filtered), only when tracing is on
    const traced = samples.filter((s) => s.trace);
    if (traceparent) record.traceparent = traceparent;
    if (traced.length > 0) record.traces = Object.fromEntries(traced.map((s) => [String(s.coord.offset), traceparentOf(s.trace!.spanContext())]));
    const tmp = await owned(() => writeTemp(paths.commits, range, JSON.stringify(record, null, 1)));
    try {
      await fs.link(tmp, commitPath);
    } catch (e) {
      // our temporary record was removed by the new owner's recovery: as above, a zombie, fenced
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FencedError(topic, partition, start);
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // Lost the race to a curator that now owns this partition: leave its files, remove ours.
      const winner = JSON.parse(await fs.readFile(commitPath, 'utf8')) as CommitRecord;
      const theirs = new Set([winner.shard, winner.dead_letters, winner.state].filter(Boolean).map((f) => join(this.o.out, f as string)));
      for (const final of placed) if (!theirs.has(final)) await fs.rm(final, { force: true });
      await clearOrphans(this.o.out, winner);
      throw new FencedError(topic, partition, start);
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await fsyncDir(paths.commits);
    await clearOrphans(this.o.out, record);

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

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}
