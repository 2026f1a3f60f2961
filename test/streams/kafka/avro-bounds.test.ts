import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AvroBoundsError, type AvroTypeLike, checkAvroBounds } from '../../../src/streams/kafka/avro-bounds';
import { readSchema } from '../../../src/streams/kafka/registry-codec';
import { crawlEventBody, MAP_BOMBS, zigzag } from '../../helpers/avro-bombs';

// avsc is what the registry client's Avro deserializer builds the writer's type with
const avsc = require('avsc') as { Type: { forSchema(s: unknown): AvroTypeLike & { toBuffer(v: unknown): Buffer } } };
const crawlType = avsc.Type.forSchema(JSON.parse(readSchema('crawl-event')));

test('a valid crawl event passes, with its attrs and image bytes', () => {
  const bytes = crawlType.toBuffer({
    id: 'a', url: 'https://p.example', image_url: null, image: Buffer.alloc(5000, 7),
    caption: 'a dog', crawl_time: 1_700_000_000_000, source: null, attrs: { lang: 'en', k: 'v' },
  });
  checkAvroBounds(crawlType, bytes, 0);
});

test('map block counts the bytes cannot hold are refused, positive or negative, at once', () => {
  for (const [name, attrs] of Object.entries(MAP_BOMBS)) {
    const t0 = performance.now();
    assert.throws(() => checkAvroBounds(crawlType, crawlEventBody('bomb', attrs), 0), (e: Error) => e instanceof AvroBoundsError && /map block/.test(e.message), name);
    assert.ok(performance.now() - t0 < 1000, `${name} took ${performance.now() - t0} ms`);
  }
});

test('array bombs: items with a size are bounded by bytes, items without one by a count', () => {
  const strings = avsc.Type.forSchema({ type: 'array', items: 'string' });
  assert.throws(() => checkAvroBounds(strings, zigzag(2n ** 50n), 0), /array block claims/);
  assert.throws(() => checkAvroBounds(strings, Buffer.concat([zigzag(-(2n ** 40n)), zigzag(1n), Buffer.from('x')]), 0), /array block claims/);
  const nulls = avsc.Type.forSchema({ type: 'array', items: 'null' });
  assert.throws(() => checkAvroBounds(nulls, Buffer.concat([zigzag(2n ** 50n), zigzag(0n)]), 0), /empty items/);
  checkAvroBounds(nulls, Buffer.concat([zigzag(1000n), zigzag(0n)]), 0);
  // a block size that says more bytes than remain
  assert.throws(() => checkAvroBounds(strings, Buffer.concat([zigzag(-1n), zigzag(1000n), zigzag(0n)]), 0), /block of 1000 bytes/);
});

test('lengths past the end, bad union indexes, overlong varints and deep nesting are refused', () => {
  // the id's length says 100 bytes, 3 follow
  assert.throws(() => checkAvroBounds(crawlType, Buffer.concat([zigzag(100n), Buffer.from('abc')]), 0), /needs 100 bytes/);
  assert.throws(() => checkAvroBounds(crawlType, Buffer.concat([zigzag(1n), Buffer.from('a'), zigzag(7n)]), 0), /union index 7/);
  assert.throws(() => checkAvroBounds(crawlType, Buffer.alloc(12, 0xff), 0), /longer than 10 bytes/);
  assert.throws(() => checkAvroBounds(crawlType, Buffer.alloc(0), 0), /runs past the end/);
  const list = avsc.Type.forSchema({ type: 'record', name: 'Node', fields: [{ name: 'next', type: ['null', 'Node'] }] });
  const deep = Buffer.concat([Buffer.alloc(1000, zigzag(1n)[0]), zigzag(0n)]);
  assert.throws(() => checkAvroBounds(list, deep, 0), /nested deeper than 64/);
  checkAvroBounds(list, Buffer.concat([Buffer.alloc(10, zigzag(1n)[0]), zigzag(0n)]), 0);
});
