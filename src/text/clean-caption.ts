/**
 * Rule-based repair of web alt text (the enrich stage). Each rule that changed the caption is named in
 * `fixes`, in the order the rules run:
 *
 * - `unicode`: NFC, zero-width and soft-hyphen characters removed.
 * - `html_entities`: named (HTML 4 set plus common typography), decimal and hex references decoded,
 *   repeatedly for double-escaped text (`&amp;amp;`); numeric references 128..159 read as Windows-1252.
 * - `html_tags`: script/style blocks and comments dropped; block tags (`br`, `p`, `div`, `li`, ...) split
 *   the caption into segments joined with ", " (repeated segments dropped); other tags removed.
 * - `url`: http(s) and www. addresses removed.
 * - `file_name`: a caption that is a file name (`IMG_1234.JPG`, `DSC00123.jpg`, `image001.png`,
 *   `WhatsApp Image 2021-03-04 at 10.11.12.jpeg`, a hex or random hash) is dropped when its name carries
 *   no words, and otherwise becomes its words (`Old_US41_Bridge.jpg` -> "Old US41 Bridge"); word-less
 *   file names inside a longer caption are removed.
 * - `boilerplate`: whole captions that say nothing ("image", "untitled", "no description available",
 *   "click here", "null", ...) become empty; phrases ("click to enlarge", "buy now", "free shipping",
 *   "add to cart", "all rights reserved", ...) are removed; a leading "Image of" / "Photo:" is dropped.
 * - `whitespace`: runs of whitespace (tabs, newlines, no-break spaces) collapsed, ends trimmed.
 * - `repeated_words`: an immediately repeated word dropped ("base base" -> "base"), except usual
 *   reduplications ("pom pom", "bye bye", "Bora Bora").
 * - `punctuation`: repeated marks (`!!!`, `,,`), spaces before punctuation, `--`, empty brackets,
 *   quotes wrapping the whole caption, and separators or ellipses at either end.
 * - `casing`: an all-caps caption becomes sentence case (model numbers with digits and common acronyms
 *   stay); the first letter is capitalised when the first word is all lower case.
 */

export interface CleanedCaption {
  text: string;
  fixes: string[];
}

// ---------------------------------------------------------------- HTML entities

const LATIN1 =
  'nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest Agrave Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute ucirc uuml yacute thorn yuml'.split(
    ' ',
  );

const NAMED: Record<string, number> = {
  amp: 38, lt: 60, gt: 62, quot: 34, apos: 39,
  OElig: 338, oelig: 339, Scaron: 352, scaron: 353, Yuml: 376, fnof: 402, circ: 710, tilde: 732,
  ensp: 8194, emsp: 8195, thinsp: 8201, zwnj: 8204, zwj: 8205, lrm: 8206, rlm: 8207,
  ndash: 8211, mdash: 8212, lsquo: 8216, rsquo: 8217, sbquo: 8218, ldquo: 8220, rdquo: 8221, bdquo: 8222,
  dagger: 8224, Dagger: 8225, bull: 8226, hellip: 8230, permil: 8240, prime: 8242, Prime: 8243,
  lsaquo: 8249, rsaquo: 8250, oline: 8254, frasl: 8260, euro: 8364, trade: 8482, larr: 8592, uarr: 8593,
  rarr: 8594, darr: 8595, harr: 8596, minus: 8722, le: 8804, ge: 8805, ne: 8800, infin: 8734, hearts: 9829,
  spades: 9824, clubs: 9827, diams: 9830, star: 9734, check: 10003, half: 189, dash: 8208, nbhy: 8209,
  alpha: 945, beta: 946, gamma: 947, delta: 948, pi: 960, mu: 956, sigma: 963, omega: 969, Omega: 937,
};
LATIN1.forEach((name, i) => (NAMED[name] = 160 + i));

