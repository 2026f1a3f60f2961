/**
 * One trace per event (docs/TRACING.md): W3C trace context travels in the Kafka record's `traceparent`
 * header; `squeeze produce` starts it, curation continues it with a `process` span per event (OpenTelemetry
 * messaging conventions), a child span per stage that saw the event (with its decision) and a commit span,
 * and the commit record carries it on to the trainer, whose step spans link to the events in their batch.
 *
 * Everything here is a no-op while tracing is off (`squeeze --traces none`, the default), and costs one
 * span object per sampled event when it is on: unsampled events carry no span at all.
 */
import { type Context, type Link, ROOT_CONTEXT, type Span, type SpanContext, SpanKind, TraceFlags, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { Coord } from '../records';

const propagator = new W3CTraceContextPropagator();
const getter = {
  get: (carrier: Record<string, string>, key: string): string | undefined => carrier[key],
  keys: (carrier: Record<string, string>): string[] => Object.keys(carrier),
};
const setter = { set: (carrier: Record<string, string>, key: string, value: string): void => void (carrier[key] = value) };

let enabled = false;
let invalid = 0;

/** Called by startTelemetry: per-event spans are made only while a tracer provider exports them. */
export function setEventTracing(on: boolean): void {
  enabled = on;
}

export const eventTracingOn = (): boolean => enabled;

/** `traceparent` headers that could not be parsed so far (squeeze_traceparent_invalid_total). */
export const invalidTraceparents = (): number => invalid;

const tracer = () => trace.getTracer('squeeze');

/**
 * The parent context a record's headers carry. A missing header starts a new trace; a malformed one is
 * counted and also starts a new trace: the event itself is never held back.
 */
export function parentFromHeaders(headers: Record<string, string> | undefined): Context {
  const tp = headers?.traceparent;
  if (tp === undefined) return ROOT_CONTEXT;
  const ctx = propagator.extract(ROOT_CONTEXT, headers, getter);
  if (!trace.getSpanContext(ctx)) invalid++;
  return ctx;
}

/** `traceparent` header value for a span context. */
export function traceparentOf(sc: SpanContext): string {
  const carrier: Record<string, string> = {};
  propagator.inject(trace.setSpanContext(ROOT_CONTEXT, sc), carrier, setter);
  return carrier.traceparent!;
}

/** A span context from a `traceparent` value, or null when it does not parse. */
export function contextOf(traceparent: string | undefined | null): SpanContext | null {
  if (!traceparent) return null;
  return trace.getSpanContext(propagator.extract(ROOT_CONTEXT, { traceparent }, getter)) ?? null;
}

const sampled = (sc: SpanContext): boolean => (sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;

/** Links to the sampled spans among `spans` (a batch span links to the events in the batch). */
export function linksTo(spans: (Span | SpanContext | null | undefined)[], attributes?: Link['attributes']): Link[] {
  const links: Link[] = [];
  for (const s of spans) {
    if (!s) continue;
    const sc = 'spanContext' in s ? s.spanContext() : s;
    if (sampled(sc)) links.push(attributes ? { context: sc, attributes } : { context: sc });
  }
  return links;
}

/**
 * The `process` span of one input record, child of the producer's context when its headers carry one.
 * Null when tracing is off or the event is not sampled.
 */
export function startEventSpan(coord: Coord, headers: Record<string, string> | undefined, kafka: boolean): Span | null {
  const parent = headers?.traceparent !== undefined ? parentFromHeaders(headers) : ROOT_CONTEXT;
  if (!enabled) return null;
  const span = tracer().startSpan(
    `process ${coord.topic}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        ...(kafka ? { 'messaging.system': 'kafka' } : { 'squeeze.source': 'file' }),
        'messaging.operation.type': 'process',
        'messaging.operation.name': 'process',
        'messaging.destination.name': coord.topic,
        'messaging.destination.partition.id': String(coord.partition),
        'messaging.kafka.offset': coord.offset,
      },
    },
    parent,
  );
  if (!span.isRecording()) return null;
  return span;
}

/** A finished child span of an event span, from `start` to `end` (epoch milliseconds). */
export function eventChild(parent: Span | SpanContext, name: string, start: number, end: number, attributes: Record<string, string | number>, links?: Link[]): void {
  const ctx = 'spanContext' in parent ? trace.setSpan(ROOT_CONTEXT, parent) : trace.setSpanContext(ROOT_CONTEXT, parent);
  const child = tracer().startSpan(name, { startTime: start, attributes, links }, ctx);
  child.end(end);
}

/**
 * A span for work on many events (a batch, a shard commit, a trainer step): a new trace that links to
 * the sampled events, sampled whenever one of them is (see LinkedSampler).
 */
export function startLinkedSpan(name: string, links: Link[], attributes: Record<string, string | number>, kind: SpanKind = SpanKind.INTERNAL, startTime?: number): Span {
  return tracer().startSpan(name, { root: true, links, attributes, kind, startTime }, ROOT_CONTEXT);
}

/** Epoch milliseconds with sub-millisecond precision (span times). */
export const nowMs = (): number => performance.timeOrigin + performance.now();
