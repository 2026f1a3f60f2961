import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of } from 'rxjs';
import { decodeEvent } from '../../src/operators/decode-event';
import { newSample, type Sample } from '../../src/operators/sample';
import { validateEvent } from '../../src/operators/validate-event';
import type { CrawlEvent } from '../../src/records';
import { batchOf, event } from '../helpers/samples';

async function validate(ev: CrawlEvent, maxCaptionChars = 50): Promise<Sample> {
  const s = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('x'));
  s.event = ev;
  s.caption = ev.caption;
  return (await firstValueFrom(of(batchOf([s])).pipe(validateEvent({ maxCaptionChars })))).samples[0];
}
const reason = (s: Sample) => (s.outcome.kind === 'dead' ? s.outcome.reason : s.outcome.kind);
const img = Buffer.from([1, 2, 3]);

test('ids: empty, too long, control characters are id_invalid', async () => {
  assert.equal(reason(await validate(event('', { image: img }))), 'id_invalid');
  assert.equal(reason(await validate(event('x'.repeat(257), { image: img }))), 'id_invalid');
  assert.equal(reason(await validate(event('a\u0000b', { image: img }))), 'id_invalid');
  assert.equal(reason(await validate(event('x'.repeat(256), { image: img }))), 'keep');
});

test('an event needs image bytes or an image_url', async () => {
  assert.equal(reason(await validate(event('a'))), 'missing_image');
  assert.equal(reason(await validate(event('a', { image: Buffer.alloc(0) }))), 'missing_image');
  assert.equal(reason(await validate(event('a', { image_url: 'https://x.example/a.jpg' }))), 'keep');
});

test('long captions are truncated and flagged, not rejected; controls and bidi overrides removed', async () => {
  const s = await validate(event('a', { image: img, caption: 'y'.repeat(80) }));
  assert.equal(s.outcome.kind, 'keep');
  assert.equal(s.caption.length, 50);
  assert.ok(s.flags.includes('caption_truncated'));
  const h = await validate(event('b', { image: img, caption: 'evil\u202Etxt.exe\u0007 <script>' }));
  assert.equal(h.caption, 'evil txt.exe  <script>');
  assert.ok(h.flags.includes('caption_control_chars'));
  assert.equal(h.event!.caption, 'evil\u202Etxt.exe\u0007 <script>', 'the raw caption is kept');
});

test('a caption with a lone surrogate is caption_invalid', async () => {
  assert.equal(reason(await validate(event('a', { image: img, caption: 'bad \ud800 text' }))), 'caption_invalid');
});

test('decodeEvent: edge rejections and undecodable bytes become dead letters, good bytes decode', async () => {
  const good = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('good'));
  const empty = newSample({ topic: 't', partition: 0, offset: 1 }, Buffer.alloc(0));
  const rejected = newSample({ topic: 't', partition: 0, offset: 2 }, Buffer.from('{'), { reason: 'schema_error', message: 'not JSON' });
  const broken = newSample({ topic: 't', partition: 0, offset: 3 }, Buffer.from('zzz'));
  const decode = async (b: Buffer) => {
    if (b.toString() !== 'good') throw new Error('bad bytes');
    return event('ok', { caption: 'hi' });
  };
  const out = await firstValueFrom(of(batchOf([good, empty, rejected, broken])).pipe(decodeEvent({ decode })));
  assert.deepEqual(out.samples.map(reason), ['keep', 'schema_error', 'schema_error', 'schema_error']);
  assert.equal(out.samples[0].caption, 'hi');
  const r = out.samples[2].outcome;
  assert.ok(r.kind === 'dead' && r.message === 'not JSON');
});

test('caption_raw and attrs are bounded: cut to the limits and flagged, never stored whole', async () => {
  const attrs: Record<string, string> = {};
  for (let i = 0; i < 200_000; i++) attrs[`k${i}`] = 'v';
  attrs.k1 = 'x'.repeat(5000);
  const s = newSample({ topic: 't', partition: 0, offset: 0 }, Buffer.from('x'));
  s.event = event('a', { image: img, caption: 'c'.repeat(5_000_000), attrs });
  const out = (await firstValueFrom(of(batchOf([s])).pipe(validateEvent({ maxCaptionChars: 2000, maxRawCaptionChars: 10_000, maxAttrs: 64, maxAttrChars: 1024 })))).samples[0];
  assert.equal(out.outcome.kind, 'keep');
  assert.equal(out.event!.caption.length, 10_000);
  assert.equal(out.caption.length, 2000);
  assert.equal(Object.keys(out.event!.attrs).length, 64);
  assert.equal(out.event!.attrs.k0, 'v');
  assert.equal(out.event!.attrs.k1.length, 1024);
  assert.deepEqual(out.flags.filter((f) => f.endsWith('truncated')).sort(), ['attrs_truncated', 'caption_raw_truncated', 'caption_truncated']);
  // within the limits nothing changes and nothing is flagged
  const small = await validate(event('b', { image: img, attrs: { lang: 'en' } }));
  assert.deepEqual(small.event!.attrs, { lang: 'en' });
  assert.deepEqual(small.flags, []);
});
