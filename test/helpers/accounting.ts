/**
 * The exactly-once audit of DESIGN 5, read back with independent readers (DuckDB for Parquet):
 * every expected input offset is exactly one of a row, a dead letter or a filtered decision;
 * commit records of a partition never overlap; no shard, dead-letter or temp file is visible
 * that no commit record names.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { partitionPaths, readCommits } from '../../src/streams/shard-log';
import { duckQuery, sqlQuote } from './duckdb';

export interface Audit {
  rows: number;
  dead: number;
  filtered: number;
  deadByReason: Record<string, number>;
  filteredByReason: Record<string, number>;
  shards: string[];
}

/** `expected`: partition -> number of input records (offsets 0..n-1). */
export async function auditOutput(out: string, topic: string, expected: Map<number, number>): Promise<Audit> {
  const audit: Audit = { rows: 0, dead: 0, filtered: 0, deadByReason: {}, filteredByReason: {}, shards: [] };
  for (const [partition, count] of expected) {
    const commits = await readCommits(out, topic, partition);
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
      for (const f of [c.shard, c.dead_letters, c.state]) if (f) named.add(join(out, f));
      if (c.shard) {
        audit.shards.push(join(out, c.shard));
        const rows = await duckQuery(
          `SELECT source_offset, source_partition, source_topic FROM read_parquet(${sqlQuote(join(out, c.shard))})`,
        );
        assert.equal(rows.length, c.rows, `row count of ${c.shard}`);
        for (const r of rows) {
          assert.equal(r.source_partition, partition);
          assert.ok(Number(r.source_offset) >= c.start_offset && Number(r.source_offset) <= c.end_offset, 'row inside its range');
          mark(Number(r.source_offset), 'row');
        }
      } else assert.equal(c.rows, 0);
      if (c.dead_letters) {
        const lines = readFileSync(join(out, c.dead_letters), 'utf8').trim().split('\n');
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
    const p = partitionPaths(out, topic, partition);
    for (const dir of [p.shards, p.dlq, p.state]) {
      if (!existsSync(dir)) continue;
      for (const name of readdirSync(dir)) {
        assert.ok(named.has(join(dir, name)), `${join(dir, name)} is visible but no commit record names it`);
      }
    }
    if (existsSync(p.commits)) for (const name of readdirSync(p.commits)) assert.ok(!name.startsWith('.tmp-'), 'no temporary commit record left');
  }
  return audit;
}
