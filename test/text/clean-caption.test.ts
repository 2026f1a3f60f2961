import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { boilerplateCaption, correctCaption, filenameCaption, htmlCaption } from '../../src/gen/captions';
import { Rng } from '../../src/gen/rng';
import { OBJECT_KINDS } from '../../src/gen/shapes';
import { cleanCaption, decodeEntities, stripTags } from '../../src/text/clean-caption';

const ALT_TEXT = join(__dirname, '..', '..', '..', '..', 'shared', 'data', 'web_alt_text', 'img2dataset_test_10000.jsonl');
const clean = (s: string) => cleanCaption(s).text;
const TAG_LEFT = /<\/?[a-zA-Z][^<>]*>/;
const ENTITY_LEFT = /&(?:#\d+|#x[0-9a-f]+|[a-z][a-z0-9]{1,31});/i;

test('HTML entities: named, decimal, hex, double-escaped, Windows-1252 numbers', () => {
  assert.equal(decodeEntities('Tom &amp; Jerry &lt;3 &quot;hi&quot; &copy; caf&eacute; &hellip;'), 'Tom & Jerry <3 "hi" © café …');
  assert.equal(decodeEntities('A&#39;s &#x27;x&#x27; &#8220;q&#8221; &#146;'), "A's 'x' “q” ’");
  assert.equal(decodeEntities('R&amp;amp;B &amp;lt;b&amp;gt;'), 'R&B <b>');
  assert.equal(decodeEntities('AT&T &unknown; &amp Co'), 'AT&T &unknown; & Co');
  assert.deepEqual(cleanCaption('Fish &amp; chips').fixes, ['html_entities']);
});

test('HTML tags: removed, block tags split segments, scripts and comments dropped', () => {
  assert.equal(stripTags('<b>Game 20</b>: at <i>Denver</i>'), 'Game 20: at Denver');
  assert.equal(stripTags('Orchid Jungle<br>Hawaiian Dresses<br/>100% Rayon<br />'), 'Orchid Jungle, Hawaiian Dresses, 100% Rayon');
  assert.equal(stripTags('Done.<p>Next part</p>'), 'Done. Next part');
  assert.equal(stripTags('<!-- 0201 -->x<script>alert(1)</script> y'), 'x y');
  assert.equal(stripTags('Same<br>same<br>Other'), 'Same, Other');
  assert.equal(clean("<a href='http://x.org/a'>Yale Hospital </a>Ribbon Cutting."), 'Yale Hospital Ribbon Cutting.');
  assert.equal(clean('&lt;p&gt;a red star&lt;/p&gt;'), 'A red star');
  assert.equal(clean('CD4 < 350'), 'CD4 < 350', 'a lone < is text');
  assert.equal(clean('Shoes <a href="/x" class="y'), 'Shoes', 'a tag cut off at the end');
});

test('file-name captions: dropped when word-less, turned into words otherwise', () => {
  for (const f of ['IMG_1234.jpg', 'IMG_1234.JPG', 'DSC00123.JPG', 'DSCN0042.jpg', 'image001.png', 'P1010123.JPG', 'photo_2021-03-04_10-11-12.jpg', 'Screenshot 2021-03-04 at 10.11.12.png', 'WhatsApp Image 2021-03-04 at 10.11.12.jpeg', '20210304_101112.jpg', 'sku_00123_large.jpg', 'banner-final-v3.png', '5f3a9c1e0042.webp', 'e3b0c44298fc1c149afbf4c8996fb924', 'IMG_1234', 'DSC_0036']) {
    assert.deepEqual(cleanCaption(f), { text: '', fixes: ['file_name'] }, f);
  }
  assert.equal(clean('Old_US41_Bridge-Baraga.jpg'), 'Old US41 Bridge Baraga');
  assert.equal(clean('File:Alice Liddell with sisters.jpg'), 'Alice Liddell with sisters');
  assert.equal(clean('photo Ox Cheeks in Red Wine 4_zpszvubq49w.jpg'), 'Photo Ox Cheeks in Red Wine');
  assert.equal(clean('inside-blue-mosque-istanbul-turkey'), 'Inside blue mosque istanbul turkey');
  assert.equal(clean('A sunset over the bay IMG_2287.JPG'), 'A sunset over the bay');
  assert.equal(clean('iPhone12'), 'iPhone12', 'a model name is not a hash');
});

test('boilerplate: whole captions become empty, phrases are removed', () => {
  for (const b of ['image', 'Photo', 'untitled', 'Untitled-1', 'no description', 'No description available', 'click to enlarge', 'Click here', 'null', 'undefined', 'alt', 'thumbnail', 'placeholder', 'Loading...', 'Add to cart', 'Buy now - free shipping!', '© 2023 All rights reserved', 'Share on Facebook', 'image 3', '']) {
    assert.equal(clean(b), '', b);
  }
  assert.equal(clean('A dog on a beach (click to enlarge)'), 'A dog on a beach');
  assert.equal(clean('Women Wool Cotton Blend Berets - Free Shipping'), 'Women Wool Cotton Blend Berets');
  assert.equal(clean('Free shipping ! Fashion pendant necklace'), 'Fashion pendant necklace');
  assert.equal(clean('Image of Victorian Ottomans and Footstools'), 'Victorian Ottomans and Footstools');
  assert.equal(clean('Photo 15: Downtown condo for sale'), 'Downtown condo for sale');
  assert.equal(clean('Woman holding a clock — Stock Photo'), 'Woman holding a clock');
  assert.equal(clean('Rooster Royalty Free Stock Photos'), 'Rooster');
  assert.equal(clean('Image is loading Polo Sport Drawstring Bag'), 'Polo Sport Drawstring Bag');
  assert.equal(clean('a photo of a red star'), 'A photo of a red star', 'a grammatical "a photo of" stays');
});

test('whitespace, repeated words, punctuation', () => {
  assert.deepEqual(cleanCaption('A  red\tstar\n on a   plain background '), { text: 'A red star on a plain background', fixes: ['whitespace'] });
  assert.equal(clean('unfinished kitchen island base base wood'), 'Unfinished kitchen island base wood');
  assert.equal(clean('pool icon linear on white vector image vector image'), 'Pool icon linear on white vector image');
  assert.equal(clean('Pom Pom Scarf'), 'Pom Pom Scarf');
  assert.equal(clean('Bye bye summer'), 'Bye bye summer');
  assert.equal(clean('Wow!!! Great view,, really ??'), 'Wow! Great view, really?');
  assert.equal(clean('Travel Wallet -- Colorful World map'), 'Travel Wallet - Colorful World map');
  assert.equal(clean('Harwood Canadian Whisky 1.00l -...'), 'Harwood Canadian Whisky 1.00l');
  assert.equal(clean(': Decorative wall clocks |'), 'Decorative wall clocks');
  assert.equal(clean('Math Practice Workbook ()'), 'Math Practice Workbook');
  assert.equal(clean('“A red star on a plain background”'), 'A red star on a plain background');
  assert.equal(clean('"Keep Calm" - Blue Canvas'), '"Keep Calm" - Blue Canvas');
  assert.equal(clean('Insulated bottle .4L'), 'Insulated bottle .4L');
});

test('casing: all caps to sentence case (codes and acronyms kept), first letter capitalised', () => {
  assert.equal(clean('STAINLESS STEEL & GALVANIZED PALLET TRUCKS'), 'Stainless steel & galvanized pallet trucks');
  assert.equal(clean('THE WALKING DEAD THIRD SEASON ON DVD. NEW IN BOX'), 'The walking dead third season on DVD. New in box');
  assert.equal(clean('KAWASAKI ZX9R THROTTLE TUBE'), 'Kawasaki ZX9R throttle tube');
  assert.equal(clean('a red star'), 'A red star');
  assert.equal(clean('eBay listing of a lamp'), 'eBay listing of a lamp');
  assert.equal(clean('1:18 scale car model'), '1:18 scale car model');
  assert.equal(clean('MICHAEL Kors Wedge'), 'MICHAEL Kors Wedge', 'not all caps');
  assert.deepEqual(cleanCaption('A red star on a plain background.'), { text: 'A red star on a plain background.', fixes: [] });
});

test('synthetic crawl captions: boilerplate and file names vanish, HTML captions come back clean', () => {
  const rng = new Rng(7);
  for (let i = 0; i < 300; i++) {
    assert.equal(clean(boilerplateCaption(rng)), '', 'boilerplate');
    const f = filenameCaption(rng);
    assert.equal(clean(f), '', f);
  }
  for (let i = 0; i < 300; i++) {
    const objects = [{ kind: rng.pick(OBJECT_KINDS), colour: 'red' as const }, { kind: rng.pick(OBJECT_KINDS), colour: 'blue' as const }];
    const correct = correctCaption(rng, objects, 'plain');
    const html = htmlCaption(rng, correct, objects);
    const out = clean(html);
    assert.ok(!TAG_LEFT.test(out) && !ENTITY_LEFT.test(out) && !out.includes('\u00a0'), `${html} -> ${out}`);
    const words = (s: string) => s.toLowerCase().replace(/&/g, 'and').replace(/[^a-z ]+/g, ' ').split(/\s+/).filter(Boolean);
    assert.deepEqual(words(out), words(correct), `${html} -> ${out}`);
  }
});

test('real web alt text (../shared/data/web_alt_text): no markup or entities survive', (t) => {
  if (!existsSync(ALT_TEXT)) {
    console.log('skipped: ../shared/data/web_alt_text/img2dataset_test_10000.jsonl absent');
    t.skip('alt text data absent');
    return;
  }
  const texts = readFileSync(ALT_TEXT, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { text: string }).text ?? '');
  let changed = 0;
  let emptied = 0;
  for (const raw of texts) {
    const { text, fixes } = cleanCaption(raw);
    assert.ok(!TAG_LEFT.test(text), `tag left in ${JSON.stringify(text)}`);
    assert.ok(!ENTITY_LEFT.test(text), `entity left in ${JSON.stringify(text)}`);
    assert.ok(!/\s{2}|^\s|\s$/.test(text), `whitespace in ${JSON.stringify(text)}`);
    assert.ok(!/^(?:[-–—|:;,]|\.(?!\d))/.test(text) && !/[-–—|:;,]$/.test(text), `punctuation noise in ${JSON.stringify(text)}`);
    assert.ok(!/\.(?:jpe?g|png|gif|webp)$/i.test(text), `file name in ${JSON.stringify(text)}`);
    assert.ok(!/\b(?:click to enlarge|free shipping)\b/i.test(text), `boilerplate in ${JSON.stringify(text)}`);
    assert.ok(text.length <= raw.length * 1.2 + 3, `cleaning grew ${JSON.stringify(raw)}`);
    assert.equal(cleanCaption(text).text, text, `not idempotent: ${JSON.stringify(raw)}`);
    if (fixes.length) changed++;
    if (text === '' && raw.trim() !== '') emptied++;
  }
  // most alt text is fine as it is; cleaning must not wipe real captions
  assert.ok(changed > 0 && changed < texts.length * 0.4, `changed ${changed}`);
  assert.ok(emptied < texts.length * 0.01, `emptied ${emptied}`);
});
