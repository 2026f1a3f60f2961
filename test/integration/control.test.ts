/**
 * Hot reload through the control topic: mixing weights and model bundles published while a curator
 * runs change later batches only, and rows record which weights and which model produced them.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import { DEFAULT_MIX_WEIGHTS, mixScore } from '../../src/operators/mix';
import { writeGenJsonl } from '../../src/gen';
import { readCommits } from '../../src/streams/shard-log';
import { squeeze } from '../helpers/cli';
import { duckQuery, sqlQuote } from '../helpers/duckdb';
import { BROKERS, createTopic, highWatermarks, REGISTRY, servicesAvailable } from '../helpers/kafka';

const skip = servicesAvailable() ? false : 'skipped: SQUEEZE_BROKERS/SQUEEZE_REGISTRY not set (run through npm test, which starts deploy/services.sh)';

async function committedUpTo(out: string, topic: string, high: Map<number, number>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    let done = true;
    for (const [p, h] of high) {
      const c = await readCommits(out, topic, p);
      if (h > 0 && (c.length === 0 || c[c.length - 1].end_offset < h - 1)) done = false;
    }
    if (done) return;
    if (Date.now() > until) throw new Error(`not committed up to ${JSON.stringify([...high])} in time`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

test('weights published on the control topic change later batches only', { skip }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'control-it-'));
  const run = `${process.pid}-${Date.now()}`;
  const topic = `it.control.${run}`;
  const controlTopic = `it.control-topic.${run}`;
  const service = ['--brokers', BROKERS, '--registry', REGISTRY];
  await writeGenJsonl(join(work, 'a.jsonl'), { n: 240, seed: 31, badRate: 0 });
  await writeGenJsonl(join(work, 'b.jsonl'), { n: 240, seed: 32, badRate: 0 });
  await createTopic(topic, 2);
  const produce = async (file: string) => {
    const r = await squeeze(['produce', ...service, '--topic', topic, '--input', join(work, file), '--progress', 'off']);
    assert.equal(r.code, 0, r.stderr);
  };
  await produce('a.jsonl');
  const out = join(work, 'out');
  let child: ChildProcess | null = null;
  const curating = squeeze(
    ['curate', ...service, '--topic', topic, '--group', `g-${run}`, '--control-topic', controlTopic, '--out', out,
      '--idle-ms', '500', '--shard-rows', '40', '--progress', 'off', '--no-soft-cap', '--models', 'none'],
    { onStart: (p) => (child = p) },
  );
  const phase1 = await highWatermarks(topic);
  await committedUpTo(out, topic, phase1, 240_000);

  const pub = await squeeze(['control', ...service, '--control-topic', controlTopic, '--weights', '{"caption_quality": -2}', '--bias', '1']);
  assert.equal(pub.code, 0, pub.stderr);
  await new Promise((r) => setTimeout(r, 4000));
  await produce('b.jsonl');
  const phase2 = await highWatermarks(topic);
  await committedUpTo(out, topic, phase2, 240_000);
  (child as ChildProcess | null)?.kill('SIGTERM');
  const done = await curating;
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, /mixing weights mix-.* from the control topic/);

  const rows = await duckQuery(
    `SELECT source_partition AS p, source_offset AS o, score, scores['caption_quality'] AS cq, scores['image_quality'] AS iq, mix_version FROM read_parquet(${sqlQuote(join(out, 'topic=*', 'partition=*', '*.parquet'))})`,
  );
  const before = rows.filter((r) => Number(r.o) < (phase1.get(Number(r.p)) ?? 0));
  const after = rows.filter((r) => Number(r.o) >= (phase1.get(Number(r.p)) ?? 0));
  assert.ok(before.length > 50 && after.length > 50, `${before.length} rows before, ${after.length} after`);
  // the model-free scores (no bundle here): caption_quality and image_quality
  const d = DEFAULT_MIX_WEIGHTS;
  const z = (cq: number) => (cq - d.stats.caption_quality.mean) / d.stats.caption_quality.std;
  for (const r of before) {
    assert.equal(r.mix_version, d.version);
    const expected = mixScore({ caption_quality: Number(r.cq), image_quality: Number(r.iq) }, d);
    assert.ok(Math.abs(Number(r.score) - expected) < 1e-3, `default weights: ${r.score} vs ${expected}`);
  }
  for (const r of after) {
    assert.match(String(r.mix_version), /^mix-/);
    assert.ok(Math.abs(Number(r.score) - (1 - 2 * z(Number(r.cq)))) < 1e-3, 'new weights: 1 - 2 * standardised caption_quality');
  }
});

const BUILTIN = join(__dirname, '..', '..', '..', 'models', 'builtin');

test('a bundle version published on the control topic is swapped in between batches', { skip: skip || (existsSync(join(BUILTIN, 'bundle.json')) ? false : 'skipped: models/builtin absent') }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'control-bundle-it-'));
  const run = `${process.pid}-${Date.now()}`;
  const topic = `it.bundle.${run}`;
  const controlTopic = `it.bundle-control.${run}`;
  const service = ['--brokers', BROKERS, '--registry', REGISTRY];
  const v1 = JSON.parse(readFileSync(join(BUILTIN, 'bundle.json'), 'utf8')).version as string;
  // the same model under a new version: what a trainer publishes after exporting a checkpoint
  const v2 = `${v1}-hot-${run}`;
  const dir2 = join(work, 'bundle-v2');
  cpSync(BUILTIN, dir2, { recursive: true });
  const spec = JSON.parse(readFileSync(join(dir2, 'bundle.json'), 'utf8'));
  writeFileSync(join(dir2, 'bundle.json'), JSON.stringify({ ...spec, version: v2 }));
  await writeGenJsonl(join(work, 'a.jsonl'), { n: 160, seed: 33, badRate: 0 });
  await writeGenJsonl(join(work, 'b.jsonl'), { n: 160, seed: 34, badRate: 0 });
  await createTopic(topic, 2);
  const produce = async (file: string) => {
    const r = await squeeze(['produce', ...service, '--topic', topic, '--input', join(work, file), '--progress', 'off']);
    assert.equal(r.code, 0, r.stderr);
  };
  await produce('a.jsonl');
  const out = join(work, 'out');
  let child: ChildProcess | null = null;
  const curating = squeeze(
    ['curate', ...service, '--topic', topic, '--group', `g-${run}`, '--control-topic', controlTopic, '--out', out,
      '--idle-ms', '500', '--shard-rows', '40', '--progress', 'off', '--no-soft-cap'],
    { onStart: (p) => (child = p) },
  );
  const phase1 = await highWatermarks(topic);
  await committedUpTo(out, topic, phase1, 240_000);
  const pub = await squeeze(['control', ...service, '--control-topic', controlTopic, '--model-version', v2, '--bundle', dir2]);
  assert.equal(pub.code, 0, pub.stderr);
  await new Promise((r) => setTimeout(r, 4000));
  await produce('b.jsonl');
  const phase2 = await highWatermarks(topic);
  await committedUpTo(out, topic, phase2, 240_000);
  (child as ChildProcess | null)?.kill('SIGTERM');
  const done = await curating;
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, new RegExp(`model bundle ${v2} from the control topic`));

  const rows = await duckQuery(
    `SELECT source_partition AS p, source_offset AS o, model_version, len(kept_patches) AS kept FROM read_parquet(${sqlQuote(join(out, 'topic=*', 'partition=*', '*.parquet'))})`,
  );
  const before = rows.filter((r) => Number(r.o) < (phase1.get(Number(r.p)) ?? 0));
  const after = rows.filter((r) => Number(r.o) >= (phase1.get(Number(r.p)) ?? 0));
  assert.ok(before.length > 40 && after.length > 40, `${before.length} rows before, ${after.length} after`);
  for (const r of before) assert.equal(r.model_version, v1);
  for (const r of after) assert.equal(r.model_version, v2);
  for (const r of rows) assert.equal(Number(r.kept), 32, 'both versions condensed the rows');
  // commit records name the model of their range too
  const commits = (await Promise.all([...phase2.keys()].map((p) => readCommits(out, topic, p)))).flat();
  assert.ok(commits.some((c) => c.model_version === v1) && commits.some((c) => c.model_version === v2));
});
