/**
 * Transient versus permanent failures (docs/FORMATS.md, "Transient and permanent errors"). A permanent failure
 * belongs to one record (its bytes do not decode, its schema id is unknown): that record becomes a dead letter at
 * once. A transient one belongs to a service (the schema registry or a broker is unreachable, slow or
 * overloaded): the record is valid, so it is never dead-lettered; the work is retried with backoff and waits.
 */
import { sleep } from './sleep';

/** A failure of a service, not of the record: retry, never dead-letter. */
export class TransientError extends Error {
  constructor(readonly service: string, message: string) {
    super(`${service}: ${message}`);
  }
}

/** Runs a call to `service`; an error `isTransient` recognises becomes a TransientError (its first line), any other stays. */
export async function asTransient<T>(service: string, isTransient: (e: unknown) => boolean, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (isTransient(e)) throw new TransientError(service, ((e as Error)?.message ?? String(e)).split('\n')[0]);
    throw e;
  }
}

/** A stop (SIGTERM) arrived while waiting for a service: the work is abandoned, not failed. */
export class InterruptedError extends Error {}

export interface RetryOptions {
  /** what the call does, for the log line ("decoding demo[0] at offset 12") */
  what: string;
  signal?: AbortSignal;
  /** first and longest wait between attempts */
  initialMs?: number;
  maxMs?: number;
  /** give up after this long (default: never; a stop interrupts the wait) */
  deadlineMs?: number;
  /** each failed attempt, with the wait before the next */
  onRetry?: (e: TransientError, attempt: number, waitMs: number) => void;
}

/**
 * Runs `fn` until it succeeds or fails permanently, waiting between attempts with capped exponential backoff.
 * Only TransientError is retried; a stop throws InterruptedError; past `deadlineMs` the last error is thrown.
 */
export async function retryTransient<T>(fn: () => Promise<T>, o: RetryOptions): Promise<T> {
  const started = Date.now();
  let wait = o.initialMs ?? 250;
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw new InterruptedError(`stopped while ${o.what}`);
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof TransientError)) throw e;
      if (o.deadlineMs !== undefined && Date.now() - started + wait > o.deadlineMs) throw e;
      o.onRetry?.(e, attempt, wait);
      await sleep(wait, o.signal);
      wait = Math.min(wait * 2, o.maxMs ?? 10_000);
    }
  }
}

/** Says a retry out loud, at most once per `everyMs` per key, so a long outage is a line every so often, not a flood. */
export function retryLogger(everyMs = 15_000, write: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): (key: string, line: string) => void {
  const last = new Map<string, number>();
  return (key, line) => {
    const now = Date.now();
    if (now - (last.get(key) ?? -Infinity) < everyMs) return;
    last.set(key, now);
    write(line);
  };
}
