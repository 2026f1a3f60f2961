/**
 * decodeEvent: wire bytes -> CrawlEvent through an injected decoder (Avro with the registry's framing).
 * Records an edge already rejected, and bytes that do not decode, become `schema_error` dead letters.
 *
 * @example
 * batches$.pipe(decodeEvent({ decode: (bytes) => codec.decode(bytes) }))
 */
import type { OperatorFunction } from 'rxjs';
import type { CrawlEvent } from '../records';
import { type Batch, forEachKept, kill } from './sample';
import { stage } from './stage';

export interface DecodeEventOptions {
  decode: (bytes: Buffer) => Promise<CrawlEvent>;
  concurrency?: number;
}

export function decodeEvent(options: DecodeEventOptions): OperatorFunction<Batch, Batch> {
  return stage('decode_event', (batch) =>
    forEachKept(batch, options.concurrency ?? 8, 'schema_error', async (s) => {
      if (s.rejected) return kill(s, s.rejected.reason, s.rejected.message);
      if (!s.raw || s.raw.length === 0) return kill(s, 'schema_error', 'empty record value');
      s.event = await options.decode(s.raw);
      s.caption = s.event.caption;
    }),
  );
}
