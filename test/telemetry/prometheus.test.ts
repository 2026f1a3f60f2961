/**
 * A real Prometheus (built by deploy/services.sh when Go is installed) scrapes a curator's and a
 * trainer's metrics endpoint, and evaluates every query of the Grafana dashboard: each must parse and
 * return series.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startTelemetry, stopTelemetry } from '../../src/telemetry/telemetry';
import { curateAndTrainMetrics } from '../helpers/metrics-run';

const BIN = process.env.SQUEEZE_PROMETHEUS_BIN ?? '';
const skip = BIN && existsSync(BIN) ? false : 'skipped: no Prometheus binary (deploy/services.sh builds it when Go 1.26 is installed; SQUEEZE_PROMETHEUS_BIN)';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

let prom: ChildProcess | null = null;
after(async () => {
  prom?.kill('SIGTERM');
  await stopTelemetry();
});

test('a real Prometheus scrapes the curator and evaluates every dashboard query to series', { skip, timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'prom-'));
  const metricsPort = await freePort();
  const { prometheusUrl } = startTelemetry({ prometheusPort: metricsPort, traces: 'none' });
  assert.ok(prometheusUrl);
  await curateAndTrainMetrics(8);

  const port = await freePort();
  writeFileSync(join(dir, 'prometheus.yml'), [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    'scrape_configs:',
    `  - job_name: squeeze`,
    `    static_configs: [{ targets: ['127.0.0.1:${metricsPort}'] }]`,
    '',
  ].join('\n'));
  prom = spawn(BIN, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  prom.stderr!.on('data', (d) => (log += d));
  const api = async (path: string): Promise<{ status: string; data: { result: unknown[] }; error?: string }> => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`);
    return (await r.json()) as { status: string; data: { result: unknown[] }; error?: string };
  };
  // wait until Prometheus has scraped the endpoint a few times (rate() needs two samples)
  const until = Date.now() + 60_000;
  for (;;) {
    try {
      const up = await api(`/api/v1/query?query=${encodeURIComponent('count_over_time(up{job="squeeze"}[1m])')}`);
      const n = Number((up.data.result[0] as { value: [number, string] } | undefined)?.value[1] ?? 0);
      if (n >= 4) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`Prometheus did not scrape in time: ${log.slice(-1000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const upNow = await api(`/api/v1/query?query=up`);
  assert.equal((upNow.data.result[0] as { value: [number, string] }).value[1], '1', 'the target is up');

  const dashboard = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'deploy', 'grafana', 'squeeze-dashboard.json'), 'utf8'));
  const exprs: string[] = dashboard.panels
    .filter((p: { datasource: { type: string } }) => p.datasource.type === 'prometheus')
    .flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr));
  assert.ok(exprs.length >= 14);
  for (const e of exprs) {
    const r = await api(`/api/v1/query?query=${encodeURIComponent(e)}`);
    assert.equal(r.status, 'success', `${e}: ${r.error ?? ''}`);
    assert.ok(r.data.result.length > 0, `${e} returns no series from a real scrape`);
  }
});
