/**
 * The real CLIP byte-level BPE tokenizer (OpenAI `simple_tokenizer.py` / HF `CLIPTokenizer`), pure TS.
 *
 * Loads from an HF `tokenizer.json` or from `vocab.json` + `merges.txt`; both give identical ids.
 *
 * Pipeline: clean (HTML unescape twice, NFC, whitespace runs -> one space, trim, lower-case; ftfy's
 * mojibake repair is not reproduced) -> split with CLIP's pattern
 * `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` (case-insensitive)
 * -> UTF-8 bytes mapped through GPT-2's byte-to-unicode table -> BPE by merge rank with `</w>` on the
 * last symbol of each word -> `[BOS 49406, ...tokens, EOS 49407]`.
 *
 * Truncation: to `context` (77) keeping EOS as the last token (OpenAI `tokenize(truncate=True)` and HF
 * `truncation=True` agree). Padding: the HF tokenizer pads with its `pad_token`, which in the OpenAI
 * CLIP tokenizer files is `<|endoftext|>` (49407; tokenizer_config.json / special_tokens_map.json),
 * while OpenAI's `clip.tokenize` pads with 0. The default here is the HF one, 49407, or the pad_token
 * named by a `tokenizer_config.json` / `special_tokens_map.json` beside the files; `padId` overrides.
 * Either is fine for CLIP text towers: they are causal and pool at the first EOS, and the mask marks
 * the padding (1 = token, 0 = pad).
 *
 * `<|startoftext|>` / `<|endoftext|>` written in the text map to their special ids, as in both
 * reference tokenizers.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Encoded, Tokenizer } from './word-tokenizer';

export type { Encoded, Tokenizer } from './word-tokenizer';

export const CLIP_BOS = 49406;
export const CLIP_EOS = 49407;
const BOS_TOKEN = '<|startoftext|>';
const EOS_TOKEN = '<|endoftext|>';

const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/** GPT-2's reversible byte -> printable unicode character table. */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table = new Array<string>(256);
  for (const b of bs) table[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  return table;
}
const BYTE_ENCODER = bytesToUnicode();

// ---- HTML unescape (Python html.unescape, with a table of the common named entities) ----

const LATIN1 =
  'nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest ' +
  'Agrave Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig ' +
  'agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute ucirc uuml yacute thorn yuml';
/** entities that HTML also accepts without the semicolon */
const LEGACY = new Map<string, string>([
  ['amp', '&'], ['AMP', '&'], ['lt', '<'], ['LT', '<'], ['gt', '>'], ['GT', '>'], ['quot', '"'], ['QUOT', '"'], ['COPY', '\u00a9'], ['REG', '\u00ae'],
  ...LATIN1.split(' ').map((name, i) => [name, String.fromCharCode(160 + i)] as [string, string]),
]);
const NAMED = new Map<string, string>([
  ...LEGACY,
  ...Object.entries({
    apos: 39, ensp: 8194, emsp: 8195, thinsp: 8201, zwnj: 8204, zwj: 8205, lrm: 8206, rlm: 8207, ndash: 8211, mdash: 8212, lsquo: 8216, rsquo: 8217,
    sbquo: 8218, ldquo: 8220, rdquo: 8221, bdquo: 8222, dagger: 8224, Dagger: 8225, bull: 8226, hellip: 8230, permil: 8240, prime: 8242, Prime: 8243,
    lsaquo: 8249, rsaquo: 8250, euro: 8364, trade: 8482, larr: 8592, uarr: 8593, rarr: 8594, darr: 8595, harr: 8596, minus: 8722, infin: 8734,
    ne: 8800, le: 8804, ge: 8805, spades: 9824, clubs: 9827, hearts: 9829, diams: 9830, star: 9734, starf: 9733, check: 10003, OElig: 338, oelig: 339,
    Scaron: 352, scaron: 353, Yuml: 376, fnof: 402, circ: 710, tilde: 732, deg: 176, frasl: 8260, laquo: 171, raquo: 187, Tab: 9, NewLine: 10,
  }).map(([k, v]) => [k, String.fromCodePoint(v)] as [string, string]),
]);
/** Windows-1252 meanings of the C1 code points, as HTML (and Python) read numeric references. */
const CP1252: Record<number, number> = {
  0x80: 0x20ac, 0x82: 0x201a, 0x83: 0x0192, 0x84: 0x201e, 0x85: 0x2026, 0x86: 0x2020, 0x87: 0x2021, 0x88: 0x02c6, 0x89: 0x2030, 0x8a: 0x0160,
  0x8b: 0x2039, 0x8c: 0x0152, 0x8e: 0x017d, 0x91: 0x2018, 0x92: 0x2019, 0x93: 0x201c, 0x94: 0x201d, 0x95: 0x2022, 0x96: 0x2013, 0x97: 0x2014,
  0x98: 0x02dc, 0x99: 0x2122, 0x9a: 0x0161, 0x9b: 0x203a, 0x9c: 0x0153, 0x9e: 0x017e, 0x9f: 0x0178,
  0x81: 0x81, 0x8d: 0x8d, 0x8f: 0x8f, 0x90: 0x90, 0x9d: 0x9d,
};
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g;

