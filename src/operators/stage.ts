/**
 * Wraps a per-batch function as an RxJS operator: batches run one at a time in order,
 * each in an OpenTelemetry span, and every sample the stage drops is counted by stage and reason.
 * When tracing is on, the batch span links to the batch's sampled events, and each sampled event that
 * reached the stage gets a child span with the stage's decision on it (docs/TRACING.md).
 */
import { ROOT_CONTEXT, SpanStatusCode, trace } from '@opentelemetry/api';
import { concatMap, from, type OperatorFunction } from 'rxjs';
import { eventChild, eventTracingOn, linksTo, nowMs } from '../telemetry/event-trace';
import { instruments } from '../telemetry/telemetry';
import type { Batch } from './sample';

export function stage(name: string, run: (batch: Batch) => Promise<Batch> | Batch): OperatorFunction<Batch, Batch> {
  return concatMap((batch) =>
    from(
      trace.getTracer('squeeze').startActiveSpan(`squeeze.${name}`, { links: eventTracingOn() ? linksTo(batch.samples.map((s) => s.trace)) : undefined, attributes: {
          'messaging.destination.name': batch.topic,
          'messaging.destination.partition.id': String(batch.partition),
          'squeeze.stage': name,
          'squeeze.batch.size': batch.samples.length,
        } }, ROOT_CONTEXT, async (span) => {
        const keptBefore = batch.samples.map((s) => s.outcome.kind === 'keep');
        instruments().stageSamples.add(keptBefore.filter(Boolean).length, { stage: name });
        const t0 = performance.now();
        const start = nowMs();
        try {
          const out = await run(batch);
          const end = nowMs();
          out.samples.forEach((s, i) => {
            if (!keptBefore[i]) return;
            if (s.outcome.kind !== 'keep') {
              // the stage that dropped it, for the run's summary
              s.outcome.stage ??= name;
              instruments().decisions.add(1, { stage: name, outcome: s.outcome.kind, reason: s.outcome.reason });
            }
            if (s.trace) {
              const attrs: Record<string, string> = { 'squeeze.stage': name, 'squeeze.decision': s.outcome.kind };
              if (s.outcome.kind !== 'keep') attrs['squeeze.reason'] = s.outcome.reason;
              eventChild(s.trace, `squeeze.${name}`, start, end, attrs);
            }
          });
          return out;
        } catch (e) {
          span.recordException(e as Error);
          span.setStatus({ code: SpanStatusCode.ERROR });
          throw e;
        } finally {
          instruments().stageSeconds.record((performance.now() - t0) / 1000, { stage: name });
          span.end();
        }
      }),
    ),
  );
}
