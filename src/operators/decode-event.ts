/**
 * decodeEvent: wire bytes -> CrawlEvent through an injected decoder (Avro with the registry's framing).
 * An event the edge parsed itself (file inputs) passes as it is. Records an edge already rejected become
 * dead letters with the edge's reason; bytes that do not decode become `schema_error` dead letters.
 *
 * @example
 * batches$.pipe(decodeEvent({ decode: (bytes) => codec.decode(bytes) }))
 */
import type { OperatorFunction } from 'rxjs';
import type { CrawlEvent } from '../records';
import { type Batch, forEachKept, deadLetter } from './sample';
import { stage } from './stage';

export interface DecodeEventOptions {
  /** absent: every record must arrive parsed (file inputs) */
  decode?: (bytes: Buffer) => Promise<CrawlEvent>;
  concurrency?: number;
}

export function decodeEvent(options: DecodeEventOptions): OperatorFunction<Batch, Batch> {
  return stage('decode_event', (batch) =>
    forEachKept(batch, options.concurrency ?? 8, 'schema_error', async (s) => {
      if (s.rejected) return deadLetter(s, s.rejected.reason, s.rejected.message);
      if (!s.event) {
        if (!s.raw || s.raw.length === 0) return deadLetter(s, 'schema_error', 'empty record value');
        if (!options.decode) return deadLetter(s, 'schema_error', 'the record arrived unparsed and this input has no decoder');
        s.event = await options.decode(s.raw);
      }
      s.caption = s.event.caption;
    }),
  );
}
