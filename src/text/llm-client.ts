/**
 * An optional LLM that rewrites a caption to mention confident classes (the enrich stage; the prompt is
 * algorithms.md B.3). Speaks the OpenAI-compatible chat completions API: `POST {baseUrl}/chat/completions`
 * with `{ model, messages }`, reading `choices[0].message.content`.
 *
 * Bounded concurrency (a semaphore), an LRU cache keyed by (caption, classes) that also joins identical
 * requests in flight, a timeout per request (AbortController), and validation of what comes back.
 * `rewrite` never throws: on timeout, HTTP error, bad JSON or an invalid answer it returns null and the
 * caller uses its rule-based caption. The API key is sent as a bearer token and never logged or shown.
 *
 * @example
 * const llm = new LlmClient({ baseUrl: 'http://127.0.0.1:8000/v1', model: 'qwen2.5-1.5b-instruct', timeoutMs: 5000, concurrency: 4, cacheSize: 10_000 });
 * batches$.pipe(enrich({ threshold: 0.3, llm }))
 */
import { mentions } from './english';

export interface LlmClientOptions {
  /** e.g. http://127.0.0.1:8000/v1 (without /chat/completions) */
  baseUrl: string;
  model: string;
  apiKey?: string;
  /** per request, from sending to the whole answer read; default 10000 */
  timeoutMs?: number;
  /** most requests in flight; default 4 */
  concurrency?: number;
  /** most answers remembered; default 1000 (0 turns the cache off) */
  cacheSize?: number;
  /** reject answers that leave out any of the classes; default false */
  requireClasses?: boolean;
  /** called with one line per failed request (never contains the API key) */
  onError?: (message: string) => void;
}

/** What enrich needs from an LLM; LlmClient is the HTTP one. */
export interface CaptionRewriter {
  /** the rewritten caption, or null when there is no usable answer */
  rewrite(caption: string, classes: readonly string[]): Promise<string | null>;
}

export interface LlmStats {
  requests: number;
  cacheHits: number;
  failures: number;
  timeouts: number;
  invalid: number;
}

export const REWRITE_INSTRUCTION =
  'Rewrite the caption so it is grammatical and concise (≤ 60 words). Keep every fact it states. ' +
  'If they fit naturally, mention these objects visible in the image: {classes}. Do not add any other object.';

export function buildPrompt(caption: string, classes: readonly string[]): string {
  return `${REWRITE_INSTRUCTION.replace('{classes}', classes.join(', '))}\nCaption: ${caption}\nReply with the rewritten caption only.`;
}

const MAX_CHARS = 400;
const MAX_WORDS = 80;

/**
 * Cleans and checks an answer: one plain line, no markup, under 400 characters and 80 words; surrounding
 * quotes and a leading "Caption:" are removed. Returns null when unusable.
 */
