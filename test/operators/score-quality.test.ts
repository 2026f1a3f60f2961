import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of } from 'rxjs';
import { captionQuality, imageQuality, scoreQuality } from '../../src/operators/score-quality';
import { batchOf, keptSample } from '../helpers/samples';

test('caption quality: descriptive captions score high, junk low, empty zero', () => {
  const good = captionQuality('A red star and a blue ring on a striped background');
  assert.ok(good > 0.9, `good ${good}`);
  assert.equal(captionQuality(''), 0);
  assert.equal(captionQuality('IMG_2034.JPG'), 0);
  assert.equal(captionQuality('click to enlarge'), 0);
  const html = captionQuality('a red &amp; blue <b>star</b> star');
  assert.ok(html < good && html > 0, `html ${html}`);
  assert.ok(captionQuality('star') < captionQuality('a small red star on grey'));
});

test('image quality grows with the shortest side, clamped to 0..1', () => {
  assert.equal(imageQuality(32, 500), 0);
  assert.equal(imageQuality(2048, 1024), 1);
  assert.ok(imageQuality(160, 160) < imageQuality(640, 480));
});

test('the operator writes both scores on kept samples with images only', async () => {
  const a = keptSample(0);
  a.caption = 'a green heart';
  const dead = keptSample(1);
  dead.outcome = { kind: 'dead', reason: 'decode_error', message: 'x' };
  const out = await firstValueFrom(of(batchOf([a, dead])).pipe(scoreQuality()));
  assert.ok(out.samples[0].scores.caption_quality > 0);
  assert.ok('image_quality' in out.samples[0].scores);
  assert.deepEqual(out.samples[1].scores, {});
});
