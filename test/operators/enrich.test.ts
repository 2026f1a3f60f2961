import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, of, toArray } from 'rxjs';
import { addClasses, classesToAdd, enrich } from '../../src/operators/enrich';
import type { Batch, Sample } from '../../src/operators/sample';
import type { Tag } from '../../src/records';
import { article, englishList, mentions, nounPhrase } from '../../src/text/english';
import type { CaptionRewriter } from '../../src/text/llm-client';
import { batchOf, keptSample } from '../helpers/samples';

const run = async (op: ReturnType<typeof enrich>, batches: Batch[]) => firstValueFrom(of(...batches).pipe(op, toArray()));
const tags = (...xs: [string, number][]): Tag[] => xs.map(([label, score]) => ({ label, score }));

function sample(offset: number, caption: string, t: Tag[] | null): Sample {
  const s = keptSample(offset);
  s.event!.caption = caption;
  s.caption = caption;
  s.tags = t;
  return s;
}

test('grammar: articles, noun phrases and lists', () => {
  assert.equal(article('apple'), 'an');
  assert.equal(article('ring'), 'a');
  assert.equal(article('umbrella'), 'an');
  assert.equal(article('unicorn'), 'a');
  assert.equal(article('hour glass'), 'an');
  assert.equal(article('European flag'), 'a');
  assert.equal(article('one-way sign'), 'a');
  assert.equal(nounPhrase('tv'), 'a TV');
  assert.equal(nounPhrase('suv'), 'an SUV');
  assert.equal(nounPhrase('traffic_light'), 'a traffic light');
  assert.equal(nounPhrase('scissors'), 'scissors');
  assert.equal(nounPhrase('broccoli'), 'broccoli');
  assert.equal(englishList(['a']), 'a');
  assert.equal(englishList(['a', 'b']), 'a and b');
  assert.equal(englishList(['a', 'b', 'c']), 'a, b and c');
});

test('rule-based enrichment reads as plain English', () => {
  assert.equal(addClasses('A red star on a striped background.', ['ring']), 'A red star on a striped background, with a ring.');
  assert.equal(addClasses('', ['star', 'ring']), 'A star and a ring.');
  assert.equal(addClasses('', ['apple', 'star', 'umbrella']), 'An apple, a star and an umbrella.');
  assert.equal(addClasses('A red star', ['arrow', 'moon']), 'A red star, with an arrow and a moon.');
  assert.equal(addClasses('Sunset at the beach!', ['person']), 'Sunset at the beach, with a person.');
  assert.equal(addClasses('A dog with a ball', ['person']), 'A dog with a ball, along with a person.');
  assert.equal(addClasses('Is this a star?', ['ring']), 'Is this a star? With a ring.');
  assert.equal(addClasses('A red star.', []), 'A red star.');
});

test('classes already mentioned (plural, synonyms, multi-word) are not added', () => {
  assert.ok(mentions('Two red stars on a plain background', 'star'));
  assert.ok(mentions('A box of matches', 'box'));
  assert.ok(mentions('boxes on a shelf', 'box'));
  assert.ok(mentions('Three puppies', 'dog'));
  assert.ok(mentions('A man riding a bike', 'person'));
  assert.ok(mentions('A man riding a bike', 'bicycle'));
  assert.ok(mentions('Traffic lights at night', 'traffic light'));
  assert.ok(mentions('Two women and their children', 'person'));
  assert.ok(!mentions('A starfish', 'star'));
  assert.ok(!mentions('A red star', 'ring'));
  assert.deepEqual(classesToAdd('Two stars on a plain background', tags(['star', 0.9], ['ring', 0.8], ['moon', 0.2]), 0.5), ['ring']);
  assert.deepEqual(classesToAdd('', tags(['a', 0.9], ['b', 0.8], ['c', 0.7], ['d', 0.6]), 0.5, 2), ['a', 'b'], 'maxAdded');
  assert.deepEqual(classesToAdd('', tags(['ring', 0.6], ['star', 0.9]), 0.5), ['star', 'ring'], 'best first');
  assert.deepEqual(classesToAdd('', tags(['person', 0.9], ['man', 0.8]), 0.5), ['person'], 'no synonym twice');
  assert.deepEqual(classesToAdd('x', null, 0.5), []);
});

test('enrich cleans the caption, adds confident classes, keeps the raw caption and records what it did', async () => {
  const samples = [
    sample(0, 'A red star on a striped background.', tags(['star', 0.95], ['ring', 0.7], ['moon', 0.1])),
    sample(1, 'IMG_1234.JPG', tags(['star', 0.9], ['ring', 0.8])),
    sample(2, '&lt;b&gt;two red stars&lt;/b&gt;&nbsp;&nbsp;click to enlarge', tags(['star', 0.9])),
    sample(3, 'untitled', null),
    sample(4, 'A ring', tags(['arrow', 0.5])),
  ];
  const [out] = await run(enrich({ threshold: 0.5 }), [batchOf(samples)]);
  const [a, b, c, d, e] = out.samples;
  assert.equal(a.caption, 'A red star on a striped background, with a ring.');
  assert.equal(a.event!.caption, 'A red star on a striped background.');
  assert.deepEqual(a.flags, ['enriched:+ring']);
  assert.equal(b.caption, 'A star and a ring.');
  assert.equal(b.event!.caption, 'IMG_1234.JPG');
  assert.deepEqual(b.flags, ['caption_fix:file_name', 'enriched:+star', 'enriched:+ring']);
  assert.equal(c.caption, 'Two red stars');
  assert.ok(c.flags.includes('caption_fix:html_entities') && c.flags.includes('caption_fix:boilerplate'));
  assert.equal(d.caption, '');
  assert.ok(d.flags.includes('caption_empty'));
  assert.equal(e.caption, 'A ring, with an arrow.');
  for (const s of out.samples) assert.equal(s.outcome.kind, 'keep');
});

test('samples already dropped are left alone', async () => {
  const s = sample(0, 'IMG_1.jpg', tags(['star', 0.9]));
  s.outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  const [out] = await run(enrich({ threshold: 0.5 }), [batchOf([s])]);
  assert.equal(out.samples[0].caption, 'IMG_1.jpg');
  assert.deepEqual(out.samples[0].flags, []);
});

test('an LLM rewrites captions that gain classes; no answer falls back to the rule-based caption', async () => {
  const asked: [string, readonly string[]][] = [];
  const llm: CaptionRewriter = {
    async rewrite(caption, classes) {
      asked.push([caption, classes]);
      return caption.startsWith('A red') ? 'A red star and a ring on a striped background.' : null;
    },
  };
  const samples = [
    sample(0, 'A red star on a striped background', tags(['ring', 0.9])),
    sample(1, 'A blue moon', tags(['star', 0.9])),
    sample(2, 'A ring', tags(['ring', 0.9])), // nothing to add: no LLM call
    sample(3, 'image', tags(['star', 0.9])), // nothing left to rewrite: rule-based
  ];
  const [out] = await run(enrich({ threshold: 0.5, llm }), [batchOf(samples)]);
  assert.deepEqual(asked, [
    ['A red star on a striped background', ['ring']],
    ['A blue moon', ['star']],
  ]);
  assert.equal(out.samples[0].caption, 'A red star and a ring on a striped background.');
  assert.ok(out.samples[0].flags.includes('enriched:llm'));
  assert.equal(out.samples[1].caption, 'A blue moon, with a star.');
  assert.ok(out.samples[1].flags.includes('enriched:llm_fallback'));
  assert.equal(out.samples[2].caption, 'A ring');
  assert.equal(out.samples[3].caption, 'A star.');
});