export function validateRewrite(answer: unknown, classes: readonly string[] = [], requireClasses = false): string | null {
  if (typeof answer !== 'string') return null;
  let t = answer.trim();
  t = t.replace(/^(?:rewritten\s+)?caption\s*:\s*/i, '').trim();
  const q = /^(["“'])(.*)(["”'])$/su.exec(t);
  if (q && !q[2].includes(q[1])) t = q[2].trim();
  if (t === '' || t.length >= MAX_CHARS || /[\r\n]/.test(t)) return null;
  if (/[<>]|```|\*\*|__|^#|\[[^\]]*\]\(|\{|\}/.test(t)) return null;
  if (!/\p{L}/u.test(t) || t.split(/\s+/).length > MAX_WORDS) return null;
  if (requireClasses && !classes.every((c) => mentions(t, c))) return null;
  return t;
}

class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

class LruCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly limit: number) {}
  get(k: string): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    if (this.limit <= 0) return;
    this.map.delete(k);
    this.map.set(k, v);
    while (this.map.size > this.limit) this.map.delete(this.map.keys().next().value as string);
  }
  get size(): number {
    return this.map.size;
  }
}

export class LlmClient implements CaptionRewriter {
  readonly baseUrl: string;
  readonly model: string;
  readonly #apiKey: string | undefined;
  readonly #timeoutMs: number;
  readonly #requireClasses: boolean;
  readonly #onError: (message: string) => void;
  readonly #gate: Semaphore;
  readonly #cache: LruCache<string>;
  readonly #inFlight = new Map<string, Promise<string | null>>();
  readonly #stats: LlmStats = { requests: 0, cacheHits: 0, failures: 0, timeouts: 0, invalid: 0 };

  constructor(o: LlmClientOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, '');
    this.model = o.model;
    this.#apiKey = o.apiKey;
    this.#timeoutMs = o.timeoutMs ?? 10_000;
    this.#requireClasses = o.requireClasses ?? false;
    this.#onError = o.onError ?? (() => undefined);
    this.#gate = new Semaphore(Math.max(1, o.concurrency ?? 4));
    this.#cache = new LruCache(o.cacheSize ?? 1000);
  }

  stats(): LlmStats {
    return { ...this.#stats };
  }

  /** What logs may show: never the key. */
  toJSON(): Record<string, unknown> {
    return { baseUrl: redactUrl(this.baseUrl), model: this.model, apiKey: this.#apiKey ? '***' : null };
  }

  /** The rewritten caption, or null (timeout, error, invalid answer): the caller falls back. */
  async rewrite(caption: string, classes: readonly string[]): Promise<string | null> {
    const key = JSON.stringify([caption, [...classes].sort()]);
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      this.#stats.cacheHits++;
      return hit;
    }
    const pending = this.#inFlight.get(key);
    if (pending) {
      this.#stats.cacheHits++;
      return pending;
    }
    const p = this.#request(caption, classes).then((answer) => {
      if (answer !== null) this.#cache.set(key, answer);
      return answer;
    });
    this.#inFlight.set(key, p);
    try {
      return await p;
    } finally {
      this.#inFlight.delete(key);
    }
  }

  async #request(caption: string, classes: readonly string[]): Promise<string | null> {
    await this.#gate.acquire();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.#timeoutMs);
    this.#stats.requests++;
    try {
      const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
      if (this.#apiKey) headers.authorization = `Bearer ${this.#apiKey}`;
      const res = await fetch(`${this.baseUrl}/chat/completions`, {
        method: 'POST',
        headers,
        signal: ac.signal,
        body: JSON.stringify({
          model: this.model,
          messages: [
            { role: 'system', content: 'You edit image captions for a training dataset. Answer with one plain-text caption.' },
            { role: 'user', content: buildPrompt(caption, classes) },
          ],
          temperature: 0,
          max_tokens: 160,
        }),
      });
      const body = await res.text();
      if (!res.ok) return this.#fail(`HTTP ${res.status} from ${redactUrl(this.baseUrl)}/chat/completions`);
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        return this.#fail('answer is not JSON');
      }
      const content = (json as { choices?: { message?: { content?: unknown } }[] })?.choices?.[0]?.message?.content;
      const text = validateRewrite(content, classes, this.#requireClasses);
      if (text === null) {
        this.#stats.invalid++;
        return this.#fail('answer is missing or not a usable caption');
      }
      return text;
    } catch (e) {
      if (ac.signal.aborted) {
        this.#stats.timeouts++;
        return this.#fail(`no answer within ${this.#timeoutMs} ms`);
      }
      const code = ((e as { cause?: { code?: unknown } })?.cause?.code as string | undefined) ?? (e as Error)?.name ?? 'Error';
      return this.#fail(`request failed: ${code}`);
    } finally {
      clearTimeout(timer);
      this.#gate.release();
    }
  }

  #fail(message: string): null {
    this.#stats.failures++;
    try {
      this.#onError(`llm: ${message}`);
    } catch {
      // a logging hook must not break enrichment
    }
    return null;
  }
}

/** Drops credentials and query from a URL for messages. */
function redactUrl(u: string): string {
  try {
    const url = new URL(u);
    url.username = '';
    url.password = '';
    url.search = '';
    return url.toString().replace(/\/+$/, '');
  } catch {
    return '(invalid url)';
  }
}
