/**
 * The tokenizer interface shared by the text encoders, and the tiny word tokenizer of the built-in
 * model: lower-case, split on anything that is not a letter, one id per word.
 */

export interface Encoded {
  /** token ids, always `context` long (padded) */
  ids: number[];
  /** 1 for real tokens, 0 for padding, `context` long */
  mask: number[];
}

export interface Tokenizer {
  readonly context: number;
  encode(text: string): Encoded;
}

export const WORD_PAD = 0;
export const WORD_UNKNOWN = 1;

const NON_LETTERS = /\P{L}+/u;

/** Ids: 0 = padding, 1 = unknown word, the vocabulary's ids otherwise; truncated to `context` words. */
export class WordTokenizer implements Tokenizer {
  constructor(
    private readonly vocab: Record<string, number>,
    readonly context: number,
  ) {
    if (!Number.isInteger(context) || context < 1) throw new Error(`word tokenizer: context must be a positive integer, got ${context}`);
  }

  /** The words of a text, lower-cased, in order (no truncation). */
  static words(text: string): string[] {
    return text.toLowerCase().split(NON_LETTERS).filter((w) => w.length > 0);
  }

  encode(text: string): Encoded {
    const ids = new Array<number>(this.context).fill(WORD_PAD);
    const mask = new Array<number>(this.context).fill(0);
    const words = WordTokenizer.words(text);
    const n = Math.min(words.length, this.context);
    for (let i = 0; i < n; i++) {
      const id = Object.prototype.hasOwnProperty.call(this.vocab, words[i]) ? this.vocab[words[i]] : undefined;
      ids[i] = typeof id === 'number' ? id : WORD_UNKNOWN;
      mask[i] = 1;
    }
    return { ids, mask };
  }
}
