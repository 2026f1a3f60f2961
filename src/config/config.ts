/**
 * The one typed configuration: defaults < config file (JSON) < environment (SQUEEZE_*) < command-line flags.
 * Validated once at start; `--print-config` prints it with secrets masked.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';

const MiB = 1024 * 1024;

export const ConfigSchema = z
  .object({
    brokers: z.array(z.string().regex(/^[^:\s]+:\d+$/, 'broker must look like host:port')).default([]),
    registry: z.string().default('mock://squeeze'),
    topic: z.string().min(1).default('crawl.raw'),
    group: z.string().min(1).default('squeeze-curator'),
    input: z.string().nullable().default(null),
    /** directory JSONL image_path values are relative to and must stay inside; null: the JSONL file's directory */
    imageRoot: z.string().nullable().default(null),
    demo: z.number().int().positive().nullable().default(null),
    /** what --demo curates: real photos when a shared/ data directory is present (auto), or always one kind */
    demoKind: z.enum(['auto', 'photos', 'examples', 'generated']).default('auto'),
    out: z.string().nullable().default(null),
    models: z.string().nullable().default(null),
    /** a YOLOX ONNX file (classes file beside it) that adds or replaces the bundle's detector */
    detector: z.string().nullable().default(null),
    seed: z.number().int().default(7),
    modelVersion: z.string().default('none'),
    batchSize: z.number().int().min(1).max(10_000).default(128),
    concurrency: z.number().int().min(1).max(64).default(4),
    drain: z.boolean().default(false),
    /** how long reaching Kafka or the schema registry may take before a one-line error */
    connectTimeoutMs: z.number().int().min(100).default(10_000),
    verbose: z.boolean().default(false),
    progress: z.enum(['auto', 'tty', 'json', 'off']).default('auto'),
    shard: z
      .object({
        maxRows: z.number().int().min(1).default(1000),
        maxBytes: z.number().int().min(1024).default(64 * MiB),
        maxSpanMs: z.number().int().min(1).default(3_600_000),
        idleMs: z.number().int().min(10).default(5000),
        /** processing time a shard stays open at most: bounds commit latency on slow steady streams */
        maxAgeMs: z.number().int().min(10).default(30_000),
        compression: z.enum(['UNCOMPRESSED', 'GZIP', 'SNAPPY']).default('UNCOMPRESSED'),
      })
      .default({}),
    limits: z
      .object({
        maxImageBytes: z.number().int().min(1).default(20 * MiB),
        maxPixels: z.number().int().min(1).default(40_000_000),
        minSide: z.number().int().min(1).default(32),
        maxAspect: z.number().min(1).default(8),
        maxCaptionChars: z.number().int().min(1).default(2000),
        /** caption_raw is stored up to this many characters, then cut and flagged */
        maxRawCaptionChars: z.number().int().min(1).default(10_000),
        /** attrs entries stored per row (in their order), and the longest key or value */
        maxAttrs: z.number().int().min(0).default(64),
        maxAttrChars: z.number().int().min(1).default(1024),
        maxRecordBytes: z.number().int().min(1024).default(32 * MiB),
        deadLetterBytes: z.number().int().min(0).default(64 * 1024),
      })
      .default({}),
    fetch: z
      .object({
        enabled: z.boolean().default(true),
        timeoutMs: z.number().int().min(1).default(10_000),
        maxRedirects: z.number().int().min(0).default(3),
        allowHosts: z.array(z.string()).default([]),
        concurrency: z.number().int().min(1).default(8),
        userAgent: z.string().default('squeeze/0.1 (+image-text curation)'),
      })
      .default({}),
    /** threads per onnxruntime session */
    threads: z.number().int().min(1).max(64).default(2),
    /** where onnxruntime runs: in worker threads beside the main event loop (default), or on it */
    inference: z.enum(['worker', 'main']).default('worker'),
    dedup: z
      .object({
        exact: z.boolean().default(true),
        memory: z.number().int().min(1).default(100_000),
        near: z.boolean().default(true),
        nearMaxBits: z.number().int().min(0).max(64).default(10),
        nearEps: z.number().min(0).max(2).default(0.08),
        nearMemory: z.number().int().min(1).default(5000),
        /** colour-thumbnail distance that confirms a near duplicate; null: the bundle's calibrated one, else 2.5 */
        nearThumbDistance: z.number().positive().nullable().default(null),
      })
      .default({}),
    tag: z
      .object({
        enabled: z.boolean().default(true),
        /** null: the bundle's threshold */
        threshold: z.number().min(0).max(1).nullable().default(null),
        source: z.enum(['auto', 'detector', 'zero-shot']).default('auto'),
      })
      .default({}),
    condense: z
      .object({
        enabled: z.boolean().default(true),
        rho: z.number().gt(0).max(1).default(0.5),
        /** keep the smallest set of patches holding this share of saliency instead of rho */
        mass: z.number().gt(0).max(1).nullable().default(null),
        /** paint the dropped patches in the stored image (smaller shards); off by default: the trainer's
         * unmasked steps need whole images (docs/TRAINER.md, bench curation) */
        blank: z.boolean().default(false),
        forceDetectionScore: z.number().min(0).max(1).default(0.5),
        quality: z.number().int().min(1).max(100).default(85),
      })
      .default({}),
    enrich: z
      .object({
        enabled: z.boolean().default(true),
        /** null: the bundle's calibrated threshold (calibration.enrich), else 0.4 */
        threshold: z.number().min(0).max(1).nullable().default(null),
        maxAdded: z.number().int().min(0).default(3),
        llmUrl: z.string().url().nullable().default(null),
        llmModel: z.string().default('gpt-4o-mini'),
        llmApiKey: z.string().nullable().default(null),
        llmTimeoutMs: z.number().int().min(1).default(8000),
        llmConcurrency: z.number().int().min(1).default(4),
      })
      .default({}),
    mix: z
      .object({
        /** JSON file with { version, weights, bias, stats }; default: clip_score alone */
        weightsFile: z.string().nullable().default(null),
      })
      .default({}),
    balance: z
      .object({
        enabled: z.boolean().default(true),
        tau: z.number().positive().default(1000),
      })
      .default({}),
    softCap: z
      .object({
        enabled: z.boolean().default(true),
        /** null: the bundle's calibrated alpha (calibration.softCap), else 0.15 */
        alpha: z.number().positive().nullable().default(null),
        rate: z.number().positive().default(1),
        /** null: the bundle's calibrated mode, else faithful */
        mode: z.enum(['faithful', 'systematic']).nullable().default(null),
        maxCopies: z.number().int().min(1).default(1000),
        halfLife: z.number().int().positive().nullable().default(null),
        /** warm-up of a fresh partition: pseudo-items of frozen score statistics N(warmupMean, warmupSd²); 0: off */
        warmup: z.number().int().min(0).default(1000),
        /** null: the mixing weights' stats.score, else no warm-up */
        warmupMean: z.number().nullable().default(null),
        warmupSd: z.number().positive().nullable().default(null),
      })
      .default({}),
    output: z
      .object({
        imageFormat: z.enum(['keep', 'jpeg', 'webp']).default('keep'),
        quality: z.number().int().min(1).max(100).default(90),
        /** write image_embedding and text_embedding */
        embeddings: z.boolean().default(false),
      })
      .default({}),
    kafka: z
      .object({
        clientId: z.string().default('squeeze'),
        /** largest request squeeze sends; keep at or below the broker's message.max.bytes */
        maxMessageBytes: z.number().int().min(1024).default(1024 * 1024 - 4096),
        partitions: z.number().int().min(1).default(6),
        /** how long the group waits for a silent member before it rebalances its partitions (heartbeats every second) */
        sessionTimeoutMs: z.number().int().min(6000).default(10_000),
        /** how long a curator rides out unreachable brokers (retrying with backoff) before it exits */
        retryForMs: z.number().int().min(0).default(300_000),
        fromBeginning: z.boolean().default(true),
        manifestTopic: z.string().nullable().default(null),
        controlTopic: z.string().default('squeeze.control'),
        ssl: z.boolean().default(false),
        saslMechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).nullable().default(null),
        saslUsername: z.string().nullable().default(null),
        saslPassword: z.string().nullable().default(null),
      })
      .default({}),
    telemetry: z
      .object({
        prometheusPort: z.number().int().min(0).max(65535).nullable().default(null),
        /** the address the Prometheus endpoint binds (0.0.0.0 in a container, so the scraper can reach it) */
        prometheusHost: z.string().min(1).default('127.0.0.1'),
        traces: z.enum(['none', 'console', 'otlp']).default('none'),
        /** share of traces sampled where the record carries no sampling decision of its own */
        traceRatio: z.number().min(0).max(1).default(0.1),
        /** otlp: push metrics over OTLP/HTTP too (OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT) */
        metrics: z.enum(['none', 'otlp']).default('none'),
      })
      .default({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

export class ConfigError extends Error {}

/** Environment variables that map onto config paths. Secrets come from here or the file, never from logs. */
export const ENV_KEYS: Record<string, string> = {
  SQUEEZE_BROKERS: 'brokers',
  SQUEEZE_REGISTRY: 'registry',
  SQUEEZE_TOPIC: 'topic',
  SQUEEZE_GROUP: 'group',
  SQUEEZE_OUT: 'out',
  SQUEEZE_MODELS: 'models',
  SQUEEZE_SASL_MECHANISM: 'kafka.saslMechanism',
  SQUEEZE_SASL_USERNAME: 'kafka.saslUsername',
  SQUEEZE_SASL_PASSWORD: 'kafka.saslPassword',
  SQUEEZE_KAFKA_SSL: 'kafka.ssl',
  SQUEEZE_PROMETHEUS_PORT: 'telemetry.prometheusPort',
  SQUEEZE_PROMETHEUS_HOST: 'telemetry.prometheusHost',
  SQUEEZE_LLM_URL: 'enrich.llmUrl',
  SQUEEZE_LLM_API_KEY: 'enrich.llmApiKey',
};

const SECRET_PATHS = ['kafka.saslPassword', 'enrich.llmApiKey'];

/** Sets a dotted path in a plain object, creating intermediate objects. */
export function setPath(target: Record<string, Json>, path: string, value: Json): void {
  const keys = path.split('.');
  let node = target;
  for (const k of keys.slice(0, -1)) {
    if (typeof node[k] !== 'object' || node[k] === null || Array.isArray(node[k])) node[k] = {};
    node = node[k] as Record<string, Json>;
  }
  node[keys[keys.length - 1]] = value;
}

function mergeDeep(a: Record<string, Json>, b: Record<string, Json>): Record<string, Json> {
  const out: Record<string, Json> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev)
        ? mergeDeep(prev as Record<string, Json>, v as Record<string, Json>)
        : v;
  }
  return out;
}

