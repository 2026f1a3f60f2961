/**
 * The exactly-once audit (docs/ARCHITECTURE.md, The commit protocol), read back with independent readers (DuckDB for Parquet):
 * every expected input offset is exactly one of a row, a dead letter or a filtered decision;
 * commit records of a partition never overlap; no shard, dead-letter or temp file is visible
 * that no commit record names.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { partitionKeys, type S3ShardStore } from '../../src/streams/shards/s3-shard-store';
import { type CommitRecord, readCommits } from '../../src/streams/shards/shard-log';
import { duckQuery, sqlQuote } from './duckdb';

export interface Audit {
  rows: number;
  dead: number;
  filtered: number;
  deadByReason: Record<string, number>;
  filteredByReason: Record<string, number>;
  shards: string[];
}

/** Where an audit reads a run's output: a local directory or an object store, through its commit records. */
export interface OutputView {
  readCommits(topic: string, partition: number): Promise<CommitRecord[]>;
  /** what DuckDB's read_parquet is given for a relative path */
  parquetUri(rel: string): string;
  readText(rel: string): Promise<string>;
  /** names directly under a relative directory (none when it does not exist) */
  listNames(dir: string): Promise<string[]>;
}

export function localView(out: string): OutputView {
  return {
    readCommits: (topic, partition) => readCommits(out, topic, partition),
    parquetUri: (rel) => join(out, rel),
    readText: async (rel) => readFileSync(join(out, rel), 'utf8'),
    listNames: async (dir) => (existsSync(join(out, dir)) ? readdirSync(join(out, dir)) : []),
  };
}

/** An S3 output read with the store's own listing and DuckDB over s3:// (helpers/duckdb-s3 loads httpfs). */
export function storeView(store: S3ShardStore): OutputView {
  return {
    readCommits: (topic, partition) => store.readCommits(topic, partition),
    parquetUri: (rel) => store.uri(rel),
    readText: async (rel) => {
      const body = await store.get(rel);
      assert.ok(body, `${store.uri(rel)} is named by a commit record but missing`);
      return body.toString('utf8');
    },
    listNames: (dir) => store.list(dir),
  };
}

/** `expected`: partition -> number of input records (offsets 0..n-1). */
export async function auditOutput(out: string, topic: string, expected: Map<number, number>): Promise<Audit> {
  return auditView(localView(out), topic, expected);
}

export async function auditView(view: OutputView, topic: string, expected: Map<number, number>): Promise<Audit> {
  const audit: Audit = { rows: 0, dead: 0, filtered: 0, deadByReason: {}, filteredByReason: {}, shards: [] };
  for (const [partition, count] of expected) {
    const commits = await view.readCommits(topic, partition);
    const seen = new Map<number, string>();
    const mark = (offset: number, what: string): void => {
      assert.ok(!seen.has(offset), `${topic}[${partition}] offset ${offset} is both ${seen.get(offset)} and ${what}`);
      seen.set(offset, what);
    };
    let prevEnd = -1;
    const named = new Set<string>();
    for (const c of commits) {
      assert.ok(c.start_offset > prevEnd, `commit records overlap at ${topic}[${partition}] ${c.start_offset}`);
      prevEnd = c.end_offset;
      for (const f of [c.shard, c.dead_letters, c.state]) if (f) named.add(posix.normalize(f));
      if (c.shard) {
        audit.shards.push(view.parquetUri(c.shard));
        const rows = await duckQuery(
          `SELECT source_offset, source_partition, source_topic FROM read_parquet(${sqlQuote(view.parquetUri(c.shard))})`,
        );
        assert.equal(rows.length, c.rows, `row count of ${c.shard}`);
        for (const r of rows) {
          assert.equal(r.source_partition, partition);
          assert.ok(Number(r.source_offset) >= c.start_offset && Number(r.source_offset) <= c.end_offset, 'row inside its range');
          mark(Number(r.source_offset), 'row');
        }
      } else assert.equal(c.rows, 0);
      if (c.dead_letters) {
        const lines = (await view.readText(c.dead_letters)).trim().split('\n');
        assert.equal(lines.length, c.dead);
        for (const l of lines) {
          const d = JSON.parse(l) as { source_offset: number; reason: string; message: string };
          assert.ok(d.reason && d.message, 'a dead letter has a reason and a message');
          mark(d.source_offset, `dead letter (${d.reason})`);
          audit.deadByReason[d.reason] = (audit.deadByReason[d.reason] ?? 0) + 1;
        }
      } else assert.equal(c.dead, 0);
      let filtered = 0;
      for (const [reason, offs] of Object.entries(c.filtered_offsets)) {
        for (const o of offs) mark(o, `filtered (${reason})`);
        filtered += offs.length;
        audit.filteredByReason[reason] = (audit.filteredByReason[reason] ?? 0) + offs.length;
      }
      assert.equal(filtered, c.filtered);
      assert.equal(c.rows + c.dead + c.filtered, c.records);
      audit.rows += c.rows;
      audit.dead += c.dead;
      audit.filtered += c.filtered;
    }
    for (let o = 0; o < count; o++) assert.ok(seen.has(o), `${topic}[${partition}] offset ${o} is not accounted for`);
    assert.equal(seen.size, count, `${topic}[${partition}] has offsets beyond its input`);
    const p = partitionKeys(topic, partition);
    for (const dir of [p.shards, p.dlq, p.state]) {
      for (const name of await view.listNames(dir)) {
        assert.ok(named.has(posix.join(dir, name)), `${posix.join(dir, name)} is visible but no commit record names it`);
      }
    }
    for (const name of await view.listNames(p.commits)) assert.ok(!name.startsWith('.tmp-'), 'no temporary commit record left');
  }
  return audit;
}
