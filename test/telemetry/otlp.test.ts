/**
 * `--traces otlp`: spans reach an OTLP/HTTP receiver (a plain HTTP server here, reading the JSON the
 * exporter posts), named per stage with the partition and batch size; an endpoint that refuses
 * connections costs the run nothing but the spans.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { squeeze } from '../helpers/cli';

interface OtlpSpan { name: string; traceId: string; spanId: string; parentSpanId?: string; attributes: { key: string; value: Record<string, unknown> }[]; links?: { traceId: string; spanId: string }[] }
interface OtlpBody { resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] }

const dir = mkdtempSync(join(tmpdir(), 'otlp-'));
const args = (out: string, ratio: string) => ['curate', '--demo', '40', '--demo-kind', 'generated', '--models', 'builtin-shapes', '--out', out, '--progress', 'off', '--traces', 'otlp', '--trace-ratio', ratio];
const accounting = (stdout: string) => stdout.match(/accounting\s+([\d +=]+of \d+ events)/)?.[1];

test('every stage\'s spans reach the OTLP receiver, as service squeeze', async () => {
  const bodies: OtlpBody[] = [];
  const metricBodies: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.url === '/v1/traces') bodies.push(JSON.parse(body) as OtlpBody);
      if (req.url === '/v1/metrics') metricBodies.push(body);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const r = await squeeze([...args(join(dir, 'a'), '1'), '--metrics', 'otlp'], { env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` } });
    assert.equal(r.code, 0, r.stderr);
    // --metrics otlp: the same metrics as the Prometheus endpoint reach /v1/metrics (at least at shutdown)
    const metricNames = new Set(metricBodies.flatMap((b) => [...b.matchAll(/"name":"(squeeze_[a-z_]+)"/g)].map((m) => m[1])));
    for (const m of ['squeeze_decisions_total', 'squeeze_committed_records_total', 'squeeze_stage_samples_total', 'squeeze_copies']) assert.ok(metricNames.has(m), `${m} over OTLP (got ${[...metricNames].join(', ')})`);
    const spans = bodies.flatMap((b) => b.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));
    const names = new Set(spans.map((s) => s.name));
    for (const stage of ['decode_event', 'decode_image', 'embed', 'dedup_exact', 'soft_cap']) assert.ok(names.has(`squeeze.${stage}`), `a squeeze.${stage} span (got ${[...names].join(', ')})`);
    const service = bodies[0].resourceSpans[0].resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
    assert.equal(service, 'squeeze');
    const embed = spans.find((s) => s.name === 'squeeze.embed' && s.attributes.some((a) => a.key === 'squeeze.batch.size'))!;
    const attr = (k: string) => embed.attributes.find((a) => a.key === k)?.value;
    assert.equal(attr('messaging.destination.partition.id')?.stringValue, '0');
    assert.ok(Number(attr('squeeze.batch.size')?.intValue) > 0);
    // one trace per event: a process span, a child per stage the event reached, and a commit child
    const events = spans.filter((s) => s.name.startsWith('process '));
    assert.equal(events.length, 40, 'a process span per event at ratio 1');
    const get = (s: OtlpSpan, k: string) => s.attributes.find((a) => a.key === k)?.value;
    const byParent = new Map<string, OtlpSpan[]>();
    for (const s of spans) if (s.parentSpanId) byParent.set(s.parentSpanId, [...(byParent.get(s.parentSpanId) ?? []), s]);
    const kept = events.find((e) => get(e, 'squeeze.decision')?.stringValue === 'keep')!;
    assert.ok(kept, 'a kept event');
    const children = byParent.get(kept.spanId) ?? [];
    const childNames = children.map((c) => c.name);
    for (const stage of ['squeeze.decode_event', 'squeeze.decode_image', 'squeeze.embed', 'squeeze.soft_cap', 'squeeze.commit']) assert.ok(childNames.includes(stage), `${stage} under the kept event (got ${childNames.join(', ')})`);
    assert.ok(children.every((c) => c.traceId === kept.traceId && get(c, 'squeeze.decision')?.stringValue === 'keep'));
    assert.match(String(get(kept, 'squeeze.shard')?.stringValue), /\.parquet$/);
    // a dropped event's last stage child says which stage dropped it and why, and later stages are absent
    const dropped = events.find((e) => get(e, 'squeeze.decision')?.stringValue !== 'keep');
    if (dropped) {
      const last = (byParent.get(dropped.spanId) ?? []).filter((c) => c.name !== 'squeeze.commit' && get(c, 'squeeze.decision')?.stringValue !== 'keep');
      assert.equal(last.length, 1, 'exactly one stage drops an event');
      assert.equal(get(last[0], 'squeeze.reason')?.stringValue, get(dropped, 'squeeze.reason')?.stringValue);
    }
    // the batch span of a stage links to the events of the batch
    assert.ok((embed.links ?? []).some((l) => l.spanId === kept.spanId) || spans.filter((s) => s.name === 'squeeze.embed').some((s) => (s.links ?? []).some((l) => l.spanId === kept.spanId)), 'an embed batch span links to the kept event');
    // the HTML report links each traced row to its trace
    const html = join(dir, 'report.html');
    const rep = await squeeze(['report', '--input', join(dir, 'a'), '--out', html, '--trace-url', 'http://jaeger.example/trace/']);
    assert.equal(rep.code, 0, rep.stderr);
    const linked = [...readFileSync(html, 'utf8').matchAll(/href="http:\/\/jaeger\.example\/trace\/([0-9a-f]{32})"/g)].map((m) => m[1]);
    assert.ok(linked.length > 0, 'the report links rows to traces');
    const keptTraces = new Set(events.filter((e) => get(e, 'squeeze.decision')?.stringValue === 'keep').map((e) => e.traceId));
    assert.ok(linked.every((t) => keptTraces.has(t)), 'every linked trace id is a kept event\'s trace');
    // ratio 0: nothing sampled, nothing sent
    bodies.length = 0;
    const none = await squeeze(args(join(dir, 'b'), '0'), { env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` } });
    assert.equal(none.code, 0, none.stderr);
    assert.equal(bodies.flatMap((b) => b.resourceSpans).length, 0);
    assert.equal(accounting(none.stdout), accounting(r.stdout));
  } finally {
    server.close();
  }
});

test('an OTLP endpoint that refuses connections drops the spans and changes nothing else', async () => {
  // a port that was just free: connections to it are refused
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const down = await squeeze(args(join(dir, 'c'), '1'), { env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` } });
  assert.equal(down.code, 0, down.stderr);
  const plain = await squeeze(['curate', '--demo', '40', '--demo-kind', 'generated', '--models', 'builtin-shapes', '--out', join(dir, 'd'), '--progress', 'off']);
  assert.equal(accounting(down.stdout), accounting(plain.stdout));
  assert.match(accounting(down.stdout) ?? '', /= 40 of 40 events/);
});
