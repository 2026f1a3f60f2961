import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLIP_BOS, CLIP_EOS, ClipTokenizer, cleanText, htmlUnescape } from '../../src/models/clip-tokenizer';
import { WordTokenizer } from '../../src/models/word-tokenizer';

const DIR = join(__dirname, '../../../../shared/models/clip_tokenizer');
const have = existsSync(join(DIR, 'tokenizer.json'));

let cached: Promise<[ClipTokenizer, ClipTokenizer]> | null = null;
const both = () =>
  (cached ??= Promise.all([ClipTokenizer.fromTokenizerJson(join(DIR, 'tokenizer.json')), ClipTokenizer.fromVocabMerges(join(DIR, 'vocab.json'), join(DIR, 'merges.txt'))]));

let told = false;
function skipped(): boolean {
  if (!have && !told) console.log('skipped: ../shared/models/clip_tokenizer absent');
  told = true;
  return !have;
}

test('CLIP BPE: the reference vector "a photo of a cat"', async () => {
  if (skipped()) return;
  const [json, files] = await both();
  for (const tok of [json, files]) {
    const { ids, mask } = tok.encode('a photo of a cat');
    assert.deepEqual(ids.slice(0, 7), [49406, 320, 1125, 539, 320, 2368, 49407]);
    assert.equal(ids.length, 77);
    assert.deepEqual(mask.slice(0, 8), [1, 1, 1, 1, 1, 1, 1, 0]);
    assert.equal(mask.reduce((s, v) => s + v, 0), 7);
  }
});

// Expected ids as the OpenAI / HF (fast) CLIP tokenizer gives them (published in several projects' tests).
const CASES: [string, number[]][] = [
  ['Hello, World!', [3306, 267, 1002, 256]],
  ['  HELLO   World  ', [3306, 1002]],
  ['What? Why! How...', [768, 286, 1182, 256, 829, 678]],
  ['!!!', [995]],
  ['Special characters: !@#$%^&*()', [1689, 6564, 281, 0, 31, 2, 3, 4, 61, 5, 9, 8475]],
  ['test@email.com', [1628, 287, 4462, 269, 2464]],
  // numbers: one token per digit
  ['123', [272, 273, 274]],
  ['hello123world', [3306, 272, 273, 274, 1002]],
  ['3.14 is pi', [274, 269, 272, 275, 533, 5357]],
  ['50% off', [276, 271, 260, 1007]],
  ['MacBook Pro 16-inch', [20617, 2630, 272, 277, 268, 6523]],
  // contractions
  ["don't won't can't", [847, 713, 1749, 713, 753, 713]],
  ["I can't believe it's not butter", [328, 753, 713, 2649, 585, 568, 783, 6952]],
  // </w> only on the last piece of a word
  ['tinfoil', [1310, 17302]],
  ['hatbox', [3447, 2063]],
  ['hat box', [3801, 2063]],
  // unicode: accents, CJK, emoji (byte-level, never unknown)
  ['café résumé naïve', [15304, 29106, 7054, 4166, 1097, 35689, 563]],
  ['你好世界', [47466, 254, 29290, 121, 19759, 244, 163, 243, 490]],
  ['😀 😃 😄', [7334, 8520, 7624]],
  ['', []],
];

test('CLIP BPE: punctuation, numbers, contractions, unicode; both loading paths give identical ids', async () => {
  if (skipped()) return;
  const [json, files] = await both();
  for (const [text, expected] of CASES) {
    assert.deepEqual(json.tokenize(text), expected, text);
    assert.deepEqual(files.tokenize(text), expected, text);
    assert.deepEqual(json.encode(text), files.encode(text));
  }
  // HTML is unescaped (twice, like CLIP's basic_clean) and whitespace collapsed before tokenizing
  assert.deepEqual(json.tokenize('Tom &amp;amp; Jerry&#39;s\n\t cat'), json.tokenize("tom & jerry's cat"));
  // the special tokens written in text are the special ids, as in both reference tokenizers
  assert.deepEqual(json.tokenize('a <|endoftext|> b'), [320, CLIP_EOS, 321]);
  assert.equal(json.padId, CLIP_EOS, 'HF pads with <|endoftext|> (tokenizer_config.json pad_token)');
});

test('CLIP BPE: a long text is truncated to 77 with EOS last; padding and mask', async () => {
  if (skipped()) return;
  const [json, files] = await both();
  const long = 'A very long sentence that goes on and on and should definitely exceed the normal context length to see how the tokenizer handles truncation when we have way too many tokens';
  const { ids, mask } = json.encode(long);
  assert.equal(mask.reduce((s, v) => s + v, 0), 35);
  assert.deepEqual(ids.slice(0, 35), [
    49406, 320, 1070, 1538, 12737, 682, 2635, 525, 537, 525, 537, 1535, 4824, 32521, 518, 5967, 13089, 10130, 531, 862, 829, 518, 32634, 23895, 22124, 16163,
    21367, 827, 649, 720, 923, 1256, 1346, 23562, 49407,
  ]);
  assert.ok(ids.slice(35).every((v) => v === CLIP_EOS));
  const huge = json.encode(Array.from({ length: 200 }, (_, i) => `word${i}`).join(' '));
  assert.equal(huge.ids.length, 77);
  assert.equal(huge.ids[0], CLIP_BOS);
  assert.equal(huge.ids[76], CLIP_EOS);
  assert.ok(huge.mask.every((m) => m === 1));
  assert.deepEqual(files.encode(long), json.encode(long));
  // a shorter context and OpenAI-style zero padding
  const short = new ClipTokenizer(new Map([...Object.entries({ a: 1 }), ['<|startoftext|>', CLIP_BOS], ['<|endoftext|>', CLIP_EOS], ['a</w>', 320]]), [], { context: 4, padId: 0 });
  assert.deepEqual(short.encode('a').ids, [CLIP_BOS, 320, CLIP_EOS, 0]);
  assert.deepEqual(short.encode('a a a a').ids, [CLIP_BOS, 320, 320, CLIP_EOS]);
});

test('text cleaning: HTML entities, whitespace, case', () => {
  assert.equal(htmlUnescape('&lt;b&gt; &amp; &#39;x&#x27; &eacute; &hellip; &#150; &bogus; AT&T &ampx'), "<b> & 'x' é … – &bogus; AT&T &x");
  assert.equal(cleanText('  Two&nbsp;\n\tLINES &amp;amp; more  '), 'two lines & more');
  assert.equal(cleanText('Cafe\u0301'), 'café'); // NFC
});

test('word tokenizer: lower-case, split on non-letters, 0 pad, 1 unknown, truncation', () => {
  const t = new WordTokenizer({ red: 2, star: 3, ring: 4 }, 5);
  assert.equal(t.context, 5);
  assert.deepEqual(t.encode('A RED star, 3 rings!'), { ids: [1, 2, 3, 1, 0], mask: [1, 1, 1, 1, 0] });
  assert.deepEqual(t.encode(''), { ids: [0, 0, 0, 0, 0], mask: [0, 0, 0, 0, 0] });
  assert.deepEqual(t.encode('red red red red red red red').ids, [2, 2, 2, 2, 2]);
  assert.deepEqual(t.encode('constructor toString').ids.slice(0, 2), [1, 1], 'no prototype keys');
  assert.deepEqual(WordTokenizer.words("Über-cool it's"), ['über', 'cool', 'it', 's']);
});
