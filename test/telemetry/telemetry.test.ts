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
  assert.equal(span.attributes['messaging.kafka.partition'], 2);
  assert.equal(span.attributes['squeeze.batch.size'], 3);

  const text = await scrape();
  assert.match(text, /squeeze_decisions_total\{[^}]*stage="decode_image"[^}]*reason="unsupported_format"[^}]*\} 1/);
  assert.match(text, /squeeze_decisions_total\{[^}]*stage="validate_event"[^}]*reason="missing_image"[^}]*\} 1/);
  assert.match(text, /squeeze_stage_batch_seconds_count\{[^}]*stage="decode_image"[^}]*\} 1/);
});

test('the Grafana dashboard queries only metrics and labels the curator exports', async () => {
  const { Stats } = await import('../../src/curate/stats');
  const { recordLag } = await import('../../src/telemetry/telemetry');
  new Stats().committed({
    version: 1, topic: 'tel', partition: 2, start_offset: 0, end_offset: 2, records: 3, rows: 1, dead: 2, filtered: 0,
    dead_by_reason: { missing_image: 1, unsupported_format: 1 }, filtered_by_reason: {}, filtered_offsets: {},
    shard: 's.parquet', shard_bytes: 100, dead_letters: null, state: null, close_reason: 'drain', config_hash: 'h',
    model_version: 'none', schema_version: 2, created_at: 0,
  });
  recordLag(5);
  const text = await scrape();
  // metric name -> label names seen on the endpoint
  const labels = new Map<string, Set<string>>();
  for (const m of text.matchAll(/^([a-z_]+)\{([^}]*)\}/gm)) {
    const set = labels.get(m[1]) ?? new Set<string>();
    for (const l of m[2].matchAll(/([a-z_]+)="/g)) set.add(l[1]);
    labels.set(m[1], set);
  }
  const dashboard = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'deploy', 'grafana', 'squeeze-dashboard.json'), 'utf8'));
  const exprs: string[] = dashboard.panels.flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr));
  assert.ok(exprs.length >= 6);
  for (const e of exprs) {
    const metrics = [...e.matchAll(/\b(squeeze_[a-z_]+)/g)].map((m) => m[1]);
    assert.ok(metrics.length > 0, e);
    const known = new Set<string>(['le']);
    for (const m of metrics) {
      assert.ok(labels.has(m), `${m} (in ${e}) is not on /metrics`);
      for (const l of labels.get(m)!) known.add(l);
    }
    const used = [...e.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1].split(',').map((s) => s.trim()));
    used.push(...[...e.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1].matchAll(/([a-z_]+)\s*!?=/g)].map((x) => x[1])));
    for (const l of used) assert.ok(known.has(l), `label ${l} in ${e} is not exported`);
  }
});
