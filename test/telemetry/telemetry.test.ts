import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { firstValueFrom, of } from 'rxjs';
import sharp from 'sharp';
import { decodeImage } from '../../src/operators/decode-image';
import { newSample } from '../../src/operators/sample';
import { validateEvent } from '../../src/operators/validate-event';
import { startTelemetry, stopTelemetry } from '../../src/telemetry/telemetry';
import { batchOf, event } from '../helpers/samples';

const spans = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));
const port = 20000 + Math.floor(Math.random() * 20000);
const { prometheusUrl } = startTelemetry({ prometheusPort: port, traces: 'none' });
after(() => stopTelemetry());

async function scrape(): Promise<string> {
  for (let i = 0; i < 50; i++) {
    try {
      const r = await fetch(prometheusUrl!);
      if (r.ok) return await r.text();
    } catch {
      // the exporter's server starts asynchronously
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no metrics endpoint');
}

test('a span per batch per operator, and drops counted by stage and reason on the Prometheus endpoint', async () => {
  const good = newSample({ topic: 'tel', partition: 2, offset: 0 }, null);
  good.event = event('g', { image: await sharp({ create: { width: 64, height: 64, channels: 3, background: '#0f0' } }).png().toBuffer() });
  const svg = newSample({ topic: 'tel', partition: 2, offset: 1 }, null);
  svg.event = event('s', { image: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>') });
  const noImage = newSample({ topic: 'tel', partition: 2, offset: 2 }, null);
  noImage.event = event('n');
  const opts = { maxImageBytes: 1e6, maxPixels: 1e7, minSide: 32, maxAspect: 8, imageFormat: 'keep' as const, quality: 80 };
  await firstValueFrom(of(batchOf([good, svg, noImage], 'tel', 2)).pipe(validateEvent({ maxCaptionChars: 100 }), decodeImage(opts)));

  const names = spans.getFinishedSpans().map((s) => s.name);
  assert.ok(names.includes('squeeze.validate_event'));
  assert.ok(names.includes('squeeze.decode_image'));
  const span = spans.getFinishedSpans().find((s) => s.name === 'squeeze.decode_image')!;
  assert.equal(span.attributes['messaging.destination.partition.id'], '2');
  assert.equal(span.attributes['squeeze.batch.size'], 3);

  const text = await scrape();
  assert.match(text, /squeeze_decisions_total\{[^}]*stage="decode_image"[^}]*reason="unsupported_format"[^}]*\} 1/);
  assert.match(text, /squeeze_decisions_total\{[^}]*stage="validate_event"[^}]*reason="missing_image"[^}]*\} 1/);
  assert.match(text, /squeeze_stage_batch_seconds_count\{[^}]*stage="decode_image"[^}]*\} 1/);
});

test('the Grafana dashboard queries only metrics and labels the curator and trainer export', async () => {
  // a real embedded curation in this process (every stage, commits, soft-cap copies, the model version)
  const { curateAndTrainMetrics } = await import('../helpers/metrics-run');
  await curateAndTrainMetrics(5);
  const text = await scrape();
  // metric name -> label names seen on the endpoint
  const labels = new Map<string, Set<string>>();
  for (const m of text.matchAll(/^([a-z_]+)(?:\{([^}]*)\})? /gm)) {
    const set = labels.get(m[1]) ?? new Set<string>();
    for (const l of (m[2] ?? '').matchAll(/([a-z_]+)="/g)) set.add(l[1]);
    labels.set(m[1], set);
  }
  const dashboard = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'deploy', 'grafana', 'squeeze-dashboard.json'), 'utf8'));
  type Target = { expr?: string; tags?: string; operation?: string };
  const panels: { title: string; datasource: { type: string }; targets: Target[] }[] = dashboard.panels;
  const prom = panels.filter((p) => p.datasource.type === 'prometheus');
  const exprs = prom.flatMap((p) => p.targets.map((t) => t.expr!));
  assert.ok(exprs.length >= 14);
  const used = new Set<string>();
  for (const e of exprs) {
    const metrics = [...e.matchAll(/\b(squeeze_[a-z_]+)/g)].map((m) => m[1]);
    assert.ok(metrics.length > 0, e);
    const known = new Set<string>(['le']);
    for (const m of metrics) {
      assert.ok(labels.has(m), `${m} (in ${e}) is not on /metrics`);
      used.add(m);
      for (const l of labels.get(m)!) known.add(l);
    }
    const names = [...e.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((s) => s.trim()));
    names.push(...[...e.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1].matchAll(/([a-z_]+)\s*!?=/g)].map((x) => x[1])));
    for (const l of names) assert.ok(known.has(l), `label ${l} in ${e} is not exported`);
  }
  // what the issue asks the dashboard to show
  for (const m of ['squeeze_stage_samples_total', 'squeeze_decisions_total', 'squeeze_consumer_lag', 'squeeze_copies_bucket', 'squeeze_model_info', 'squeeze_trainer_loss', 'squeeze_trainer_recall']) {
    assert.ok(used.has(m), `a panel charts ${m}`);
  }
  // Jaeger panels search span attributes and names the curator and trainer really write
  const jaeger = panels.filter((p) => p.datasource.type === 'jaeger');
  assert.ok(jaeger.length >= 1);
  for (const t of jaeger.flatMap((p) => p.targets)) {
    for (const kv of (t.tags ?? '').split(' ').filter(Boolean)) assert.ok(['squeeze.decision', 'squeeze.reason', 'squeeze.stage'].includes(kv.split('=')[0]!), kv);
    if (t.operation) assert.ok(['train step', 'squeeze.train', 'squeeze.commit'].includes(t.operation), t.operation);
  }
});