function replaceCharref(_m: string, s: string): string {
  if (s[0] === '#') {
    const num = s[1] === 'x' || s[1] === 'X' ? parseInt(s.slice(2).replace(';', ''), 16) : parseInt(s.slice(1).replace(';', ''), 10);
    if (num in CP1252) return String.fromCodePoint(CP1252[num]);
    if (num === 0) return '\ufffd';
    if (num === 0x0d) return '\r';
    if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
    if ((num >= 0x1 && num <= 0x8) || num === 0xb || (num >= 0xe && num <= 0x1f) || (num >= 0x7f && num <= 0x9f) || (num >= 0xfdd0 && num <= 0xfdef) || (num & 0xfffe) === 0xfffe) return '';
    return String.fromCodePoint(num);
  }
  if (s.endsWith(';')) {
    const hit = NAMED.get(s.slice(0, -1));
    if (hit !== undefined) return hit;
  }
  // like Python: the longest legacy entity that prefixes the reference, the rest kept as text
  for (let x = s.length - 1; x > 1; x--) {
    const hit = LEGACY.get(s.slice(0, x));
    if (hit !== undefined) return hit + s.slice(x);
  }
  if (!s.endsWith(';')) {
    const hit = LEGACY.get(s);
    if (hit !== undefined) return hit;
  }
  return '&' + s;
}

export function htmlUnescape(text: string): string {
  return text.indexOf('&') < 0 ? text : text.replace(CHARREF, replaceCharref);
}

/** CLIP's text cleaning without ftfy: HTML unescape twice, NFC, collapse whitespace, trim, lower-case. */
export function cleanText(text: string): string {
  return htmlUnescape(htmlUnescape(text)).normalize('NFC').replace(/\s+/gu, ' ').trim().toLowerCase();
}

export interface ClipTokenizerOptions {
  /** token positions, default 77 */
  context?: number;
  /** padding id; default: the pad_token of a tokenizer_config.json beside the files, else EOS 49407 (HF) */
  padId?: number;
}

export class ClipTokenizer implements Tokenizer {
  readonly context: number;
  readonly bos: number;
  readonly eos: number;
  readonly padId: number;
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();

  /**
   * @param vocab token -> id
   * @param merges merge rules in rank order, each `"a b"` or `["a", "b"]`
   */
  constructor(
    private readonly vocab: Map<string, number>,
    merges: (string | [string, string])[],
    opts: ClipTokenizerOptions = {},
  ) {
    this.context = opts.context ?? 77;
    if (!Number.isInteger(this.context) || this.context < 2) throw new Error(`clip tokenizer: context must be an integer >= 2, got ${this.context}`);
    merges.forEach((m, i) => {
      const pair = typeof m === 'string' ? m : `${m[0]} ${m[1]}`;
      if (!this.ranks.has(pair)) this.ranks.set(pair, i);
    });
    const bos = vocab.get(BOS_TOKEN);
    const eos = vocab.get(EOS_TOKEN);
    if (bos === undefined || eos === undefined) throw new Error(`clip tokenizer: the vocabulary has no ${bos === undefined ? BOS_TOKEN : EOS_TOKEN}`);
    this.bos = bos;
    this.eos = eos;
    this.padId = opts.padId ?? eos;
  }

