/**
 * validateEvent: the rules of DESIGN 2.1 and 10 that need no image decode.
 * Bad ids and events without any image are dead letters; over-long captions are truncated and
 * flagged, not rejected; control characters are removed from captions.
 *
 * @example
 * batches$.pipe(decodeEvent(...), validateEvent({ maxCaptionChars: 2000 }))
 */
import type { OperatorFunction } from 'rxjs';
import { type Batch, kill, type Sample } from './sample';
import { stage } from './stage';

export interface ValidateEventOptions {
  maxCaptionChars: number;
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
  if (!ev) return kill(s, 'schema_error', 'no event');
  if (ev.id.length < 1 || ev.id.length > 256) return kill(s, 'id_invalid', `id must be 1..256 chars, got ${ev.id.length}`);
  if (CONTROL.test(ev.id) || LONE_SURROGATE.test(ev.id)) {
    CONTROL.lastIndex = 0;
    return kill(s, 'id_invalid', 'id contains control characters or invalid unicode');
  }
  CONTROL.lastIndex = 0;
  if (ev.image !== null && ev.image.length === 0) return kill(s, 'missing_image', 'image is present but empty');
  if (ev.image === null && !ev.image_url) return kill(s, 'missing_image', 'neither image nor image_url');
  if (LONE_SURROGATE.test(ev.caption)) return kill(s, 'caption_invalid', 'caption is not valid unicode');
  let caption = ev.caption.replace(CONTROL, ' ');
  if (caption !== ev.caption) s.flags.push('caption_control_chars');
  if (caption.length > options.maxCaptionChars) {
    caption = caption.slice(0, options.maxCaptionChars);
    s.flags.push('caption_truncated');
  }
  s.caption = caption;
}
