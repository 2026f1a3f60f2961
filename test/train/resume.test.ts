import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { Rng } from '../../src/gen/rng';
import { squeeze } from '../helpers/cli';
import { writeTrainShards } from '../helpers/train-shards';

const work = mkdtempSync(join(tmpdir(), 'trainer-resume-'));
const shards = join(work, 'shards');

before(async () => {
  await writeTrainShards({ out: shards, events: 700, seed: 33, rowsPerShard: 40, partitions: 2, copies: (i) => [1, 2, 0, 3][i % 4]!, scores: (i) => ({ caption_quality: (i % 7) / 7 }) });
});

const args = (ck: string) => ['train', '--shards', shards, '--checkpoints', ck, '--until', '14', '--checkpoint-every', '3', '--eval-every', '6', '--held-out', '32', '--feedback-every', '4', '--progress', 'off'];

const newest = (dir: string) => join(dir, readdirSync(dir).filter((n) => n.endsWith('.ckpt')).sort().pop()!);

test('SIGKILL at random moments and restart: the same checkpoint bytes (weights, Adam, cursor, replay, feedback) as an uninterrupted run', async () => {
  const clean = mkdtempSync(join(work, 'clean-'));
  const r = await squeeze(args(clean));
  assert.equal(r.code, 0, r.stderr);
  const killed = mkdtempSync(join(work, 'killed-'));
  const rng = new Rng(4242);
  let kills = 0;
  for (let attempt = 0; attempt < 15; attempt++) {
    const delay = kills < 3 ? rng.int(400, 2600) : 60_000;
    const run = await squeeze(args(killed), { onStart: (p) => setTimeout(() => p.kill('SIGKILL'), delay) });
    if (run.signal === 'SIGKILL') {
      kills++;
      continue;
    }
    assert.equal(run.code, 0, run.stderr);
    break;
  }
  assert.ok(kills >= 3, `killed ${kills} times`);
  assert.match(newest(killed), /step-0000000014\.ckpt$/);
  assert.deepEqual(readFileSync(newest(killed)), readFileSync(newest(clean)), 'byte-identical checkpoint at step 14');
  assert.deepEqual(readdirSync(killed).filter((n) => n.startsWith('.tmp-')).length <= 1, true);
});
