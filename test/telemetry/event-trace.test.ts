/**
 * Trace context per event: parsing `traceparent` (malformed values are counted and start a new trace),
 * parent-based sampling that follows the producer, linked spans sampled with their events, and the
 * per-stage child spans `stage()` writes. Spans are collected with the SDK's in-memory exporter.
 */
import assert from 'node:assert/strict';
import { after, beforeEach, test } from 'node:test';
import { trace, TraceFlags } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, ParentBasedSampler, SimpleSpanProcessor, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import { firstValueFrom, of } from 'rxjs';
import { deadLetter, newSample } from '../../src/operators/sample';
import { stage } from '../../src/operators/stage';
import { contextOf, invalidTraceparents, parentFromHeaders, setEventTracing, startEventSpan, startLinkedSpan, traceparentOf, linksTo } from '../../src/telemetry/event-trace';
import { LinkedSampler } from '../../src/telemetry/telemetry';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({
  sampler: new ParentBasedSampler({ root: new LinkedSampler(new TraceIdRatioBasedSampler(0)) }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
trace.setGlobalTracerProvider(provider);
setEventTracing(true);
after(async () => {
  setEventTracing(false);
  await provider.shutdown();
  trace.disable();
});
beforeEach(() => exporter.reset());

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const coord = { topic: 't', partition: 0, offset: 7 };

test('a valid traceparent is the parent; malformed ones are counted and start a new trace', () => {
  const sc = trace.getSpanContext(parentFromHeaders({ traceparent: `00-${TRACE}-${SPAN}-01` }));
  assert.equal(sc?.traceId, TRACE);
  assert.equal(sc?.spanId, SPAN);
  assert.equal(sc?.isRemote, true);
  const before = invalidTraceparents();
  for (const bad of ['', 'garbage', `00-${TRACE}-${SPAN}`, `00-${'0'.repeat(32)}-${SPAN}-01`, `00-${TRACE.toUpperCase()}-${SPAN}-01`, 'x'.repeat(100_000), `ff-${TRACE}-${SPAN}-01`]) {
    assert.equal(trace.getSpanContext(parentFromHeaders({ traceparent: bad })), undefined, JSON.stringify(bad.slice(0, 40)));
  }
  assert.equal(invalidTraceparents() - before, 7);
  // no header: a new trace, nothing counted
  assert.equal(trace.getSpanContext(parentFromHeaders({})), undefined);
  assert.equal(invalidTraceparents() - before, 7);
});

test('traceparent values round-trip', () => {
  const sc = contextOf(`00-${TRACE}-${SPAN}-01`)!;
  assert.equal(traceparentOf(sc), `00-${TRACE}-${SPAN}-01`);
  assert.equal(contextOf('nope'), null);
  assert.equal(contextOf(null), null);
});

test('event spans follow the producer\'s sampling decision', () => {
  const sampled = startEventSpan(coord, { traceparent: `00-${TRACE}-${SPAN}-01` }, true);
  assert.ok(sampled, 'a sampled parent gives a recording span even at ratio 0');
  sampled.end();
  assert.equal(startEventSpan(coord, { traceparent: `00-${TRACE}-${SPAN}-00` }, true), null, 'an unsampled parent gives none');
  assert.equal(startEventSpan(coord, undefined, false), null, 'no parent at ratio 0: none');
  assert.equal(startEventSpan(coord, { traceparent: 'bad' }, true), null, 'a malformed parent is a new root, at ratio 0 unsampled');
  const [span] = exporter.getFinishedSpans();
  assert.equal(span?.name, 'process t');
  assert.equal(span?.parentSpanContext?.spanId, SPAN);
  assert.equal(span?.spanContext().traceId, TRACE);
  assert.equal(span?.attributes['messaging.system'], 'kafka');
  assert.equal(span?.attributes['messaging.kafka.offset'], 7);
  assert.equal(span?.attributes['messaging.destination.partition.id'], '0');
});

test('a span over many events is sampled when one of them is', () => {
  const sampled = contextOf(`00-${TRACE}-${SPAN}-01`)!;
  const unsampled = { ...sampled, traceFlags: TraceFlags.NONE };
  assert.equal(startLinkedSpan('batch', linksTo([unsampled]), {}).isRecording(), false);
  const s = startLinkedSpan('batch', linksTo([unsampled, sampled]), {});
  assert.equal(s.isRecording(), true);
  s.end();
  const done = exporter.getFinishedSpans().find((x) => x.name === 'batch')!;
  assert.equal(done.links.length, 1, 'only the sampled event is linked');
  assert.notEqual(done.spanContext().traceId, TRACE, 'a trace of its own');
});

test('stage() gives each traced event a child span with the stage\'s decision, and the batch span links to them', async () => {
  const traced = newSample({ ...coord, offset: 1 }, null, null, startEventSpan({ ...coord, offset: 1 }, { traceparent: `00-${TRACE}-${SPAN}-01` }, true));
  const killed = newSample({ ...coord, offset: 2 }, null, null, startEventSpan({ ...coord, offset: 2 }, { traceparent: `00-${TRACE}-${'1'.repeat(16)}-01` }, true));
  const plain = newSample({ ...coord, offset: 3 }, null);
  const op = stage('judge', (b) => {
    deadLetter(b.samples[1]!, 'decode_error', 'bad bytes');
    return b;
  });
  await firstValueFrom(of({ topic: 't', partition: 0, samples: [traced, killed, plain] }).pipe(op));
  const spans = exporter.getFinishedSpans().filter((s) => s.name === 'squeeze.judge');
  const children = spans.filter((s) => s.parentSpanContext);
  assert.equal(children.length, 2, 'one child per traced event');
  const of_ = (parent: string) => children.find((c) => c.parentSpanContext!.spanId === parent)!;
  assert.equal(of_(traced.trace!.spanContext().spanId).attributes['squeeze.decision'], 'keep');
  assert.equal(of_(killed.trace!.spanContext().spanId).attributes['squeeze.decision'], 'dead');
  assert.equal(of_(killed.trace!.spanContext().spanId).attributes['squeeze.reason'], 'decode_error');
  const batch = spans.find((s) => !s.parentSpanContext)!;
  assert.deepEqual(batch.links.map((l) => l.context.spanId).sort(), [traced.trace!.spanContext().spanId, killed.trace!.spanContext().spanId].sort());
  // a later stage sees only what is still kept
  exporter.reset();
  await firstValueFrom(of({ topic: 't', partition: 0, samples: [traced, killed, plain] }).pipe(stage('next', (b) => b)));
  assert.equal(exporter.getFinishedSpans().filter((s) => s.name === 'squeeze.next' && s.parentSpanContext).length, 1);
});
