/**
 * validateEvent: the rules for an event that need no image decode (docs/FORMATS.md, Limits).
 * Reads `event`; writes `caption`, `flags`, and bounds `event` in place.
 * Bad ids and events without any image are dead letters; over-long captions are truncated and
 * flagged, not rejected; control characters are removed from captions. What goes to the row as it came
 * is bounded too: the raw caption at `maxRawCaptionChars` (flag `caption_raw_truncated`), attrs at
 * `maxAttrs` entries with keys and values of at most `maxAttrChars` (flag `attrs_truncated`).
 *
 * @example
 * batches$.pipe(decodeEvent(...), validateEvent({ maxCaptionChars: 2000 }))
 */
import type { OperatorFunction } from 'rxjs';
import type { CrawlEvent } from '../records';
import { type Batch, deadLetter, type Sample } from './sample';
import { stage } from './stage';

export interface ValidateEventOptions {
  maxCaptionChars: number;
  /** longest caption_raw stored (default 10,000) */
  maxRawCaptionChars?: number;
  /** attrs entries kept, in their order (default 64) */
  maxAttrs?: number;
  /** longest attrs key or value kept (default 1024) */
  maxAttrChars?: number;
}

// C0/C1 controls except tab and newline, and the bidi overrides that can disguise text.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function validateEvent(options: ValidateEventOptions): OperatorFunction<Batch, Batch> {
  return stage('validate_event', (batch) => {
    for (const s of batch.samples) if (s.outcome.kind === 'keep') validateOne(s, options);
    return batch;
  });
}

function validateOne(s: Sample, options: ValidateEventOptions): void {
  const ev = s.event;
  if (!ev) return deadLetter(s, 'schema_error', 'no event');
  if (ev.id.length < 1 || ev.id.length > 256) return deadLetter(s, 'id_invalid', `id must be 1..256 chars, got ${ev.id.length}`);
  if (CONTROL.test(ev.id) || LONE_SURROGATE.test(ev.id)) {
    CONTROL.lastIndex = 0;
    return deadLetter(s, 'id_invalid', 'id contains control characters or invalid unicode');
  }
  CONTROL.lastIndex = 0;
  if (ev.image !== null && ev.image.length === 0) return deadLetter(s, 'missing_image', 'image is present but empty');
  if (ev.image === null && !ev.image_url) return deadLetter(s, 'missing_image', 'neither image nor image_url');
  boundRaw(s, ev, options);
  if (LONE_SURROGATE.test(ev.caption)) return deadLetter(s, 'caption_invalid', 'caption is not valid unicode');
  let caption = ev.caption.replace(CONTROL, ' ');
  if (caption !== ev.caption) s.flags.push('caption_control_chars');
  if (caption.length > options.maxCaptionChars) {
    caption = caption.slice(0, options.maxCaptionChars);
    s.flags.push('caption_truncated');
  }
  s.caption = caption;
}

/** The event's caption and attrs go to the row as they came: within bounds, cut and flagged beyond them. */
function boundRaw(s: Sample, ev: CrawlEvent, o: ValidateEventOptions): void {
  const maxRaw = o.maxRawCaptionChars ?? 10_000;
  if (ev.caption.length > maxRaw) {
    // never split a surrogate pair, so a cut caption stays valid unicode
    const cut = /[\ud800-\udbff]/.test(ev.caption[maxRaw - 1]) ? maxRaw - 1 : maxRaw;
    ev.caption = ev.caption.slice(0, cut);
    s.flags.push('caption_raw_truncated');
  }
  const maxAttrs = o.maxAttrs ?? 64;
  const maxChars = o.maxAttrChars ?? 1024;
  const entries = Object.entries(ev.attrs);
  if (entries.length <= maxAttrs && entries.every(([k, v]) => k.length <= maxChars && v.length <= maxChars)) return;
  const kept: Record<string, string> = {};
  for (const [k, v] of entries.slice(0, maxAttrs)) kept[k.slice(0, maxChars)] = v.slice(0, maxChars);
  ev.attrs = kept;
  s.flags.push('attrs_truncated');
}