  /** From an HF `tokenizer.json` (BPE model with vocab and merges). */
  static async fromTokenizerJson(path: string, opts: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    const json = JSON.parse(await readFile(path, 'utf8')) as {
      model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
      added_tokens?: { id: number; content: string }[];
    };
    const model = json.model;
    if (!model || (model.type !== undefined && model.type !== 'BPE') || !model.vocab || !Array.isArray(model.merges)) {
      throw new Error(`${path}: not a BPE tokenizer.json (model.vocab and model.merges expected)`);
    }
    const vocab = new Map(Object.entries(model.vocab));
    for (const t of json.added_tokens ?? []) if (!vocab.has(t.content)) vocab.set(t.content, t.id);
    return new ClipTokenizer(vocab, model.merges, withPad(vocab, dirname(path), opts));
  }

  /** From `vocab.json` + `merges.txt` (first line `#version: ...`). */
  static async fromVocabMerges(vocabPath: string, mergesPath: string, opts: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    const [vocabText, mergesText] = await Promise.all([readFile(vocabPath, 'utf8'), readFile(mergesPath, 'utf8')]);
    const vocab = new Map(Object.entries(JSON.parse(vocabText) as Record<string, number>));
    const merges = mergesText
      .split('\n')
      .map((l) => l.replace(/\r$/, ''))
      .filter((l, i) => l.length > 0 && !(i === 0 && l.startsWith('#version')));
    return new ClipTokenizer(vocab, merges, withPad(vocab, dirname(vocabPath), opts));
  }

  /** BPE of one pre-token (already byte-encoded), with `</w>` on the last symbol. */
  private bpe(token: string): number[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    let word = Array.from(token);
    word[word.length - 1] += '</w>';
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else merged.push(word[i++]);
      }
      word = merged;
    }
    const ids = word.map((w) => this.vocab.get(w) ?? this.eos);
    if (this.cache.size >= 50_000) this.cache.clear();
    this.cache.set(token, ids);
    return ids;
  }

  /** Token ids of a text without BOS/EOS, truncation or padding. */
  tokenize(text: string): number[] {
    const out: number[] = [];
    for (const m of cleanText(text).matchAll(PATTERN)) {
      const piece = m[0];
      if (piece === BOS_TOKEN) out.push(this.bos);
      else if (piece === EOS_TOKEN) out.push(this.eos);
      else {
        let enc = '';
        for (const b of Buffer.from(piece, 'utf8')) enc += BYTE_ENCODER[b];
        for (const id of this.bpe(enc)) out.push(id);
      }
    }
    return out;
  }

  /** `[BOS, ...tokens, EOS]`, truncated to `context` with EOS kept last, then padded with `padId`. */
  encode(text: string): Encoded {
    const body = this.tokenize(text).slice(0, this.context - 2);
    const ids = new Array<number>(this.context).fill(this.padId);
    const mask = new Array<number>(this.context).fill(0);
    ids[0] = this.bos;
    for (let i = 0; i < body.length; i++) ids[i + 1] = body[i];
    ids[body.length + 1] = this.eos;
    mask.fill(1, 0, body.length + 2);
    return { ids, mask };
  }
}

/** The pad_token named in a tokenizer_config.json / special_tokens_map.json in `dir`, when it is in the vocabulary. */
function withPad(vocab: Map<string, number>, dir: string, opts: ClipTokenizerOptions): ClipTokenizerOptions {
  if (opts.padId !== undefined) return opts;
  for (const name of ['tokenizer_config.json', 'special_tokens_map.json']) {
    const file = join(dir, name);
    if (!existsSync(file)) continue;
    try {
      const cfg = JSON.parse(readFileSync(file, 'utf8')) as { pad_token?: string | { content?: string } };
      const pad = typeof cfg.pad_token === 'string' ? cfg.pad_token : cfg.pad_token?.content;
      const id = pad === undefined ? undefined : vocab.get(pad);
      if (id !== undefined) return { ...opts, padId: id };
    } catch {
      // an unreadable config is not the tokenizer's: keep the default
    }
  }
  return opts;
}
