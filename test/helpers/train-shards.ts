/**
 * Committed shards of generated crawl images for trainer tests, written with the project's ShardSink (the
 * same commit records a curator writes): clean images with objects, each row with its crawl caption, its
 * kept patches (a fixed half of the 8x8 grid unless `keep` says otherwise), copies and scores.
 */
import { generateCrawl } from '../../src/gen/index';
import type { Sample } from '../../src/operators/sample';
import { ShardSink } from '../../src/streams/shards/shard-sink';
import { keptSample } from './samples';
import { LocalShardStore } from '../../src/streams/shards/shard-store';
import type { ShardStore } from '../../src/streams/shards/store';

export interface TrainShardOptions {
  out: string;
  /** where the shards go instead of the directory `out` (an object store) */
  store?: ShardStore;
  events: number;
  seed: number;
  rowsPerShard: number;
  topic?: string;
  partitions?: number;
  /** copies of row i (default 1) */
  copies?: (i: number) => number;
  /** kept patches of row i on the 8x8 grid (default: every other patch) */
  keep?: (i: number) => number[];
  /** row i: whether its caption is replaced by another image's (a useless sample); marks it in scores.planted */
  planted?: (i: number) => boolean;
  /** extra scores of row i */
  scores?: (i: number) => Record<string, number>;
}

export async function writeTrainShards(o: TrainShardOptions): Promise<{ rows: number; ids: string[]; copies: number[] }> {
  const topic = o.topic ?? 'crawl';
  const parts = o.partitions ?? 1;
  const sink = new ShardSink({ store: o.store ?? new LocalShardStore(o.out), configHash: 'test', modelVersion: 'test', deadLetterBytes: 64, compression: 'SNAPPY', now: () => 1_700_000_000_000 });
  const rows: { image: Buffer; caption: string; id: string }[] = [];
  for await (const ev of generateCrawl({ n: o.events, seed: o.seed })) {
    const a = ev.attrs;
    if (!ev.image || a.truth_bad !== '' || a.truth_dup_kind !== '' || a.truth_noise !== 'correct' || JSON.parse(a.truth_objects ?? '[]').length === 0) continue;
    rows.push({ image: ev.image, caption: ev.caption ?? '', id: ev.id });
  }
  const ids: string[] = [];
  const copies: number[] = [];
  const perPart: Sample[][] = Array.from({ length: parts }, () => []);
  rows.forEach((r, i) => {
    const p = i % parts;
    const s = keptSample(perPart[p]!.length, { topic, partition: p });
    s.event = { ...s.event!, id: r.id, caption: r.caption };
    const planted = o.planted?.(i) ?? false;
    s.caption = planted ? rows[(i + 7) % rows.length]!.caption : r.caption;
    s.image = { ...s.image!, bytes: r.image, mime: 'image/png', format: 'png' };
    const keep = o.keep?.(i) ?? Array.from({ length: 32 }, (_, j) => 2 * j);
    s.condensed = { kept: keep, grid: { rows: 8, cols: 8 }, keepRatio: keep.length / 64, bytesBefore: r.image.length, bytesAfter: r.image.length };
    s.copies = o.copies?.(i) ?? 1;
    s.scores = { clip_score: 0.3, ...(o.planted ? { planted: planted ? 1 : 0 } : {}), ...(o.scores?.(i) ?? {}) };
    ids.push(r.id);
    copies.push(s.copies);
    perPart[p]!.push(s);
  });
  for (let p = 0; p < parts; p++) {
    const samples = perPart[p]!;
    for (let at = 0; at < samples.length; at += o.rowsPerShard) {
      const chunk = samples.slice(at, at + o.rowsPerShard);
      await sink.commit({ topic, partition: p, samples: chunk, reason: 'rows', state: {} });
    }
  }
  return { rows: rows.length, ids, copies };
}
