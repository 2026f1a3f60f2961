/**
 * The `squeeze` command line (flags.ts has every flag). User mistakes print one line and exit non-zero;
 * `--verbose` adds the stack trace.
 *
 * Only the parser and the config load up front: each command imports what it needs (kafkajs, the
 * registry client, OpenTelemetry, onnxruntime, sharp) when it runs, so `--help` and `--print-config`
 * answer at once.
 */
import { parseArgs } from 'node:util';
import { type Config, ConfigError, loadConfig, maskedConfig } from '../config/config';
import { ConnectError } from '../streams/kafka/reach';
import { UserError } from './errors';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMANDS, FLAGS, helpText } from './flags';

export { UserError };

export interface Parsed {
  command: string;
  cfg: Config;
  local: Record<string, string | boolean | undefined>;
}

/** The version in package.json, read at the call: `--version` answers without loading anything else. */
function packageVersion(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
}

export function parse(argv: string[]): Parsed | { help: string } {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') return { help: helpText() };
  if (command === '--version' || command === 'version') return { help: `squeeze ${packageVersion()}` };
  if (!COMMANDS[command]) throw new UserError(`unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(', ')})`);
  const specs = FLAGS.filter((f) => f.commands.includes(command));
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = { help: { type: 'boolean' } };
  for (const f of specs) options[f.name] = { type: f.type === 'boolean' ? 'boolean' : 'string', multiple: f.type === 'list' };
  let values: Record<string, unknown>;
  try {
    const parsed = parseArgs({ args: rest, options, strict: true, allowPositionals: false });
    values = parsed.values as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${(e as Error).message.split('\n')[0]} (see squeeze ${command} --help)`);
  }
  if (values.help) return { help: helpText(command) };
  const flags: Record<string, string | boolean> = {};
  const flagNames: Record<string, string> = {};
  const local: Record<string, string | boolean | undefined> = {};
  for (const f of specs) {
    const v = values[f.name];
    if (v === undefined) continue;
    const value = Array.isArray(v) ? v.join(',') : (v as string | boolean);
    if (f.path.startsWith('@')) local[f.path.slice(1)] = value;
    else {
      flags[f.path] = value;
      flagNames[f.path] = f.name;
    }
  }
  if (local['no-dedup']) flags['dedup.exact'] = false;
  if (local['no-fetch']) flags['fetch.enabled'] = false;
  const off: Record<string, string> = {
    'no-blank': 'condense.blank', 'no-condense': 'condense.enabled', 'no-tag': 'tag.enabled', 'no-enrich': 'enrich.enabled',
    'no-near-dedup': 'dedup.near', 'no-balance': 'balance.enabled', 'no-soft-cap': 'softCap.enabled',
  };
  for (const [flag, path] of Object.entries(off)) if (local[flag]) flags[path] = false;
  const cfg = loadConfig({ file: (local.config as string) ?? null, env: process.env, flags, flagNames });
  return { command, cfg, local };
}

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv);
  if ('help' in p) {
    process.stdout.write(p.help + '\n');
    return 0;
  }
  const { command, cfg, local } = p;
  if (local['print-config']) {
    process.stdout.write(JSON.stringify(maskedConfig(cfg), null, 2) + '\n');
    return 0;
  }
  switch (command) {
    case 'gen':
      return (await import('./gen')).genCommand(cfg, local);
    case 'produce':
      return withTelemetry(cfg, async () => (await import('./produce')).produceFile(cfg, local));
    case 'control':
      return (await import('./control')).controlCommand(cfg, local);
    case 'build-model':
      return (await import('./build-model')).buildModelCommand(cfg, local);
    case 'report':
      return (await import('./report')).reportCommand(cfg, local);
    case 'export':
      return (await import('./export')).exportCommand(cfg, local, stopSignal());
    case 'train':
      return withTelemetry(cfg, async () => (await import('./train')).trainCommand(cfg, local, stopSignal()));
    case 'replay': {
      const { replayRange } = await import('./replay');
      return withTelemetry(cfg, () => replayRange(cfg, local));
    }
    default:
      if (cfg.out) (await import('./output-dir')).checkOutputUrl(cfg.out);
      if (local.fresh && cfg.out) (await import('./output-dir')).clearOutput(cfg.out);
      return withTelemetry(cfg, () => curate(cfg));
  }
}

async function curate(cfg: Config): Promise<number> {
  if (!cfg.out) throw new UserError('--out DIR is required');
  if (cfg.brokers.length > 0 && (cfg.input || cfg.demo)) {
    throw new UserError('--input/--demo are for embedded mode; use `squeeze produce` to publish a file to Kafka');
  }
  if (cfg.brokers.length === 0 && cfg.input && cfg.demo) throw new UserError('give either --input or --demo, not both');
  if (cfg.brokers.length === 0 && !cfg.input && !cfg.demo) throw new UserError('nothing to curate: give --brokers (Kafka), --input PATH or --demo N');
  const { printSummary, progressReporter } = await import('./progress');
  const report = progressReporter(cfg);
  if (cfg.brokers.length > 0) {
    const { curateKafka } = await import('../curate/run-kafka');
    const curator = await curateKafka(cfg, { onProgress: report, signal: stopSignal() });
    printSummary(cfg, curator);
    return 0;
  }
  const { curateFiles } = await import('../curate/run-files');
  const curator = await curateFiles(cfg, { onProgress: (c, input) => report(c, null, input) });
  printSummary(cfg, curator);
  return 0;
}

async function withTelemetry(cfg: Config, fn: () => Promise<number>): Promise<number> {
  const { startTelemetry, stopTelemetry } = await import('../telemetry/telemetry');
  const t = startTelemetry({ prometheusPort: cfg.telemetry.prometheusPort, prometheusHost: cfg.telemetry.prometheusHost, traces: cfg.telemetry.traces, traceRatio: cfg.telemetry.traceRatio, metrics: cfg.telemetry.metrics });
  if (t.prometheusUrl) process.stderr.write(`metrics at ${t.prometheusUrl}\n`);
  try {
    return await fn();
  } finally {
    await stopTelemetry();
  }
}

/** SIGINT/SIGTERM stop a Kafka run gracefully: open shards are discarded, committed work stays. */
function stopSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return ac.signal;
}

/** One line for a user-facing failure; the stack only with --verbose. */
export function describeError(e: unknown, verbose: boolean): string {
  const err = e as Error & { name?: string; code?: string };
  if (verbose && err?.stack) return err.stack;
  const msg = (err?.message ?? String(e)).split('\n')[0];
  if (e instanceof ConnectError) return msg;
  if (/^KafkaJS(Connection|NumberOfRetriesExceeded|BrokerNotFound|Request)/.test(err?.name ?? '')) {
    return `cannot talk to Kafka (${cfgBrokers ?? 'brokers'}): ${msg}`;
  }
  if (err?.name?.startsWith('KafkaJS')) return `Kafka: ${msg}`;
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(msg) && /registry|ccompat|apis/i.test(`${msg} ${err?.stack ?? ''}`)) {
    return `cannot reach the schema registry: ${msg}`;
  }
  return msg;
}

let cfgBrokers: string | null = null;

export async function cli(argv: string[]): Promise<void> {
  const verbose = argv.includes('--verbose');
  const bi = argv.indexOf('--brokers');
  cfgBrokers = bi >= 0 ? (argv[bi + 1] ?? null) : (process.env.SQUEEZE_BROKERS ?? null);
  try {
    process.exitCode = await run(argv);
  } catch (e) {
    const usage = e instanceof UserError || e instanceof ConfigError;
    process.stderr.write(`squeeze: error: ${describeError(e, verbose)}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}