/** Numeric references 128..159 as browsers read them (Windows-1252). */
const CP1252: Record<number, number> = {
  0x80: 0x20ac, 0x82: 0x201a, 0x83: 0x0192, 0x84: 0x201e, 0x85: 0x2026, 0x86: 0x2020, 0x87: 0x2021, 0x88: 0x02c6,
  0x89: 0x2030, 0x8a: 0x0160, 0x8b: 0x2039, 0x8c: 0x0152, 0x8e: 0x017d, 0x91: 0x2018, 0x92: 0x2019, 0x93: 0x201c,
  0x94: 0x201d, 0x95: 0x2022, 0x96: 0x2013, 0x97: 0x2014, 0x98: 0x02dc, 0x99: 0x2122, 0x9a: 0x0161, 0x9b: 0x203a,
  0x9c: 0x0153, 0x9e: 0x017e, 0x9f: 0x0178,
};

function codePoint(n: number): string {
  const cp = CP1252[n] ?? n;
  if (!Number.isFinite(cp) || cp <= 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return '';
  if (cp < 32 || (cp >= 0x7f && cp < 0xa0)) return ' ';
  return String.fromCodePoint(cp);
}

const ENTITY = /&(?:#(\d{1,7});?|#[xX]([0-9a-fA-F]{1,6});?|([a-zA-Z][a-zA-Z0-9]{1,31});|(amp|lt|gt|quot|nbsp)(?![a-zA-Z0-9;]))/g;

/** Decodes HTML character references once. Unknown names stay as they are. */
export function decodeEntitiesOnce(s: string): string {
  return s.replace(ENTITY, (m, dec: string | undefined, hex: string | undefined, name: string | undefined, bare: string | undefined) => {
    if (dec !== undefined) return codePoint(parseInt(dec, 10));
    if (hex !== undefined) return codePoint(parseInt(hex, 16));
    const n = NAMED[name ?? bare ?? ''] ?? NAMED[(name ?? '').toLowerCase()];
    return n === undefined ? m : String.fromCodePoint(n);
  });
}

/** Decodes until nothing changes (at most 4 rounds: double and triple escaping happen). */
export function decodeEntities(s: string): string {
  for (let i = 0; i < 4; i++) {
    const next = decodeEntitiesOnce(s);
    if (next === s) break;
    s = next;
  }
  return s;
}

// ---------------------------------------------------------------- HTML tags

const BLOCK = /<\/?(?:br|p|div|li|ul|ol|tr|td|th|table|h[1-6]|hr|section|article|header|footer|blockquote|figcaption|dt|dd)\b[^<>]*>/gi;
const TAG = /<\/?[a-zA-Z][a-zA-Z0-9:-]*(?:\s[^<>]*)?\/?>/g;

export function stripTags(s: string): string {
  const segments = s
    .replace(/<!--[\s\S]*?(?:-->|$)/g, ' ')
    .replace(/<(script|style)\b[^>]*>[\s\S]*?(?:<\/\1\s*>|$)/gi, ' ')
    .replace(BLOCK, '\n')
    .replace(TAG, '')
    // a tag cut off at the end of a truncated caption
    .replace(/<\/?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?$/, '')
    .split(/[\r\n]+/)
    .map((x) => x.replace(/\s+/g, ' ').trim())
    .filter((x) => /[\p{L}\p{N}]/u.test(x));
  const seen = new Set<string>();
  let out = '';
  for (const seg of segments) {
    const key = seg.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    out = out === '' ? seg : /[.!?:;,]$/.test(out) ? `${out} ${seg}` : `${out}, ${seg}`;
  }
  return out;
}

// ---------------------------------------------------------------- file names

const IMAGE_EXT = 'jpe?g|jfif|png|gif|webp|bmp|tiff?|heic|heif|avif|svg|ico';
const WHOLE_FILE = new RegExp(`^(?:file:\\s*)?(\\S(?:.*\\S)?)\\.(?:${IMAGE_EXT})$`, 'i');
const EMBEDDED_FILE = new RegExp(`(?<![\\w/])[\\w.-]+\\.(?:${IMAGE_EXT})(?![\\w])`, 'gi');

/** Words that carry no description inside a file name. */
const FILE_NOISE = new Set(
  (
    'img image images imgs photo photos pic pics picture pictures screenshot screen shot scan scanned whatsapp file ' +
    'copy final edit edited sku large small medium thumb thumbnail thumbs banner original orig full size resized ' +
    'scaled crop cropped at de untitled new version web hires lowres hq min dcim camera upload uploads default ' +
    'placeholder mvimg pxl vid wp frame capture snapshot dsc dscn dscf cimg imgp jpg jpeg png gif webp am pm export ' +
    'main alt pano burst portrait edit1 retouched no'
  ).split(' '),
);

/** A random id or digest: hex with digits, or long mixed letters and digits in several runs. */
function hashLike(t: string): boolean {
  const w = t.toLowerCase();
  if (/^[0-9a-f]{8,}$/.test(w) && /\d/.test(w)) return true;
  if (w.length < 8 || !/^[a-z0-9]+$/.test(w) || !/[a-z]/.test(w)) return false;
  const digits = w.match(/\d/g)?.length ?? 0;
  const runs = w.match(/[a-z]+|\d+/g) ?? [];
  // a pronounceable run of letters reads as words glued to a number ("stainedglasslamp1027a")
  const wordy = runs.some((r) => r.length >= 4 && /^[a-z]+$/.test(r) && (r.match(/[aeiouy]/g)?.length ?? 0) / r.length >= 0.25);
  return digits >= 2 && !wordy && (runs.length >= 3 || digits >= 6);
}

/** One token of a file name that says nothing: digits, camera prefixes with digits, versions, sizes, hashes. */
function noiseToken(t: string): boolean {
  const w = t.toLowerCase();
  if (w === '' || /^\d+$/.test(w) || FILE_NOISE.has(w) || hashLike(w)) return true;
  if (/^(?:img|dsc[nf]?|dcim|p|pic|pict|mvimg|vid|gopr|pxl|wp|sam|cimg|imgp|hpim|dji|mov|photo|image|scan|v|r|e|x)\d+[a-z]?$/.test(w)) return true;
  return /^\d+(?:x\d+)+$/.test(w) || /^\d+(?:px|p|k|mp)$/.test(w);
}

const fileTokens = (stem: string): string[] => stem.split(/[\s_.\-+()[\]]+/).filter(Boolean);

/** The words of a file name's stem ("Old_US41-Bridge" -> "Old US41 Bridge"), or '' when it has none. */
export function fileNameWords(stem: string): string {
  if (fileTokens(stem).every(noiseToken)) return '';
  return stem
    .split(/[\s_]+/)
    .flatMap((t) => t.split(/(?<=[\p{L}\d])-(?=[\p{L}\d])/u))
    .filter((t) => t !== '' && !hashLike(t))
    .join(' ');
}

/** "A sunset over the bay IMG_2287" -> "A sunset over the bay": a camera-style last token after words. */
function dropTrailingCameraName(stem: string): string {
  const tokens = stem.split(/\s+/);
  const last = tokens[tokens.length - 1] ?? '';
  if (tokens.length > 1 && /\p{L}/u.test(last) && /\d/.test(last) && fileTokens(last).every(noiseToken)) tokens.pop();
  return tokens.join(' ');
}

/** A URL slug or file stem as the whole caption: one token of 3+ parts joined by '-' or '_'. */
const SLUG = /^[-_]*[\p{L}\d]+(?:[-_][\p{L}\d]+){2,}[-_]*$/u;

/** A whole caption that is only an identifier: camera names without extension, digests, random ids. */
function isIdentifier(s: string): boolean {
  const t = s.trim();
  if (/^[0-9a-f]{12,}$/i.test(t)) return true;
  return /\d/.test(t) && /^[\p{L}\d\s_.:\-+()[\]]+$/u.test(t) && fileTokens(t).every(noiseToken);
}

// ---------------------------------------------------------------- boilerplate

/** Whole captions that describe nothing (compared lower case, letters and spaces only). */
const EMPTY_CAPTIONS = new Set(
  [
    'image', 'images', 'img', 'photo', 'photos', 'picture', 'pictures', 'pic', 'graphic', 'thumbnail', 'thumb',
    'placeholder', 'untitled', 'untitled image', 'untitled design', 'banner', 'logo', 'icon', 'spacer', 'blank',
    'click here', 'click', 'click to enlarge', 'zoom', 'enlarge', 'view', 'view larger', 'view larger image',
    'product image', 'product photo', 'main image', 'featured image', 'image description', 'alt', 'alt text',
    'alttext', 'no description', 'no description available', 'no image', 'no image available', 'no photo',
    'image not found', 'image unavailable', 'image coming soon', 'coming soon', 'null', 'undefined', 'none', 'na',
    'n a', 'nan', 'default', 'loading', 'sponsored', 'advertisement', 'ad', 'share on facebook', 'share on twitter',
    'share', 'pin it', 'see more', 'read more', 'more', 'add to cart', 'buy now', 'shop now', 'free shipping',
    'buy now free shipping', 'all rights reserved', 'copyright', 'home', 'back', 'next', 'previous', 'close',
    'stock photo', 'stock image', 'screenshot', 'screen shot', 'image may contain', 'avatar', 'profile picture',
    'photo by', 'photograph', 'description', 'caption', 'title', 'test',
  ],
);

/** Phrases removed wherever they occur (with separators around them). */
const PHRASES: RegExp[] = [
  /\(?\s*click\s+(?:here\s+)?(?:to|for)\s+(?:a\s+)?(?:enlarge|zoom(?:\s+in)?|view\s+larger|see\s+(?:a\s+)?larger(?:\s+(?:image|view|version|picture))?|larger(?:\s+(?:image|view|version|picture))?|full[\s-]?size(?:\s+(?:image|view))?|bigger\s+(?:image|picture))\s*\)?/gi,
  /\(?\s*click\s+(?:the\s+)?(?:image|picture|photo|thumbnail)\s+to\s+(?:enlarge|zoom)\s*\)?/gi,
  /\(?\s*(?:view|see)\s+larger(?:\s+(?:image|photo|picture|version))?\s*\)?/gi,
  /\bimage\s+is\s+loading\b/gi,
  /\bbuy\s+(?:it\s+)?now\b!?/gi,
  /\bshop\s+now\b!?/gi,
  /\b(?:add\s+to\s+(?:cart|basket|wishlist|bag))\b/gi,
  /\b(?:worldwide\s+)?free\s+(?:worldwide\s+|u\.?s\.?\s+|uk\s+|international\s+)?shipp?ing(?:\s+worldwide)?\b!?/gi,
  /(?:©|\(c\)|copyright)\s*(?:\d{4}(?:\s*[-–]\s*\d{4})?)?[^.|]*?all\s+rights\s+reserved\.?/gi,
  /\ball\s+rights\s+reserved\.?/gi,
  /\b(?:(?:premium\s+)?royalty[\s-]free\s+)?stock\s+(?:photo|photography|image|picture|illustration|vector|footage)s?(?:\s*(?:#|-)\s*\d{4,})?(?!\w)/gi,
  /\broyalty[\s-]free\b/gi,
  /\bno\s+description\s+available\b/gi,
  /\b(?:share\s+on\s+(?:facebook|twitter|pinterest))\b/gi,
];

/** "Image of ...", "Photo: ...", "Picture 3 - ..." at the start. */
const LEADING_LABEL =
  /^(?:(?:image|photo|picture|pic|img|photograph|thumbnail)s?|(?:royalty[\s-]free\s+)?stock\s+(?:photo|photography|image|picture|illustration|vector)s?)(?:\s*#?\d+)?\s*(?:of\b|:|[-–—|]\s)\s*/i;

const letters = (s: string): string => s.toLowerCase().replace(/[^\p{L}]+/gu, ' ').trim();

function isEmptyCaption(s: string): boolean {
  const l = letters(s);
  if (l === '') return true;
  // digits drop out too: "image 3", "photo #12", "untitled-1"
  return EMPTY_CAPTIONS.has(l);
}

// ---------------------------------------------------------------- repeated words, punctuation, casing

/** Reduplications that are words in their own right. */
const REDUPLICATED = new Set(
  'pom tom bye so ha hee ho no yo bora chop choo cha tut knock dum boo bling tsk ba da la na ta wah yum go mahi bon can cous hush night aye baden walla sing pago duran talk tweet bula beep honk hip ding dong tick zig fifty had that double gallus bison vulpes rattus gorilla pica bufo naja alces bubo lynx caracal iguana crex dama gazella giraffa'.split(
    ' ',
  ),
);

const plainWord = (t: string): boolean => /^\p{L}{2,}$/u.test(t);

/** Drops an immediately repeated word ("base base") or run of up to 5 words ("vector image vector image"). */
export function dropRepeatedWords(s: string): string {
  const out: string[] = [];
  for (const t of s.split(' ')) {
    out.push(t);
    for (let n = 1; n <= 5 && 2 * n <= out.length; n++) {
      const a = out.slice(out.length - 2 * n, out.length - n);
      const b = out.slice(out.length - n);
      if (!b.every(plainWord) || !a.every(plainWord)) continue;
      if (a.some((w, i) => w.toLowerCase() !== b[i].toLowerCase())) continue;
      if (n === 1 && REDUPLICATED.has(t.toLowerCase())) continue;
      out.splice(out.length - n, n);
      break;
    }
  }
  return out.join(' ');
}

const LEADING_NOISE = /^(?:[\s\-–—|:;,•·*~_/\\>»=!?]|\.(?!\d))+/u;
const TRAILING_NOISE = /(?:[\s\-–—|:;,•·*~_/\\<«=(\[]|\.{2,}|…)+$/u;

export function fixPunctuation(s: string): string {
  let t = s
    .replace(/([!?])\1+/g, '$1')
    .replace(/([,;:])(?:\s*\1)+/g, '$1')
    .replace(/\.{4,}/g, '...')
    .replace(/\s*-{2,}\s*/g, ' - ')
    .replace(/\(\s*\)|\[\s*\]|\{\s*\}/g, ' ')
    .replace(/([,;])(?=[\p{L}])/gu, '$1 ')
    .replace(/\s+([,;:!?])(?=\s|$)/g, '$1')
    .replace(/\s[-–—|](?=[,;:])/g, '')
    .replace(/([,;:])\s*[-–—|](?=\s|$)/g, '$1')
    .replace(/\s+\.(?=\s|$)/g, '.')
    .replace(/\s+/g, ' ')
    .trim();
  for (let i = 0; i < 3; i++) {
    const before = t;
    t = t.replace(LEADING_NOISE, '').replace(TRAILING_NOISE, '').trim();
    // quotes or brackets around the whole caption
    const m = /^(["“'«‘(\[])(.*)(["”'»’)\]])$/u.exec(t);
    if (m && PAIRS[m[1]]?.includes(m[3]) && !m[2].includes(m[1]) && !m[2].includes(m[3])) t = m[2].trim();
    if (t === before) break;
  }
  return t;
}

const PAIRS: Record<string, string> = { '"': '"”', '“': '”"', "'": "'’", '‘': '’', '«': '»', '(': ')', '[': ']' };

const ACRONYMS = new Set(
  'USA US UK EU UN TV HDTV DVD CD LED LCD OLED USB HD UHD GPS NFL NBA NHL MLB MLS NYC LA DIY PC BMX ATV SUV BMW VW AC DC UV XS XL XXL XXXL UFC WWE FIFA NASA IBM HP GT RC PVC ABS LP EP ID NY NJ CA TX FL II III IV VI VII VIII IX XI XII XIII XIV XV OK AM FM PM DJ MVP RV UFO FBI CIA BBC CNN ESPN HBO 3D 4K'.split(
    ' ',
  ),
);

function isShouting(s: string): boolean {
  const upper = s.match(/\p{Lu}/gu)?.length ?? 0;
  const lower = s.match(/\p{Ll}/gu)?.length ?? 0;
  return upper >= 6 && lower <= upper * 0.05;
}

export function sentenceCase(s: string): string {
  const out = s
    .split(' ')
    .map((t) => {
      const core = t.replace(/^[^\p{L}\d]+|[^\p{L}\d]+$/gu, '');
      if (/\d/.test(core) || ACRONYMS.has(core)) return t;
      if (core === 'I') return t;
      return t.toLowerCase().replace(/i\u0307/g, 'i');
    })
    .join(' ');
  return out.replace(/(^|[.!?]\s+)(\p{Ll})/gu, (_, pre: string, c: string) => pre + c.toUpperCase());
}

function capitaliseFirst(s: string): string {
  const m = /^(["“'‘(\[]?)(\p{L}+)/u.exec(s);
  if (!m) return s;
  const word = m[2];
  if (word !== word.toLowerCase()) return s;
  return m[1] + word.charAt(0).toUpperCase() + s.slice(m[1].length + 1);
}

// ---------------------------------------------------------------- the pipeline

const URL_RE = /\b(?:https?:\/\/|www\.)[^\s<>"]+/gi;

export function cleanCaption(raw: string): CleanedCaption {
  const fixes: string[] = [];
  let s = raw ?? '';
  const step = (name: string, next: string): void => {
    if (next !== s && !fixes.includes(name)) fixes.push(name);
    s = next;
  };
  const ws = (x: string): string => x.replace(/\s+/g, ' ').trim();

  step('unicode', s.normalize('NFC').replace(/[\u200b-\u200d\u2060\ufeff\u00ad]/g, ''));
  step('html_entities', decodeEntities(s));
  const hasTags = /<\/?[a-zA-Z!][^<>]*>|<\/?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?$/.test(s);
  if (hasTags) {
    step('html_tags', stripTags(s));
  }
  const collapsed = ws(s);
  if (collapsed !== s && !fixes.includes('whitespace')) fixes.push('whitespace');
  s = collapsed;

  step('url', ws(s.replace(URL_RE, ' ')));

  // file names
  const whole = WHOLE_FILE.exec(s);
  if (whole) step('file_name', fileNameWords(dropTrailingCameraName(whole[1])));
  else if (isIdentifier(s)) step('file_name', '');
  else if (SLUG.test(s)) step('file_name', fileNameWords(s));
  else {
    step(
      'file_name',
      ws(s.replace(EMBEDDED_FILE, (f) => (fileNameWords(f.replace(new RegExp(`\\.(?:${IMAGE_EXT})$`, 'i'), '')) === '' ? ' ' : f))),
    );
  }

  // boilerplate
  if (isEmptyCaption(s)) step('boilerplate', '');
  else {
    let t = s;
    t = t.replace(LEADING_LABEL, '');
    for (const re of PHRASES) t = t.replace(re, ' ');
    t = ws(t).replace(LEADING_LABEL, '');
    if (isEmptyCaption(fixPunctuation(t))) t = '';
    step('boilerplate', ws(t));
  }

  step('repeated_words', dropRepeatedWords(s));
  step('punctuation', fixPunctuation(s));
  if (isShouting(s)) step('casing', sentenceCase(s));
  step('casing', capitaliseFirst(s));
  if (!/[\p{L}\p{N}]/u.test(s)) step('boilerplate', '');
  return { text: s, fixes };
}
