import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FLAGS } from '../../src/cli/flags';
import { parse } from '../../src/cli/main';
import { parseBound } from '../../src/cli/replay';
import { ROOT, squeeze } from '../helpers/cli';
import { closedPort } from '../helpers/ports';

test('--help lists every command, and each command help lists exactly the flags it parses', async () => {
  const top = await squeeze(['--help']);
  assert.equal(top.code, 0);
  for (const c of ['curate', 'produce', 'gen', 'replay', 'control']) assert.match(top.stdout, new RegExp(`\\b${c}\\b`));
  for (const c of ['curate', 'produce', 'gen', 'replay', 'control']) {
    const h = await squeeze([c, '--help']);
    assert.equal(h.code, 0);
    for (const f of FLAGS.filter((x) => x.commands.includes(c))) assert.match(h.stdout, new RegExp(`--${f.name}\\b`), `${c} --help shows --${f.name}`);
    for (const f of FLAGS.filter((x) => !x.commands.includes(c))) assert.doesNotMatch(h.stdout, new RegExp(`--${f.name}\\b`), `${c} --help hides --${f.name}`);
  }
});

test('a flag shared by commands is explained for the command asked about', async () => {
  const help = async (c: string): Promise<string> => (await squeeze([c, '--help'])).stdout;
  assert.doesNotMatch(await help('train'), /embedded/, 'train --help');
  assert.match(await help('curate'), /--brokers .*without it curate runs embedded/);
  assert.doesNotMatch(await help('gen'), /gallery/, 'gen --help');
  assert.match(await help('report'), /--n N\s+rows in the gallery/);
  const report = await help('report');
  assert.match(report, /--input PATH\s+a curated output: a directory or s3:/);
  assert.doesNotMatch(report, /JSONL|WebDataset|bundle directory/, 'report --help');
  assert.match(await help('gen'), /--out PATH\s+the JSONL file to write/);
});

test('--version prints the package version and exits 0', async () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const arg of ['--version', 'version']) {
    const r = await squeeze([arg]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), `squeeze ${version}`);
  }
});

