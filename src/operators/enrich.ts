/**
 * enrich: the text branch of "Squeeze Out Tokens". Repairs the caption with `cleanCaption`
 * (entities, tags, file names, boilerplate, whitespace, repeated words, casing) and adds the confident
 * tags (score >= threshold) it does not already mention (singular/plural and simple synonyms count), in
 * plain English:
 *
 *   "A red star on a striped background." + [ring]  -> "A red star on a striped background, with a ring."
 *   "" (or boilerplate)                   + [star, ring] -> "A star and a ring."
 *
 * With an `llm`, captions that gain classes are rewritten by it instead; when it gives no usable answer
 * the rule-based caption stands. The raw caption stays in `s.event.caption`. Flags record what happened:
 * `caption_fix:<rule>` per cleaning rule, `enriched:+<label>` per added class, `enriched:llm` or
 * `enriched:llm_fallback`, and `caption_empty` when nothing describes the image.
 *
 * @example
 * batches$.pipe(tag({ bundle }), condense({ blank: true }), enrich({ threshold: 0.3, llm: null, maxAdded: 3 }))
 */
import type { OperatorFunction } from 'rxjs';
import type { Tag } from '../records';
import { cleanCaption } from '../text/clean-caption';
import { capitalise, englishList, mentions, nounPhrase } from '../text/english';
import type { CaptionRewriter } from '../text/llm-client';
import { type Batch, isKept, type Sample } from './sample';
import { stage } from './stage';

export interface EnrichOptions {
  /** tags with at least this score may be added */
  threshold: number;
  /** an LlmClient (or any CaptionRewriter); null or absent: rule-based only */
  llm?: CaptionRewriter | null;
  /** most classes added to one caption; default 3 */
  maxAdded?: number;
}

/** The confident tag labels `caption` does not already mention, best first. */
export function classesToAdd(caption: string, tags: readonly Tag[] | null, threshold: number, maxAdded = 3): string[] {
  const out: string[] = [];
  const sorted = [...(tags ?? [])].sort((a, b) => b.score - a.score);
  for (const t of sorted) {
    if (out.length >= maxAdded) break;
    if (!(t.score >= threshold)) continue;
    const label = t.label.trim().replace(/_/g, ' ');
    if (label === '' || out.some((o) => o.toLowerCase() === label.toLowerCase())) continue;
    // also skip a synonym or plural of one already added
    if (mentions(caption, label) || out.some((o) => mentions(o, label) || mentions(label, o))) continue;
    out.push(label);
  }
  return out;
}

/** The rule-based caption: `caption` plus `classes` in plain English. */
export function addClasses(caption: string, classes: readonly string[]): string {
  const base = caption.trim();
  if (classes.length === 0) return base;
  const list = englishList(classes.map(nounPhrase));
  if (base === '') return `${capitalise(list)}.`;
  if (/\?["'”’)]*$/.test(base)) return `${base} With ${list}.`;
  const stem = base.replace(/[.!]+$/, '');
  const joiner = /\bwith\b/i.test(stem) ? 'along with' : 'with';
  return `${stem}, ${joiner} ${list}.`;
}

export function enrich(options: EnrichOptions): OperatorFunction<Batch, Batch> {
  const maxAdded = options.maxAdded ?? 3;
  return stage('enrich', async (batch) => {
    const todo = batch.samples.filter((s) => isKept(s) && s.image !== null);
    await Promise.all(todo.map((s) => enrichOne(s, options, maxAdded)));
    return batch;
  });
}

async function enrichOne(s: Sample, o: EnrichOptions, maxAdded: number): Promise<void> {
  const { text, fixes } = cleanCaption(s.caption);
  for (const f of fixes) s.flags.push(`caption_fix:${f}`);
  // an image the domain check flagged (its bundle does not know inputs like it) gets no classes
  const added = s.flags.includes('domain_out') ? [] : classesToAdd(text, s.tags, o.threshold, maxAdded);
  let caption = addClasses(text, added);
  if (added.length > 0 && text !== '' && o.llm) {
    const rewritten = await o.llm.rewrite(text, added);
    if (rewritten !== null) {
      caption = rewritten;
      s.flags.push('enriched:llm');
    } else {
      s.flags.push('enriched:llm_fallback');
    }
  }
  for (const a of added) s.flags.push(`enriched:+${a}`);
  if (caption === '') s.flags.push('caption_empty');
  s.caption = caption;
}