/** Coerces a string (env or flag) to the type the schema expects at that path. */
export function coerce(path: string, raw: string): Json {
  const kind = kindAt(path);
  if (kind === 'number') {
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new ConfigError(`${path} must be a number, got "${raw}"`);
    return n;
  }
  if (kind === 'boolean') {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new ConfigError(`${path} must be true or false, got "${raw}"`);
  }
  if (kind === 'array') return raw.split(',').map((s) => s.trim()).filter(Boolean);
  return raw;
}

function kindAt(path: string): 'number' | 'boolean' | 'array' | 'string' {
  let t: z.ZodTypeAny = ConfigSchema;
  for (const key of path.split('.')) {
    t = unwrap(t);
    if (!(t instanceof z.ZodObject)) throw new ConfigError(`unknown config key ${path}`);
    const next = (t.shape as Record<string, z.ZodTypeAny>)[key];
    if (!next) throw new ConfigError(`unknown config key ${path}`);
    t = next;
  }
  t = unwrap(t);
  if (t instanceof z.ZodNumber) return 'number';
  if (t instanceof z.ZodBoolean) return 'boolean';
  if (t instanceof z.ZodArray) return 'array';
  return 'string';
}

function unwrap(t: z.ZodTypeAny): z.ZodTypeAny {
  for (;;) {
    if (t instanceof z.ZodDefault) t = t._def.innerType;
    else if (t instanceof z.ZodNullable || t instanceof z.ZodOptional) t = t.unwrap();
    else if (t instanceof z.ZodEffects) t = t.innerType();
    else return t;
  }
}