/** The packages a CLI run in a fresh node process has loaded by the time it is done (from require.cache). */
function packagesLoadedBy(args: string[], thenRequire?: string): string[] {
  const main = join(ROOT, 'dist', 'src', 'cli', 'main.js');
  const probe = `require(${JSON.stringify(main)}).cli(process.argv.slice(1)).then(() => {
    ${thenRequire ? `require(${JSON.stringify(thenRequire)});` : ''}
    const names = Object.keys(require.cache).map((f) => f.split('node_modules/')[1]?.split('/')).filter(Boolean)
      .map((parts) => (parts[0].startsWith('@') ? parts[0] + '/' + parts[1] : parts[0]));
    console.error('LOADED ' + JSON.stringify([...new Set(names)]));
  });`;
  const r = spawnSync(process.execPath, ['-e', probe, '--', ...args], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const line = r.stderr.split('\n').find((l) => l.startsWith('LOADED '));
  assert.ok(line, r.stderr);
  return JSON.parse(line.slice('LOADED '.length)) as string[];
}

test('--help and --print-config load no Kafka, registry, telemetry, ONNX, image or Parquet library', () => {
  const heavy = /^(kafkajs|@confluentinc\/|@opentelemetry\/|onnxruntime-|sharp$|@img\/|parquetjs-lite$|tar-stream$|onnx-proto$|rxjs$)/;
  for (const args of [['--help'], ['curate', '--help'], ['replay', '--help'], ['curate', '--print-config', '--brokers', 'b:1']]) {
    const loaded = packagesLoadedBy(args);
    assert.deepEqual(loaded.filter((p) => heavy.test(p)), [], `squeeze ${args.join(' ')} loaded ${loaded.join(', ')}`);
  }
  // the probe does see them once a command module is loaded
  const kafkaRun = packagesLoadedBy(['--help'], join(ROOT, 'dist', 'src', 'curate', 'run-kafka.js'));
  assert.ok(kafkaRun.includes('kafkajs') && kafkaRun.includes('@confluentinc/schemaregistry'), kafkaRun.join(', '));
});

test('user mistakes print one line, no stack trace, and exit 2', async () => {
  const cases: [string[], RegExp][] = [
    [['curatee'], /unknown command "curatee"/],
    [['curate', '--bogus'], /Unknown option '--bogus'/],
    [['curate', '--demo', '5'], /--out DIR is required/],
    [['curate', '--out', '/tmp/x'], /nothing to curate/],
    [['curate', '--out', '/tmp/x', '--shard-rows', 'many', '--demo', '3'], /shard\.maxRows must be a number/],
    [['curate', '--out', '/tmp/x', '--input', '/nonexistent/crawl.jsonl'], /input not found/],
    [['gen', '--out', '/tmp/x.jsonl', '--n', '0'], /--n must be a positive whole number/],
    [['replay', '--brokers', '127.0.0.1:1', '--out', '/tmp/never-used-replay'], /--from/],
    [['build-model'], /--out DIR is required/],
    [['report', '--out', '/tmp/x.html'], /--input DIR is required/],
    [['report', '--input', 'src', '--out', '/tmp/x.html'], /not a curated output/],
    [['build-model', '--out', 'src'], /holds files other than a bundle's/],
    [['curate', '--out', '/tmp/x', '--demo', '3', '--models', '/nonexistent/bundle'], /no bundle\.json in --models/],
  ];
  for (const [args, want] of cases) {
    const r = await squeeze(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, want, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
});

test('an unreachable broker or registry: where it connects at once, then one line naming the address and the cause', async () => {
  const out = mkdtempSync(join(tmpdir(), 'cli-'));
  const closed = await closedPort();
  const lines = (r: { stderr: string }) => r.stderr.trim().split('\n');
  const refused = await squeeze(['curate', '--brokers', `127.0.0.1:${closed}`, '--out', out, '--registry', 'mock://x']);
  assert.equal(refused.code, 1);
  assert.deepEqual(lines(refused), [
    `squeeze: connecting to Kafka at 127.0.0.1:${closed}...`,
    `squeeze: error: cannot reach Kafka at 127.0.0.1:${closed}: connection refused: nothing listens there (ECONNREFUSED)`,
  ]);

  // something listens but never speaks Kafka: the configured deadline, not kafkajs's retries
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const port = (silent.address() as net.AddressInfo).port;
  try {
    const mute = await squeeze(['produce', '--brokers', `127.0.0.1:${port}`, '--registry', `http://127.0.0.1:${port}/apis/ccompat/v7`, '--input', 'x.jsonl', '--connect-timeout-ms', '300']);
    assert.equal(mute.code, 1);
    assert.equal(lines(mute).length, 3, mute.stderr);
    assert.match(lines(mute)[2], new RegExp(`^squeeze: error: Kafka at 127\\.0\\.0\\.1:${port} did not answer as a Kafka broker within 0\\.3 s \\(`));
    const noRegistry = await squeeze(['curate', '--brokers', `127.0.0.1:${port}`, '--registry', `http://127.0.0.1:${closed}/apis/ccompat/v7`, '--out', out]);
    assert.equal(noRegistry.code, 1);
    assert.deepEqual(lines(noRegistry).slice(0, 2), [`squeeze: connecting to Kafka at 127.0.0.1:${port}...`, `squeeze: connecting to the schema registry at http://127.0.0.1:${closed}/apis/ccompat/v7...`]);
    assert.equal(lines(noRegistry)[2], `squeeze: error: cannot reach the schema registry at http://127.0.0.1:${closed}/apis/ccompat/v7 (127.0.0.1:${closed}): connection refused: nothing listens there (ECONNREFUSED)`);
  } finally {
    for (const s of sockets) s.destroy();
    silent.close();
  }
});

test('--print-config shows the merged config with secrets masked', async () => {
  const r = await squeeze(['curate', '--print-config', '--topic', 'x'], { env: { SQUEEZE_SASL_PASSWORD: 'pw-secret' } });
  assert.equal(r.code, 0);
  const cfg = JSON.parse(r.stdout);
  assert.equal(cfg.topic, 'x');
  assert.equal(cfg.kafka.saslPassword, '***');
});

test('flags map onto the typed config', () => {
  const p = parse(['curate', '--brokers', 'a:1', '--brokers', 'b:2', '--allow-host', '127.0.0.1', '--no-dedup', '--shard-rows', '7', '--out', 'o']);
  assert.ok(!('help' in p));
  if ('help' in p) return;
  assert.deepEqual(p.cfg.brokers, ['a:1', 'b:2']);
  assert.deepEqual(p.cfg.fetch.allowHosts, ['127.0.0.1']);
  assert.equal(p.cfg.dedup.exact, false);
  assert.equal(p.cfg.shard.maxRows, 7);
  assert.equal(p.cfg.telemetry.prometheusHost, '127.0.0.1', 'metrics bind loopback unless told otherwise');
  const t = parse(['train', '--shards', 's', '--prometheus-port', '9465', '--prometheus-host', '0.0.0.0', '--traces', 'otlp', '--metrics', 'otlp']);
  assert.ok(!('help' in t));
  if ('help' in t) return;
  assert.equal(t.cfg.telemetry.prometheusHost, '0.0.0.0');
  assert.equal(t.cfg.telemetry.prometheusPort, 9465);
  assert.equal(t.cfg.telemetry.traces, 'otlp');
  assert.equal(t.cfg.telemetry.metrics, 'otlp');
  const q = parse(['curate', '--input', 'crawl.jsonl', '--image-root', '/data/images', '--out', 'o']);
  assert.ok(!('help' in q) && q.cfg.imageRoot === '/data/images');
  const d = parse(['curate', '--input', 'crawl.jsonl', '--out', 'o']);
  assert.ok(!('help' in d) && d.cfg.imageRoot === null, 'default: the JSONL file\'s directory');
});

test('replay bounds: times, offsets and per-partition offsets', () => {
  assert.deepEqual(parseBound('42'), { offset: 42 });
  assert.deepEqual(parseBound('2024-01-01T00:00:00Z'), { time: Date.UTC(2024, 0, 1) });
  assert.deepEqual(parseBound('1704067200000'), { time: 1704067200000 });
  assert.deepEqual(parseBound('0:5,3:9'), { offsets: new Map([[0, 5], [3, 9]]) });
  assert.throws(() => parseBound('yesterday-ish'), /cannot read/);
});

test('gen writes deterministic JSONL', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gen-'));
  const a = await squeeze(['gen', '--out', join(dir, 'a.jsonl'), '--n', '20', '--seed', '3']);
  const b = await squeeze(['gen', '--out', join(dir, 'b.jsonl'), '--n', '20', '--seed', '3']);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0);
  assert.equal(readFileSync(join(dir, 'a.jsonl'), 'utf8'), readFileSync(join(dir, 'b.jsonl'), 'utf8'));
  assert.equal(readFileSync(join(dir, 'a.jsonl'), 'utf8').trim().split('\n').length, 20);
});

test('report renders a curated output as one HTML page', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'report-'));
  const cur = await squeeze(['curate', '--demo', '40', '--out', join(dir, 'out'), '--progress', 'off']);
  assert.equal(cur.code, 0, cur.stderr);
  const rep = await squeeze(['report', '--input', join(dir, 'out'), '--out', join(dir, 'r.html'), '--n', '5']);
  assert.equal(rep.code, 0, rep.stderr);
  const rows = Number(/\((\d+) rows? from \d+ commit records?\)/.exec(rep.stdout)?.[1]);
  assert.ok(rows > 0, rep.stdout);
  const html = readFileSync(join(dir, 'r.html'), 'utf8');
  assert.equal((html.match(/<article>/g) ?? []).length, Math.min(5, rows));
  assert.match(html, /40 input records in \d+ commit records?:/);
});

test('control events from flags, with one-line errors for bad weights', async () => {
  const { controlEventFrom } = await import('../../src/cli/control');
  const w = controlEventFrom({ weights: '{"clip_score": 1.5, "caption_quality": -0.5}', bias: '0.2' }, 123);
  assert.deepEqual([w.kind, w.weights, w.bias, w.published_at], ['mix_weights', { clip_score: 1.5, caption_quality: -0.5 }, 0.2, 123]);
  const m = controlEventFrom({ 'model-version': 'v2', bundle: '/models/v2' });
  assert.deepEqual([m.kind, m.model_version, m.bundle_uri], ['model_version', 'v2', '/models/v2']);
  assert.throws(() => controlEventFrom({ weights: '[1,2]' }), /JSON object/);
  assert.throws(() => controlEventFrom({ weights: '{"a": "x"}' }), /finite number/);
  assert.throws(() => controlEventFrom({}), /--weights JSON/);
});
