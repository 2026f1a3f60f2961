import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { BUILTIN_BUNDLE } from '../../src/curate/models';
import { loadBundle } from '../../src/models/bundle';
import { bundleEncoders, tsEncoders } from '../../src/builders/shapes/quality';
import { loadSamples } from '../../src/train/clip/train';
import { loadTrainable } from '../../src/train/builtin-model';
import { writeCheckpoint } from '../../src/train/checkpoint';
import { advance, pollCommitted } from '../../src/train/follow';
import { runTrainer, type StepInfo, TRAINER_DEFAULTS, type TrainerOptions } from '../../src/train/trainer';
import { squeeze } from '../helpers/cli';
import { closedPort } from '../helpers/ports';
import { writeTrainShards } from '../helpers/train-shards';

const work = mkdtempSync(join(tmpdir(), 'trainer-'));
const shards = join(work, 'shards');
let written: Awaited<ReturnType<typeof writeTrainShards>>;

before(async () => {
  // copies 0..3: a soft-cap outcome; two partitions so the sequence interleaves them
  written = await writeTrainShards({ out: shards, events: 900, seed: 31, rowsPerShard: 40, partitions: 2, copies: (i) => [1, 3, 0, 2, 1][i % 5]! });
});

const opts = (over: Partial<TrainerOptions>): TrainerOptions => ({
  ...TRAINER_DEFAULTS,
  from: shards,
  checkpoints: mkdtempSync(join(work, 'ck-')),
  bundle: BUILTIN_BUNDLE,
  publishDir: join(work, 'bundles'),
  evalEvery: 0,
  ...over,
});

test('the committed sequence: commit records in (created_at, topic, partition, start) order; temporaries and orphans are never listed', async () => {
  writeFileSync(join(shards, 'topic=crawl', 'partition=0', '.tmp-00000000000000000999-x.parquet'), 'half a shard');
  // named as a commit attempt names its shard (`<start>-<end>.<attempt>.parquet`), but no record names it
  writeFileSync(join(shards, 'topic=crawl', 'partition=0', '00000000000000000999-00000000000000001000.zombie.parquet'), 'an orphan');
  const all = await pollCommitted(shards, {});
  assert.ok(all.length >= 4);
  assert.ok(all.every((s) => s.path && existsSync(s.path) && !s.path.includes('.tmp-') && !s.path.includes('999-')));
  // what is listed is each record's own attempt: `<start>-<end>.<attempt>.parquet`, the range of the record
  for (const { path, record } of all) {
    const range = [record.start_offset, record.end_offset].map((o) => String(o).padStart(20, '0')).join('-');
    assert.match(path!, new RegExp(`[/\\\\]${range}\\.[0-9a-z]+\\.parquet$`));
  }
  const keys = all.map((s) => [s.record.partition, s.record.start_offset]);
  assert.deepEqual(keys, [...keys].sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!), 'same created_at: by partition, then offset');
  // a cursor past the first two shards lists exactly the rest
  const cursor = {};
  advance(cursor, all[0]!.record);
  advance(cursor, all[1]!.record);
  const rest = await pollCommitted(shards, cursor);
  assert.deepEqual(rest.map((s) => s.path), all.slice(2).map((s) => s.path));
});

test('the read-back parameters compute what the shipped ONNX towers compute', async () => {
  const t = await loadTrainable(BUILTIN_BUNDLE);
  const onnx = await bundleEncoders(BUILTIN_BUNDLE);
  const ts = tsEncoders(t.params, t.vocab);
  const samples = await loadSamples({ n: 12, seed: 5 });
  const n = samples.length;
  const px = new Float32Array(n * samples[0]!.pixels.length);
  samples.forEach((s, i) => px.set(s.pixels, i * s.pixels.length));
  const a = (await onnx.encodeImages(px, n)).embeds;
  const b = (await ts.encodeImages(px, n)).embeds;
  const texts = ['a photo of a red star', 'illustration of a blue ring and a green moon'];
  const ta = await onnx.encodeTexts(texts);
  const tb = await ts.encodeTexts(texts);
  const maxDiff = (x: Float32Array, y: Float32Array) => x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
  assert.ok(maxDiff(a, b) < 1e-4, `image embeddings differ by ${maxDiff(a, b)}`);
  assert.ok(maxDiff(ta, tb) < 1e-4, `text embeddings differ by ${maxDiff(ta, tb)}`);
  await onnx.close?.();
});