export interface ConfigSources {
  file?: string | null;
  env?: NodeJS.ProcessEnv;
  /** dotted config path -> raw string value, from flags */
  flags?: Record<string, string | boolean>;
  /** dotted config path -> the flag that set it, for error messages */
  flagNames?: Record<string, string>;
}

export function loadConfig(sources: ConfigSources = {}): Config {
  let merged: Record<string, Json> = {};
  if (sources.file) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read config file ${sources.file}: ${(e as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`config file ${sources.file} is not valid JSON: ${(e as Error).message}`);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new ConfigError(`config file ${sources.file} must hold a JSON object such as {"shard": {"maxRows": 500}}, got ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}`);
    }
    merged = mergeDeep(merged, parsed as Record<string, Json>);
  }
  const env = sources.env ?? {};
  const fromEnv: Record<string, Json> = {};
  for (const [name, path] of Object.entries(ENV_KEYS)) {
    const v = env[name];
    if (v !== undefined && v !== '') setPath(fromEnv, path, coerceFrom(path, v, `from ${name}`));
  }
  merged = mergeDeep(merged, fromEnv);
  const fromFlags: Record<string, Json> = {};
  for (const [path, v] of Object.entries(sources.flags ?? {})) {
    const flag = sources.flagNames?.[path];
    setPath(fromFlags, path, typeof v === 'boolean' ? v : coerceFrom(path, v, flag ? `set by --${flag}` : 'set by a flag'));
  }
  merged = mergeDeep(merged, fromFlags);
  const where = (path: string): string => {
    if (getPath(fromFlags, path) !== undefined) return sources.flagNames?.[path] ? `set by --${sources.flagNames[path]}` : 'set by a flag';
    const vars = Object.entries(ENV_KEYS).filter(([, p]) => p === path).map(([name]) => name);
    if (getPath(fromEnv, path) !== undefined && vars.length) return `from ${vars.join('/')}`;
    return sources.file ? `in ${sources.file}` : 'in the config';
  };
  const unknown = unknownKey(merged);
  if (unknown) throw new ConfigError(`${unknown.message} (${where(unknown.key)})`);
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue.path.join('.');
    const value = getPath(merged, path);
    const shown = value === undefined ? 'nothing' : JSON.stringify(value).slice(0, 80);
    throw new ConfigError(`config key ${path} is ${shown} (${where(path)}): expected ${expectation(issue, path)}`);
  }
  return parsed.data;
}

