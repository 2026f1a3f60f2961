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
import { readCommits } from '../../src/streams/shards/shard-log';
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


interface HotReloadRun {
  topic: string;
  out: string;
  /** high watermarks before the control event was published: offsets below are "before" */
  phase1: Map<number, number>;
  phase2: Map<number, number>;
  stderr: string;
}

/**
 * Curates crawl A with a running curator, publishes one control event, then curates crawl B with the
 * same curator and stops it: the flow of both tests. `n` events per crawl, 2 partitions.
 */
async function hotReload(name: string, n: number, seeds: [number, number], curateExtra: string[], control: (controlTopic: string, out: string, work: string) => string[]): Promise<HotReloadRun & { published: string }> {
  const work = mkdtempSync(join(tmpdir(), `${name}-it-`));
  const run = `${process.pid}-${Date.now()}`;
  const topic = `it.${name}.${run}`;
  const controlTopic = `it.${name}-control.${run}`;
  const service = ['--brokers', BROKERS, '--registry', REGISTRY];
  await writeGenJsonl(join(work, 'a.jsonl'), { n, seed: seeds[0], badRate: 0 });
  await writeGenJsonl(join(work, 'b.jsonl'), { n, seed: seeds[1], badRate: 0 });
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
      '--idle-ms', '500', '--shard-rows', '40', '--progress', 'off', '--no-soft-cap', ...curateExtra],
    { onStart: (p) => (child = p) },
  );
  const phase1 = await highWatermarks(topic);
  await committedUpTo(out, topic, phase1, 240_000);
  const pub = await squeeze([...control(controlTopic, out, work), ...service, '--control-topic', controlTopic]);
  assert.equal(pub.code, 0, pub.stderr);
  await new Promise((r) => setTimeout(r, 4000));
  await produce('b.jsonl');
  const phase2 = await highWatermarks(topic);
  await committedUpTo(out, topic, phase2, 240_000);
  (child as ChildProcess | null)?.kill('SIGTERM');
  const done = await curating;
  assert.equal(done.code, 0, done.stderr);
  return { topic, out, phase1, phase2, stderr: done.stderr, published: pub.stdout };
}

const rowsOf = (out: string, columns: string) =>
  duckQuery(`SELECT source_partition AS p, source_offset AS o, ${columns} FROM read_parquet(${sqlQuote(join(out, 'topic=*', 'partition=*', '*.parquet'))})`);
const splitAt = <R extends Record<string, unknown>>(rows: R[], phase1: Map<number, number>) => ({
  before: rows.filter((r) => Number(r.o) < (phase1.get(Number(r.p)) ?? 0)),
  after: rows.filter((r) => Number(r.o) >= (phase1.get(Number(r.p)) ?? 0)),
});

test('weights published on the control topic change later batches only', { skip }, async () => {
  const r = await hotReload('control', 240, [31, 32], ['--models', 'none'], () => ['control', '--weights', '{"caption_quality": -2}', '--bias', '1']);
  assert.match(r.stderr, /mixing weights mix-.* from the control topic/);
  const { before, after } = splitAt(await rowsOf(r.out, `score, scores['caption_quality'] AS cq, scores['image_quality'] AS iq, mix_version`), r.phase1);
  assert.ok(before.length > 50 && after.length > 50, `${before.length} rows before, ${after.length} after`);
  // the model-free scores (no bundle here): caption_quality and image_quality
  const d = DEFAULT_MIX_WEIGHTS;
  const z = (cq: number) => (cq - d.stats.caption_quality.mean) / d.stats.caption_quality.std;
  for (const row of before) {
    assert.equal(row.mix_version, d.version);
    const expected = mixScore({ caption_quality: Number(row.cq), image_quality: Number(row.iq) }, d);
    assert.ok(Math.abs(Number(row.score) - expected) < 1e-3, `default weights: ${row.score} vs ${expected}`);
  }
  for (const row of after) {
    assert.match(String(row.mix_version), /^mix-/);
    assert.ok(Math.abs(Number(row.score) - (1 - 2 * z(Number(row.cq)))) < 1e-3, 'new weights: 1 - 2 * standardised caption_quality');
  }
});

const BUILTIN = join(__dirname, '..', '..', '..', 'models', 'builtin');

test('a bundle version published on the control topic is swapped in between batches', { skip: skip || (existsSync(join(BUILTIN, 'bundle.json')) ? false : 'skipped: models/builtin absent') }, async () => {
  const v1 = JSON.parse(readFileSync(join(BUILTIN, 'bundle.json'), 'utf8')).version as string;
  // the same model under a new version: what a trainer publishes after exporting a checkpoint
  const v2 = `${v1}-hot-${process.pid}-${Date.now()}`;
  const dir2 = join(mkdtempSync(join(tmpdir(), 'bundle-v2-')), 'bundle');
  cpSync(BUILTIN, dir2, { recursive: true });
  const spec = JSON.parse(readFileSync(join(dir2, 'bundle.json'), 'utf8'));
  writeFileSync(join(dir2, 'bundle.json'), JSON.stringify({ ...spec, version: v2 }));
  const r = await hotReload('bundle', 160, [33, 34], ['--models', 'builtin-shapes'], () => ['control', '--model-version', v2, '--bundle', dir2]);
  assert.match(r.stderr, new RegExp(`model bundle ${v2} from the control topic`));
  const { before, after } = splitAt(await rowsOf(r.out, 'model_version, len(kept_patches) AS kept'), r.phase1);
  assert.ok(before.length > 40 && after.length > 40, `${before.length} rows before, ${after.length} after`);
  for (const row of before) assert.equal(row.model_version, v1);
  for (const row of after) assert.equal(row.model_version, v2);
  for (const row of [...before, ...after]) assert.equal(Number(row.kept), 32, 'both versions condensed the rows');
  // commit records name the model of their range too
  const commits = (await Promise.all([...r.phase2.keys()].map((p) => readCommits(r.out, r.topic, p)))).flat();
  assert.ok(commits.some((c) => c.model_version === v1) && commits.some((c) => c.model_version === v2));
});

test('squeeze train follows the curator\'s shards, publishes a bundle and mixing weights, and the curator\'s next shards carry them', { skip }, async () => {
  const r = await hotReload('train', 240, [35, 36], ['--models', 'builtin-shapes'], (_topic, out, work) => [
    'train', '--shards', out, '--checkpoints', join(work, 'trainer'), '--until', '8', '--train-batch', '16', '--replay-share', '0',
    '--publish-every', '8', '--feedback-every', '8', '--eval-every', '0', '--progress', 'json',
  ]);
  const lines = r.published.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const published = lines.find((l) => l.event === 'published');
  const weights = lines.find((l) => l.event === 'mix_weights');
  assert.ok(published && weights, r.published);
  const version = String(published.version);
  assert.match(version, /^builtin-clip-1-t8-[0-9a-f]{8}$/);
  assert.match(r.stderr, new RegExp(`model bundle ${version} from the control topic`));
  assert.match(r.stderr, /mixing weights mix-.* from the control topic/);
  const { before, after } = splitAt(await rowsOf(r.out, 'model_version, mix_version'), r.phase1);
  assert.ok(before.length > 40 && after.length > 40, `${before.length} rows before, ${after.length} after`);
  assert.ok(before.every((row) => row.model_version !== version));
  assert.ok(after.every((row) => row.model_version === version), 'every row after the publication carries the trained version');
  assert.ok(after.every((row) => String(row.mix_version).startsWith('mix-')), 'and the fitted weights');
});
