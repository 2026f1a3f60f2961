/**
 * OpenTelemetry wiring (docs/TRACING.md): spans per batch per operator (see operators/stage.ts), counters per
 * stage and reason, lag and commit metrics; a Prometheus endpoint, and traces to the console or over
 * OTLP/HTTP (parent-based ratio sampling), all optional.
 * Instruments are created on first use, after `startTelemetry` has installed the providers.
 */
import { type Attributes, type Context, type Link, metrics, type SpanKind, trace, TraceFlags, type Counter, type Histogram, type ObservableGauge } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, type MetricReader, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  type ReadableSpan,
  type Sampler,
  SamplingDecision,
  type SamplingResult,
  SimpleSpanProcessor,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { invalidTraceparents, setEventTracing } from './event-trace';

export interface TelemetryOptions {
  prometheusPort: number | null;
  /** default 127.0.0.1 */
  prometheusHost?: string;
  /** otlp: OTLP/HTTP to the endpoint of the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables */
  traces: 'none' | 'console' | 'otlp';
  /** share of traces sampled where no parent decided (parent-based ratio); default 0.1 */
  traceRatio?: number;
  /** otlp: metrics also pushed over OTLP/HTTP (OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT), every OTEL_METRIC_EXPORT_INTERVAL ms */
  metrics?: 'none' | 'otlp';
}

/**
 * Root sampler for spans that stand for many events (a batch, a commit, a trainer step): sampled when any
 * linked event is, so a sampled event's links always resolve; otherwise the ratio decides.
 */
export class LinkedSampler implements Sampler {
  constructor(private readonly ratio: Sampler) {}
  shouldSample(ctx: Context, traceId: string, name: string, kind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    if (links.some((l) => (l.context.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED)) return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    return this.ratio.shouldSample(ctx, traceId, name, kind, attributes, links);
  }
  toString(): string {
    return `LinkedSampler{${this.ratio.toString()}}`;
  }
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
  /** samples still kept when they reach a stage (its input rate) */
  stageSamples: Counter;
  /** soft-cap copies of each committed row */
  copies: Histogram;
  stageSeconds: Histogram;
  committedRecords: Counter;
  shardBytes: Counter;
  /** failed attempts at a call to a service (schema registry, Kafka) that was retried, by service and call */
  retries: Counter;
  lag: ObservableGauge;
  domainOutShare: ObservableGauge;
}

let current: Instruments | null = null;
let lagValue = 0;
let modelVersion: string | null = null;
let domainShare = 0;
const shutdowns: (() => Promise<void>)[] = [];

export function startTelemetry(o: TelemetryOptions): { prometheusUrl: string | null } {
  let prometheusUrl: string | null = null;
  const readers: MetricReader[] = [];
  if (o.prometheusPort !== null) {
    const host = o.prometheusHost ?? '127.0.0.1';
    readers.push(new PrometheusExporter({ host, port: o.prometheusPort }));
    prometheusUrl = `http://${host.includes(':') ? `[${host}]` : host}:${o.prometheusPort}/metrics`;
  }
  if (o.metrics === 'otlp') {
    // loaded only when asked for; endpoint, headers and interval from OTEL_EXPORTER_OTLP_* / OTEL_METRIC_EXPORT_*
    const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-http') as typeof import('@opentelemetry/exporter-metrics-otlp-http');
    readers.push(
      new PeriodicExportingMetricReader({
        exporter: new OTLPMetricExporter({ timeoutMillis: 5000 }),
        exportIntervalMillis: Number(process.env.OTEL_METRIC_EXPORT_INTERVAL ?? 10_000),
        exportTimeoutMillis: 5000,
      }),
    );
  }
  if (readers.length > 0) {
    const provider = new MeterProvider({ resource: resource(), readers });
    metrics.setGlobalMeterProvider(provider);
    shutdowns.push(() => provider.shutdown());
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
      resource: resource(),
      sampler: new ParentBasedSampler({ root: new LinkedSampler(new TraceIdRatioBasedSampler(o.traceRatio ?? 0.1)) }),
      // a bounded queue, exported in the background: an unreachable endpoint drops spans, it never slows curation
      spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: 8192, maxExportBatchSize: 1024, scheduledDelayMillis: 1000, exportTimeoutMillis: 5000 })],
      spanLimits: { linkCountLimit: 256 },
    });
    trace.setGlobalTracerProvider(provider);
    shutdowns.push(() => provider.shutdown());
  }
  setEventTracing(o.traces !== 'none');
  current = null;
  return { prometheusUrl };
}

const resource = () => resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME ?? 'squeeze' });

export async function stopTelemetry(): Promise<void> {
  for (const s of shutdowns.splice(0)) await s().catch(() => undefined);
  setEventTracing(false);
  trace.disable();
  metrics.disable();
}

export function instruments(): Instruments {
  if (current) return current;
  const meter = metrics.getMeter('squeeze');
  const lag = meter.createObservableGauge('squeeze_consumer_lag', { description: 'input records not yet in a commit record' });
  lag.addCallback((r) => r.observe(lagValue));
  const domainOutShare = meter.createObservableGauge('squeeze_domain_out_share', { description: 'share of recent images below the model bundle\'s calibrated confidence floor (domain check)' });
  domainOutShare.addCallback((r) => r.observe(domainShare));
  meter.createObservableCounter('squeeze_spans_dropped_total', { description: 'spans the OTLP exporter could not deliver' }).addCallback((r) => r.observe(droppedSpans));
  meter.createObservableCounter('squeeze_traceparent_invalid_total', { description: 'input records whose traceparent header did not parse (each started a new trace)' }).addCallback((r) => r.observe(invalidTraceparents()));
  meter.createObservableGauge('squeeze_model_info', { description: 'the model bundle version of the last commit (label model_version; value 1)' }).addCallback((r) => {
    if (modelVersion !== null) r.observe(1, { model_version: modelVersion });
  });
  current = {
    stageSamples: meter.createCounter('squeeze_stage_samples_total', { description: 'samples still kept when they reach each stage' }),
    copies: meter.createHistogram('squeeze_copies', { description: 'soft-cap copies per committed row', advice: { explicitBucketBoundaries: [0, 1, 2, 3, 4, 6, 8, 16] } }),
    decisions: meter.createCounter('squeeze_decisions_total', { description: 'samples dropped per stage, outcome and reason' }),
    stageSeconds: meter.createHistogram('squeeze_stage_batch_seconds', { description: 'time per batch per stage', unit: 's' }),
    committedRecords: meter.createCounter('squeeze_committed_records_total', { description: 'input records in commit records, by decision' }),
    shardBytes: meter.createCounter('squeeze_shard_bytes_total', { description: 'bytes of committed Parquet shards', unit: 'By' }),
    retries: meter.createCounter('squeeze_transient_retries_total', { description: 'failed attempts at a call to a service (schema registry, Kafka) that were retried with backoff' }),
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

export function recordModelVersion(v: string): void {
  modelVersion = v;
}

export function recordLag(n: number): void {
  lagValue = n;
}

export function recordDomainShare(share: number): void {
  domainShare = share;
}
