/**
 * Wraps a per-batch function as an RxJS operator: batches run one at a time in order,
 * each in an OpenTelemetry span, and every sample the stage drops is counted by stage and reason.
 */
import { SpanStatusCode, trace } from '@opentelemetry/api';
import { concatMap, from, type OperatorFunction } from 'rxjs';
import { instruments } from '../telemetry/telemetry';
import type { Batch } from './sample';

const tracer = trace.getTracer('squeeze');

export function stage(name: string, run: (batch: Batch) => Promise<Batch> | Batch): OperatorFunction<Batch, Batch> {
  return concatMap((batch) =>
    from(
      tracer.startActiveSpan(`squeeze.${name}`, async (span) => {
        span.setAttributes({
          'messaging.destination.name': batch.topic,
          'messaging.kafka.partition': batch.partition,
          'squeeze.batch.size': batch.samples.length,
        });
        const keptBefore = batch.samples.map((s) => s.outcome.kind === 'keep');
        const t0 = performance.now();
        try {
          const out = await run(batch);
          out.samples.forEach((s, i) => {
            if (keptBefore[i] && s.outcome.kind !== 'keep') {
              instruments().decisions.add(1, { stage: name, outcome: s.outcome.kind, reason: s.outcome.reason });
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