test('copies never share a batch, each copy is trained on once, and only the kept patches go through the tower (but for the unmasked steps)', async () => {
  const steps: StepInfo[] = [];
  const r = await runTrainer(opts({ replayShare: 0, fullEvery: 5, onStep: (s) => steps.push(s) }));
  assert.equal(r.stopped, 'end');
  const copies = new Map(written.ids.map((id, i) => [id, written.copies[i]!]));
  const seen = new Map<string, number>();
  for (const s of steps) {
    assert.equal(new Set(s.ids).size, s.ids.length, `step ${s.step}: a sample twice in one batch`);
    assert.equal(s.tokens, (s.step % 5 === 0 ? 64 : 32) * s.ids.length, 'FLIP: 32 kept patches of 64 per image, every patch each 5th step');
    for (const id of s.ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  for (const [id, k] of seen) assert.ok(k <= copies.get(id)!, `${id}: ${k} times for ${copies.get(id)} copies`);
  assert.ok(![...seen.keys()].some((id) => copies.get(id) === 0), 'a row with 0 copies was trained on');
  const total = written.copies.reduce((a, b) => a + b, 0);
  const used = [...seen.values()].reduce((a, b) => a + b, 0);
  // everything but what is left when fewer distinct samples than a batch remain
  assert.ok(used > total - 3 * 32 && used <= total, `trained on ${used} of ${total} copies`);
  assert.ok(steps.some((s) => s.ids.some((id) => copies.get(id)! >= 3)));
});

test('the replay buffer mixes older samples into later batches', async () => {
  const steps: StepInfo[] = [];
  await runTrainer(opts({ replayShare: 0.25, until: 12, onStep: (s) => steps.push(s) }));
  assert.equal(steps[0]!.replayed, 0, 'nothing to replay at the start');
  assert.ok(steps.slice(4).every((s) => s.replayed === 8), `replayed: ${steps.map((s) => s.replayed).join(',')}`);
});

test('a published bundle loads in the curator and carries the trained weights', async () => {
  const published: { version: string; dir: string }[] = [];
  const r = await runTrainer(opts({ until: 6, publishEvery: 3, lr: 0.01, onPublish: (p) => void published.push(p) }));
  assert.equal(published.length, 2);
  assert.match(published[1]!.version, /^builtin-clip-1-t6-[0-9a-f]{8}$/);
  const b = await loadBundle(published[1]!.dir, { threads: 1 });
  assert.equal(b.version, published[1]!.version);
  await b.close();
  const onnx = await bundleEncoders(published[1]!.dir);
  const ts = tsEncoders(r.params, (await loadTrainable(BUILTIN_BUNDLE)).vocab);
  const shipped = await bundleEncoders(BUILTIN_BUNDLE);
  const texts = ['a photo of a red star'];
  const [x, y, z] = [await onnx.encodeTexts(texts), await ts.encodeTexts(texts), await shipped.encodeTexts(texts)];
  assert.ok(x.every((v, i) => Math.abs(v - y[i]!) < 1e-4), 'published ONNX = trained parameters');
  assert.ok(x.some((v, i) => Math.abs(v - z[i]!) > 1e-3), 'and differs from the bundle it started from');
  assert.deepEqual(readdirSync(join(work, 'bundles')).filter((n) => n.startsWith('.tmp-')), []);
});

test('bad input: a corrupt shard is skipped with its reason, a checkpoint of another model is refused', async () => {
  const bad = join(work, 'bad');
  await writeTrainShards({ out: bad, events: 200, seed: 32, rowsPerShard: 30 });
  const first = (await pollCommitted(bad, {}))[0]!;
  writeFileSync(first.path!, Buffer.from('PAR1 this is not parquet PAR1'));
  const lines: string[] = [];
  const ck = mkdtempSync(join(work, 'ck-bad-'));
  const r = await runTrainer(opts({ from: bad, checkpoints: ck, log: (l) => lines.push(l) }));
  assert.ok(r.steps > 0, 'trained on the rest');
  assert.ok(lines.some((l) => l.includes(first.record.shard!) && l.includes('unreadable shard')), lines.join('\n'));
  assert.equal(r.state.skipped.length, 1);
  // a checkpoint of another model (its parameter count is not the bundle's)
  const foreign = mkdtempSync(join(work, 'ck-foreign-'));
  await writeCheckpoint(foreign, 5, { ...ckptState(ck), paramCount: 12 }, { params: new Float32Array(12), adamM: new Float64Array(12), adamV: new Float64Array(12) });
  await assert.rejects(runTrainer(opts({ from: bad, checkpoints: foreign })), /holds 12 parameters/);
  // a damaged newest checkpoint: passed over with a reason, training resumes from the one before
  const names = readdirSync(ck).filter((n) => n.endsWith('.ckpt')).sort();
  const newest = join(ck, names[names.length - 1]!);
  writeFileSync(newest, readFileSync(newest).subarray(0, 200));
  const skipped: string[] = [];
  const again = await runTrainer(opts({ from: bad, checkpoints: ck, log: (l) => skipped.push(l) }));
  assert.ok(skipped.some((l) => l.startsWith(`skipping checkpoint ${newest}`)), skipped.join('\n'));
  assert.ok(again.step >= 1);
  const cli = await squeeze(['train', '--shards', bad, '--checkpoints', foreign, '--eval-every', '0']);
  assert.equal(cli.code, 2, 'a user error');
  assert.equal(cli.stderr.trim().split('\n').length, 1, cli.stderr);
  const other = await squeeze(['train', '--shards', bad, '--checkpoints', mkdtempSync(join(work, 'ck-photo-')), '--base', 'photo']);
  assert.equal(other.code, 2);
  assert.match(other.stderr, /not a built-in CLIP/);
});

function ckptState(dir: string): Record<string, unknown> {
  const f = readdirSync(dir).filter((n) => n.endsWith('.ckpt')).sort().pop()!;
  const buf = readFileSync(join(dir, f));
  const at = buf.indexOf('\n') + 1;
  return (JSON.parse(buf.subarray(at + 4, at + 4 + buf.readUInt32LE(at)).toString()) as { state: Record<string, unknown> }).state;
}

test('online FLYT feedback: a planted feature that marks useless samples gets a negative weight within 30 steps', async () => {
  const planted = join(work, 'planted');
  // half of the rows carry another image's caption, and only they have scores.planted = 1; `noise` is unrelated
  await writeTrainShards({ out: planted, events: 1600, seed: 34, rowsPerShard: 50, planted: (i) => i % 2 === 0, scores: (i) => ({ noise: ((i * 2654435761) % 1000) / 1000 }) });
  const fits: { step: number; weights: Record<string, number>; correlation: Record<string, number> }[] = [];
  await runTrainer(opts({ from: planted, until: 30, feedbackEvery: 5, heldOut: 64, mixWeights: { clip_score: 1 }, onMixWeights: (w) => void fits.push(w) }));
  assert.ok(fits.length >= 3, `${fits.length} fits`);
  const last = fits[fits.length - 1]!;
  assert.ok(last.correlation.planted! < -0.1, `correlation of planted with helpfulness: ${last.correlation.planted}`);
  assert.ok(last.weights.planted! < 0, `planted weight ${last.weights.planted}`);
  assert.ok(last.weights.planted! < last.weights.noise!, JSON.stringify(last.weights));
});

test('squeeze train --follow serves its step, loss, recall and zero-shot on the Prometheus endpoint and stops on SIGTERM', async () => {
  const port = await closedPort();
  let metricsText = '';
  const r = await squeeze(
    ['train', '--shards', shards, '--checkpoints', mkdtempSync(join(work, 'ck-prom-')), '--follow', '--poll-ms', '200', '--eval-every', '2', '--held-out', '32', '--prometheus-port', String(port), '--progress', 'json'],
    {
      onStart: (p) => {
        let out = '';
        let asked = false;
        p.stdout!.on('data', async (d) => {
          out += d;
          if (asked || !out.split('\n').some((l) => l.includes('"event":"eval"') && !l.includes('"step":0'))) return;
          asked = true;
          metricsText = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          p.kill('SIGTERM');
        });
      },
    },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /"event":"done".*"stopped":"signal"/);
  assert.match(metricsText, /squeeze_trainer_recall\{direction="i2t",k="5"[^}]*\} (0\.\d+|1)\n/);
  assert.match(metricsText, /squeeze_trainer_zero_shot\{[^}]*\} \d/);
  const step = Number(/squeeze_trainer_step\{[^}]*\} (\d+)/.exec(metricsText)?.[1]);
  assert.ok(step >= 2, metricsText.slice(0, 500));
});