function coerceFrom(path: string, raw: string, where: string): Json {
  try {
    return coerce(path, raw);
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (${where})`);
  }
}

function getPath(obj: Record<string, Json>, path: string): Json | undefined {
  let node: Json | undefined = obj;
  for (const k of path.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, Json>)[k];
  }
  return node;
}

/** The first key no schema object knows, with a message naming the closest known key; null when all are known. */
function unknownKey(obj: Record<string, Json>, t: z.ZodTypeAny = ConfigSchema, prefix = ''): { key: string; message: string } | null {
  const shape = (unwrap(t) as z.ZodObject<z.ZodRawShape>).shape as Record<string, z.ZodTypeAny>;
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix + k;
    const child = shape[k];
    if (!child) {
      const known = Object.keys(shape);
      const near = known.map((c) => [c, editDistance(c.toLowerCase(), k.toLowerCase())] as const).sort((a, b) => a[1] - b[1])[0];
      const hint = near && near[1] <= Math.max(2, k.length / 3) ? `did you mean "${prefix + near[0]}"? ` : '';
      return { key, message: `unknown config key "${key}": ${hint}known keys${prefix ? ` under ${prefix.slice(0, -1)}` : ''}: ${known.join(', ')}` };
    }
    if (v && typeof v === 'object' && !Array.isArray(v) && unwrap(child) instanceof z.ZodObject) {
      const inner = unknownKey(v as Record<string, Json>, child, `${key}.`);
      if (inner) return inner;
    }
  }
  return null;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/** What the schema wants at `path`, in words. */
function expectation(issue: z.ZodIssue, path: string): string {
  let t: z.ZodTypeAny = ConfigSchema;
  for (const k of path.split('.')) {
    const inner = unwrap(t);
    if (inner instanceof z.ZodObject) t = (inner.shape as Record<string, z.ZodTypeAny>)[k] ?? inner;
    else if (inner instanceof z.ZodArray) t = inner.element;
  }
  const leaf = unwrap(t);
  const nullable = t instanceof z.ZodDefault ? t._def.innerType instanceof z.ZodNullable : t instanceof z.ZodNullable;
  const orNull = nullable ? ' (or null)' : '';
  const noun = leaf instanceof z.ZodNumber ? (leaf.isInt ? 'an integer' : 'a number') : leaf instanceof z.ZodString ? 'a string' : 'a value';
  switch (issue.code) {
    case 'invalid_type': {
      const names: Record<string, string> = { number: 'a number', integer: 'an integer', string: 'a string', boolean: 'true or false', object: 'an object', array: 'a list' };
      return `${issue.expected === 'number' ? noun : (names[issue.expected] ?? issue.expected)}${orNull}`;
    }
    case 'too_small':
    case 'too_big': {
      const op = issue.code === 'too_small' ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      if (issue.type === 'string') return issue.code === 'too_small' && Number(bound) === 1 ? 'a non-empty string' : `a string of ${op} ${bound} characters`;
      if (issue.type === 'array') return `a list of ${op} ${bound} entries`;
      return `${noun} ${op} ${bound}`;
    }
    case 'invalid_enum_value':
      return `one of ${issue.options.join(', ')}`;
    case 'invalid_string':
      return issue.validation === 'url' ? `a URL such as http://host:port/v1${orNull}` : issue.message.replace(/^.* must look like /, '');
    default:
      return issue.message;
  }
}

/** The config with secrets masked, for --print-config and logs. */
export function maskedConfig(cfg: Config): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(cfg)) as Record<string, Json>;
  for (const p of SECRET_PATHS) {
    const keys = p.split('.');
    let node: Record<string, Json> | undefined = copy;
    for (const k of keys.slice(0, -1)) node = node?.[k] as Record<string, Json> | undefined;
    const last = keys[keys.length - 1];
    if (node && node[last] != null) node[last] = '***';
  }
  return copy;
}

/** Hash of what decides curation output (operators, limits, seed), not of where it runs. */
export function configHash(cfg: Config): string {
  const relevant = {
    seed: cfg.seed,
    limits: cfg.limits,
    dedup: cfg.dedup,
    tag: cfg.tag,
    condense: cfg.condense,
    enrich: { ...cfg.enrich, llmApiKey: null },
    mix: cfg.mix,
    balance: cfg.balance,
    softCap: cfg.softCap,
    models: cfg.models,
    output: cfg.output,
    fetch: { enabled: cfg.fetch.enabled, maxRedirects: cfg.fetch.maxRedirects },
    modelVersion: cfg.modelVersion,
  };
  return createHash('sha256').update(JSON.stringify(relevant)).digest('hex').slice(0, 16);
}
