/**
 * OpenTelemetry wiring (DESIGN 9): spans per batch per operator (see operators/stage.ts), counters per
 * stage and reason, lag and commit metrics; a Prometheus endpoint, and traces to the console or over
 * OTLP/HTTP (parent-based ratio sampling), all optional.
 * Instruments are created on first use, after `startTelemetry` has installed the providers.
 */
import { metrics, trace, type Counter, type Histogram, type ObservableGauge } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  type ReadableSpan,
  SimpleSpanProcessor,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';

export interface TelemetryOptions {
  prometheusPort: number | null;
  /** otlp: OTLP/HTTP to the endpoint of the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables */
  traces: 'none' | 'console' | 'otlp';
  /** share of traces sampled where no parent decided (parent-based ratio); default 0.1 */
  traceRatio?: number;
}

type ExportDone = Parameters<SpanExporter['export']>[1];

let droppedSpans = 0;

/** Spans that could not be exported (endpoint down, queue full at shutdown): counted, never retried, never waited for. */
class CountingExporter implements SpanExporter {
  constructor(private readonly inner: SpanExporter) {}
  export(spans: ReadableSpan[], done: ExportDone): void {
    this.inner.export(spans, (r) => {
      if (r.code !== 0) droppedSpans += spans.length;
      done(r);
    });
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

/** Spans dropped by the OTLP exporter so far (also the squeeze_spans_dropped_total metric). */
export const spansDropped = (): number => droppedSpans;

export interface Instruments {
  decisions: Counter;
  stageSeconds: Histogram;
  committedRecords: Counter;
  shardBytes: Counter;
  lag: ObservableGauge;
  domainOutShare: ObservableGauge;
}

let current: Instruments | null = null;
let lagValue = 0;
let domainShare = 0;
const shutdowns: (() => Promise<void>)[] = [];

export function startTelemetry(o: TelemetryOptions): { prometheusUrl: string | null } {
  let prometheusUrl: string | null = null;
  if (o.prometheusPort !== null) {
    const exporter = new PrometheusExporter({ host: '127.0.0.1', port: o.prometheusPort });
    const provider = new MeterProvider({ readers: [exporter] });
    metrics.setGlobalMeterProvider(provider);
    shutdowns.push(() => provider.shutdown());
    prometheusUrl = `http://127.0.0.1:${o.prometheusPort}/metrics`;
  }
  if (o.traces === 'console') {
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new ConsoleSpanExporter())] });
    trace.setGlobalTracerProvider(provider);
    shutdowns.push(() => provider.shutdown());
  }
  if (o.traces === 'otlp') {
    // loaded only when asked for; the exporter reads the endpoint and headers from OTEL_EXPORTER_OTLP_*
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
    const exporter = new CountingExporter(new OTLPTraceExporter({ timeoutMillis: 5000 }));
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME ?? 'squeeze' }),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(o.traceRatio ?? 0.1) }),
      // a bounded queue, exported in the background: an unreachable endpoint drops spans, it never slows curation
      spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: 4096, maxExportBatchSize: 512, scheduledDelayMillis: 1000, exportTimeoutMillis: 5000 })],
    });
    trace.setGlobalTracerProvider(provider);
    shutdowns.push(() => provider.shutdown());
  }
  current = null;
  return { prometheusUrl };
}

export async function stopTelemetry(): Promise<void> {
  for (const s of shutdowns.splice(0)) await s().catch(() => undefined);
}

export function instruments(): Instruments {
  if (current) return current;
  const meter = metrics.getMeter('squeeze');
  const lag = meter.createObservableGauge('squeeze_consumer_lag', { description: 'input records not yet in a commit record' });
  lag.addCallback((r) => r.observe(lagValue));
  const domainOutShare = meter.createObservableGauge('squeeze_domain_out_share', { description: 'share of recent images below the model bundle\'s calibrated confidence floor (domain check)' });
  domainOutShare.addCallback((r) => r.observe(domainShare));
  meter.createObservableCounter('squeeze_spans_dropped_total', { description: 'spans the OTLP exporter could not deliver' }).addCallback((r) => r.observe(droppedSpans));
  current = {
    decisions: meter.createCounter('squeeze_decisions_total', { description: 'samples dropped per stage, outcome and reason' }),
    stageSeconds: meter.createHistogram('squeeze_stage_batch_seconds', { description: 'time per batch per stage', unit: 's' }),
    committedRecords: meter.createCounter('squeeze_committed_records_total', { description: 'input records in commit records, by decision' }),
    shardBytes: meter.createCounter('squeeze_shard_bytes_total', { description: 'bytes of committed Parquet shards', unit: 'By' }),
    lag,
    domainOutShare,
  };
  return current;
}

const trainerValues = new Map<string, { value: number; attrs: Record<string, string> }>();
let trainerGauges = false;

/**
 * The trainer's gauges (squeeze train): step, loss, image tokens, held-out recall@1/5 per direction and
 * zero-shot accuracy, the model version it last published. Values are kept until the next record.
 */
export function recordTrainer(name: 'step' | 'loss' | 'image_tokens' | 'recall' | 'zero_shot' | 'published_step', value: number, attrs: Record<string, string> = {}): void {
  if (!trainerGauges) {
    trainerGauges = true;
    const meter = metrics.getMeter('squeeze');
    const gauges: Record<string, string> = {
      step: 'steps the trainer has taken',
      loss: 'contrastive loss of the last training step',
      image_tokens: 'image patches through the image tower so far (FLIP: kept patches only)',
      recall: 'held-out recall (direction i2t or t2i, k 1 or 5)',
      zero_shot: 'held-out zero-shot accuracy',
      published_step: 'step of the last published model version (label version)',
    };
    for (const [g, description] of Object.entries(gauges)) {
      meter.createObservableGauge(`squeeze_trainer_${g}`, { description }).addCallback((r) => {
        for (const [k, v] of trainerValues) if (k.split('|')[0] === g) r.observe(v.value, v.attrs);
      });
    }
  }
  const key = `${name}|${JSON.stringify(attrs)}`;
  if (name === 'published_step') for (const k of [...trainerValues.keys()]) if (k.startsWith('published_step|')) trainerValues.delete(k);
  trainerValues.set(key, { value, attrs });
}

export function recordLag(n: number): void {
  lagValue = n;
}

export function recordDomainShare(share: number): void {
  domainShare = share;
}
