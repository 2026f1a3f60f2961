/**
 * Every flag, once: which commands take it, which config path it sets, and its help line.
 * `--help` is generated from this table, so it cannot drift from what is parsed.
 */
export interface FlagSpec {
  name: string;
  /** dotted config path, or a command-local key starting with '@' */
  path: string;
  type: 'string' | 'boolean' | 'list';
  help: string;
  /** what the flag means for one command, where that differs from `help` */
  helpFor?: Record<string, string>;
  commands: string[];
  arg?: string;
}

const ALL = ['curate', 'produce', 'replay', 'control'];
const KAFKA_CLIENTS = [...ALL, 'train'];
const TRAIN = ['train'];
const CURATE = ['curate', 'replay'];

export const FLAGS: FlagSpec[] = [
  { name: 'config', path: '@config', type: 'string', arg: 'FILE', help: 'JSON config file (defaults < file < SQUEEZE_* env < flags)', commands: KAFKA_CLIENTS },
  { name: 'brokers', path: 'brokers', type: 'list', arg: 'H:P,...', help: 'Kafka bootstrap servers', helpFor: { curate: 'Kafka bootstrap servers; without it curate runs embedded (--input or --demo)' }, commands: KAFKA_CLIENTS },
  { name: 'registry', path: 'registry', type: 'string', arg: 'URL', help: 'schema registry URL (Confluent API, e.g. Apicurio .../apis/ccompat/v7)', commands: KAFKA_CLIENTS },
  { name: 'topic', path: 'topic', type: 'string', arg: 'T', help: 'input topic of raw crawl events (default crawl.raw)', commands: ALL },
  { name: 'group', path: 'group', type: 'string', arg: 'G', help: 'consumer group (default squeeze-curator)', commands: ['curate'] },
  { name: 'connect-timeout-ms', path: 'connectTimeoutMs', type: 'string', arg: 'MS', help: 'give up reaching Kafka or the schema registry after MS with one line naming the address and cause (default 10000)', commands: KAFKA_CLIENTS },
  { name: 'partitions', path: 'kafka.partitions', type: 'string', arg: 'N', help: 'partitions when squeeze creates a topic (default 6)', commands: ALL },
  { name: 'input', path: 'input', type: 'string', arg: 'PATH', help: 'JSONL file, WebDataset .tar (or dir of them), or Parquet url/caption metadata', helpFor: { report: 'a curated output: a directory or s3://bucket/prefix' }, commands: ['curate', 'produce', 'report'] },
  { name: 'image-root', path: 'imageRoot', type: 'string', arg: 'DIR', help: 'JSONL image_path values are relative to DIR and must stay inside it (symlinks within it are fine); default: the JSONL file\'s directory', commands: ['curate', 'produce'] },
  { name: 'demo-kind', path: 'demoKind', type: 'string', arg: 'K', help: 'photos (the default: real photos, from a shared/ data directory when present, else the COCO photos in examples/photos), examples (those COCO photos) or generated (synthetic shapes, run with the shapes bundle)', commands: ['curate'] },
  { name: 'demo', path: 'demo', type: 'string', arg: 'N', help: 'curate N demo events (embedded, no input needed): real photos with human captions and crawl noise (--demo-kind)', commands: ['curate'] },
  { name: 'out', path: 'out', type: 'string', arg: 'PATH', help: 'where shards, dead letters and commit records go, a directory or s3://bucket/prefix (docs/OBJECT-STORE.md)', helpFor: { gen: 'the JSONL file to write', 'build-model': 'the bundle directory to write', report: 'the HTML file to write', export: 'the directory the tars, their metadata and manifest.json go to (an export writes only into an empty directory or its own)' }, commands: [...CURATE, 'gen', 'build-model', 'report', 'export'] },
  { name: 'models', path: 'models', type: 'string', arg: 'DIR', help: 'model bundle: a directory, "photo" (default: real-photo towers + YOLOX-nano), "builtin-shapes" (the generated crawl\'s tiny CLIP) or "none" (no model stages)', commands: CURATE },
  { name: 'detector', path: 'detector', type: 'string', arg: 'FILE', help: 'a YOLOX ONNX file (classes file beside it: coco_classes.txt, classes.txt or <name>.classes.txt) that adds or replaces the bundle\'s detector', commands: CURATE },
  { name: 'threads', path: 'threads', type: 'string', arg: 'N', help: 'onnxruntime threads per model (default 2)', commands: CURATE },
  { name: 'inference', path: 'inference', type: 'string', arg: 'WHERE', help: 'worker (default: each model runs in its own thread, beside decoding and Parquet encoding) or main (on the event loop)', commands: CURATE },
  { name: 'rho', path: 'condense.rho', type: 'string', arg: 'R', help: 'share of image patches kept (default 0.5): condense records them, zero-shot tags are computed on them', commands: CURATE },
  { name: 'blank', path: 'condense.blank', type: 'boolean', help: 'paint the dropped patches in stored images (about 38% fewer bytes; trainers then see only the kept patches)', helpFor: { export: 'paint the dropped patches in the exported images, for trainers that cannot use kept_patches' }, commands: [...CURATE, 'export'] },
  { name: 'no-blank', path: '@no-blank', type: 'boolean', help: 'store images whole (the default); kept_patches lists the kept patches', commands: CURATE },
  { name: 'no-condense', path: '@no-condense', type: 'boolean', help: 'skip token condensation', commands: CURATE },
  { name: 'no-tag', path: '@no-tag', type: 'boolean', help: 'skip tagging', commands: CURATE },
  { name: 'tag-threshold', path: 'tag.threshold', type: 'string', arg: 'T', help: 'confidence a tag needs (default: the bundle\'s)', commands: CURATE },
  { name: 'enrich-threshold', path: 'enrich.threshold', type: 'string', arg: 'T', help: 'confidence a tag needs before enrich names it in the caption (default: the bundle\'s calibrated threshold, 0.853 for photo; else 0.4)', commands: CURATE },
  { name: 'no-enrich', path: '@no-enrich', type: 'boolean', help: 'keep captions as crawled', commands: CURATE },
  { name: 'llm-url', path: 'enrich.llmUrl', type: 'string', arg: 'URL', help: 'OpenAI-compatible endpoint that rewrites captions (key in SQUEEZE_LLM_API_KEY)', commands: CURATE },
  { name: 'llm-model', path: 'enrich.llmModel', type: 'string', arg: 'NAME', help: 'model name sent to --llm-url', commands: CURATE },
  { name: 'no-near-dedup', path: '@no-near-dedup', type: 'boolean', help: 'keep near duplicates (exact ones are still removed)', commands: CURATE },
  { name: 'no-balance', path: '@no-balance', type: 'boolean', help: 'skip concept balancing', commands: CURATE },
  { name: 'balance-tau', path: 'balance.tau', type: 'string', arg: 'N', help: 'per-concept cap of concept balancing (default 1000)', commands: CURATE },
  { name: 'mix-weights', path: 'mix.weightsFile', type: 'string', arg: 'FILE', help: 'JSON {version, weights, bias, stats} for the mixed score', commands: CURATE },
  { name: 'no-soft-cap', path: '@no-soft-cap', type: 'boolean', help: 'one copy of every sample instead of soft-cap sampling', commands: CURATE },
  { name: 'alpha', path: 'softCap.alpha', type: 'string', arg: 'A', help: 'soft-cap repetition penalty (default: the bundle\'s calibrated alpha; else 0.15)', commands: CURATE },
  { name: 'rate', path: 'softCap.rate', type: 'string', arg: 'R', help: 'soft-cap target copies per input (default 1)', commands: CURATE },
  { name: 'copies-mode', path: 'softCap.mode', type: 'string', arg: 'M', help: 'faithful | systematic draw of copies (default: the bundle\'s calibrated mode; else faithful)', commands: CURATE },
  { name: 'embeddings', path: 'output.embeddings', type: 'boolean', help: 'write image_embedding and text_embedding columns', commands: CURATE },
  { name: 'kind', path: '@kind', type: 'string', arg: 'K', help: 'photo (default: the real-photo bundle of models/photo, needs a shared/ data directory) or shapes (the generated crawl\'s tiny CLIP, models/builtin)', commands: ['build-model'] },
  { name: 'seed', path: 'seed', type: 'string', arg: 'S', help: 'seed for generated data, sampling and model training (default 7)', commands: ['curate', 'replay', 'gen', 'build-model', 'train'] },
  { name: 'batch-size', path: 'batchSize', type: 'string', arg: 'N', help: 'records per batch through the operators (default 128)', commands: CURATE },
  { name: 'concurrency', path: 'concurrency', type: 'string', arg: 'N', help: 'images decoded at once within a batch (default 4)', commands: CURATE },
  { name: 'shard-rows', path: 'shard.maxRows', type: 'string', arg: 'N', help: 'rows per shard before it closes (default 1000)', commands: CURATE },
  { name: 'shard-bytes', path: 'shard.maxBytes', type: 'string', arg: 'N', help: 'bytes per shard before it closes (default 64 MiB)', commands: CURATE },
  { name: 'shard-age-ms', path: 'shard.maxAgeMs', type: 'string', arg: 'MS', help: 'close a shard at the first batch after it has been open this long (default 30000), so slow streams commit', commands: CURATE },
  { name: 'idle-ms', path: 'shard.idleMs', type: 'string', arg: 'MS', help: 'close a partition\'s shard after this long without input (default 5000)', commands: CURATE },
  { name: 'dedup-memory', path: 'dedup.memory', type: 'string', arg: 'N', help: 'pixel hashes remembered per partition (default 100000)', commands: CURATE },
  { name: 'no-dedup', path: '@no-dedup', type: 'boolean', help: 'keep exact duplicates', commands: CURATE },
  { name: 'image-format', path: 'output.imageFormat', type: 'string', arg: 'F', help: 'keep | jpeg | webp for stored images (default keep: JPEG/WebP as-is)', commands: CURATE },
  { name: 'allow-host', path: 'fetch.allowHosts', type: 'list', arg: 'HOST', help: 'host allowed for image_url fetches even if private/loopback', commands: CURATE },
  { name: 'no-fetch', path: '@no-fetch', type: 'boolean', help: 'never fetch image_url; such events become missing_image', commands: CURATE },
  { name: 'fresh', path: '@fresh', type: 'boolean', help: 'start over: delete --out first (only a directory Squeeze wrote)', commands: ['curate'] },
  { name: 'drain', path: 'drain', type: 'boolean', help: 'Kafka: exit 0 once every partition is committed up to its end', commands: ['curate'] },
  { name: 'kafka-retry-ms', path: 'kafka.retryForMs', type: 'string', arg: 'MS', help: 'how long to ride out unreachable brokers, retrying with backoff, before exiting (default 300000)', commands: CURATE },
  { name: 'session-timeout-ms', path: 'kafka.sessionTimeoutMs', type: 'string', arg: 'MS', help: 'consumer group session timeout: the partitions of a killed member wait this long before another member takes them (default 10000)', commands: CURATE },
  { name: 'from', path: '@from', type: 'string', arg: 'TIME|OFFSETS', help: 'replay start: ISO time, epoch ms, an offset, or p:o,p:o', commands: ['replay'] },
  { name: 'to', path: '@to', type: 'string', arg: 'TIME|OFFSETS', help: 'replay end (exclusive); default: the end of each partition now', commands: ['replay'] },
  { name: 'state-from', path: '@state-from', type: 'string', arg: 'DIR|URL', help: 'replay: restore operator state from this earlier output (a directory or s3://bucket/prefix)', commands: ['replay'] },
  { name: 'control-topic', path: 'kafka.controlTopic', type: 'string', arg: 'T', help: 'compacted topic of mixing weights and model versions (default squeeze.control)', commands: ['curate', 'control', 'train'] },
  { name: 'weights', path: '@weights', type: 'string', arg: 'JSON', help: 'mixing weights to publish, e.g. {"clip_score":1.5}', commands: ['control'] },
  { name: 'bias', path: '@bias', type: 'string', arg: 'B', help: 'mixing bias to publish with --weights (default 0)', commands: ['control'] },
  { name: 'model-version', path: '@model-version', type: 'string', arg: 'V', help: 'model version to announce', commands: ['control'] },
  { name: 'bundle', path: '@bundle', type: 'string', arg: 'DIR', help: 'bundle directory of the announced model version', commands: ['control'] },
  { name: 'shards', path: '@shards', type: 'string', arg: 'DIR|URL', help: 'train: the curated output whose committed shards it follows, a directory or s3://bucket/prefix (required)', helpFor: { export: 'the curated output whose committed rows to export, a directory or s3://bucket/prefix (required)' }, commands: [...TRAIN, 'export'] },
  { name: 'checkpoints', path: '@checkpoints', type: 'string', arg: 'DIR', help: 'train: checkpoint directory; a restart resumes from its newest checkpoint (default ./squeeze-trainer)', commands: TRAIN },
  { name: 'base', path: '@base', type: 'string', arg: 'DIR', help: 'train: the bundle to continue without a checkpoint: "builtin-shapes" (default) or a bundle directory it published', commands: TRAIN },
  { name: 'until', path: '@until', type: 'string', arg: 'N', help: 'train: stop at step N (default: at the end of the committed shards, or never with --follow)', commands: TRAIN },
  { name: 'follow', path: '@follow', type: 'boolean', help: 'train: keep polling for new commits (SIGINT/SIGTERM stop it after a checkpoint)', helpFor: { export: 'keep polling for new commits and export them as they come (SIGINT/SIGTERM stop it between tars)' }, commands: [...TRAIN, 'export'] },
  { name: 'passes', path: '@passes', type: 'string', arg: 'N', help: 'train: passes (epochs) over the committed shards before the end of input (default 1)', commands: TRAIN },
  { name: 'poll-ms', path: '@poll-ms', type: 'string', arg: 'MS', help: 'train --follow: wait between polls of the commit records (default 2000)', helpFor: { export: 'export --follow: wait between polls of the commit records (default 2000)' }, commands: [...TRAIN, 'export'] },
  { name: 'format', path: '@format', type: 'string', arg: 'F', help: 'webdataset (default): tars of <key>.jpg/.txt/.json as img2dataset writes them, for open_clip and the webdataset package; uids: a .npy of DataComp uids (copies as repeats) for DataComp\'s resharder, --out FILE.npy', commands: ['export'] },
  { name: 'samples-per-tar', path: '@samples-per-tar', type: 'string', arg: 'N', help: 'a tar closes at the first commit record that brings it to N samples, copies counted (default 1000)', commands: ['export'] },
  { name: 'train-batch', path: '@train-batch', type: 'string', arg: 'N', help: 'train: samples per step (default 32)', commands: TRAIN },
  { name: 'lr', path: '@lr', type: 'string', arg: 'LR', help: 'train: Adam learning rate (default 0.0005)', commands: TRAIN },
  { name: 'replay-share', path: '@replay-share', type: 'string', arg: 'F', help: 'train: share of each batch drawn from the replay buffer (default 0.25)', commands: TRAIN },
  { name: 'replay-capacity', path: '@replay-capacity', type: 'string', arg: 'N', help: 'train: samples the replay buffer holds (default 2048)', commands: TRAIN },
  { name: 'no-flip', path: '@no-flip', type: 'boolean', help: 'train: feed every patch instead of only the kept ones', commands: TRAIN },
  { name: 'full-every', path: '@full-every', type: 'string', arg: 'N', help: 'train: every Nth step feeds every patch (FLIP unmasked steps; 0 never, default 5)', commands: TRAIN },
  { name: 'checkpoint-every', path: '@checkpoint-every', type: 'string', arg: 'N', help: 'train: steps between checkpoints (default 10)', commands: TRAIN },
  { name: 'eval-every', path: '@eval-every', type: 'string', arg: 'N', help: 'train: steps between held-out evaluations, 0 for none (default 50)', commands: TRAIN },
  { name: 'held-out', path: '@held-out', type: 'string', arg: 'N', help: 'train: held-out images for recall and zero-shot accuracy (default 256)', commands: TRAIN },
  { name: 'publish-every', path: '@publish-every', type: 'string', arg: 'K', help: 'train: write a bundle version every K steps and announce it on the control topic with --brokers (default 0: never)', commands: TRAIN },
  { name: 'publish-dir', path: '@publish-dir', type: 'string', arg: 'DIR', help: 'train: where published bundles go (default <checkpoints>/bundles); curators must be able to read it', commands: TRAIN },
  { name: 'feedback-every', path: '@feedback-every', type: 'string', arg: 'N', help: 'train: fit mixing weights from gradient alignment every N steps; with --brokers, announce them on the control topic (default 0: off)', commands: TRAIN },
  { name: 'trainer', path: '@trainer', type: 'string', arg: 'DIR', help: 'report: a squeeze train checkpoint directory whose held-out evaluations are drawn as learning curves', commands: ['report'] },
  { name: 'trace-url', path: '@trace-url', type: 'string', arg: 'URL', help: 'report: traced rows link to URL + trace id (default http://localhost:16686/trace/, Jaeger\'s UI)', commands: ['report'] },
  { name: 'n', path: '@n', type: 'string', arg: 'N', help: 'number of events to generate', helpFor: { report: 'rows in the gallery (default 48)' }, commands: ['gen', 'report'] },
  { name: 'limit', path: '@limit', type: 'string', arg: 'N', help: 'publish at most N records', commands: ['produce'] },
  { name: 'prometheus-port', path: 'telemetry.prometheusPort', type: 'string', arg: 'PORT', help: 'serve Prometheus metrics on HOST:PORT/metrics (HOST from --prometheus-host)', commands: [...CURATE, 'train'] },
  { name: 'prometheus-host', path: 'telemetry.prometheusHost', type: 'string', arg: 'HOST', help: 'address the metrics endpoint binds (default 127.0.0.1; 0.0.0.0 in a container)', commands: [...CURATE, 'train'] },
  { name: 'traces', path: 'telemetry.traces', type: 'string', arg: 'none|console|otlp', help: 'span export (default none); otlp: OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318)', commands: [...CURATE, 'produce', 'train'] },
  { name: 'trace-ratio', path: 'telemetry.traceRatio', type: 'string', arg: 'R', help: 'share of traces sampled where the record carries no decision (default 0.1)', commands: [...CURATE, 'produce', 'train'] },
  { name: 'metrics', path: 'telemetry.metrics', type: 'string', arg: 'none|otlp', help: 'otlp: also push metrics over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (default none)', commands: [...CURATE, 'train'] },
  { name: 'progress', path: 'progress', type: 'string', arg: 'MODE', help: 'auto | tty | json | off (default auto: a live line on a TTY, JSON lines otherwise)', commands: KAFKA_CLIENTS },
  { name: 'print-config', path: '@print-config', type: 'boolean', help: 'print the effective config (secrets masked) and exit', commands: KAFKA_CLIENTS },
  { name: 'verbose', path: 'verbose', type: 'boolean', help: 'stack traces and client logs on errors', commands: [...ALL, 'gen', 'train'] },
];

export const COMMANDS: Record<string, string> = {
  curate: 'curate a topic (with --brokers) or a file / the demo (embedded) into Parquet shards',
  produce: 'publish a file dataset to a topic as Avro crawl events',
  gen: 'write a synthetic noisy crawl with ground truth as JSONL: --out FILE --n N [--seed S]',
  replay: 're-curate a time or offset range of a topic into a new output directory',
  'build-model': 'train and export a model bundle (deterministic): --out DIR [--kind photo|shapes] [--seed S]',
  control: 'publish mixing weights or a model version on the control topic (as the trainer does)',
  train: 'follow committed shards and continue training the built-in CLIP; checkpoints, publishes bundles and mixing weights: --shards DIR',
  report: 'an HTML page of a curated output: accounting, score histograms, condensed images with kept patches: --input DIR --out FILE',
  export: 'the committed rows of a curated output as WebDataset tars for open_clip (copies as samples, incremental) or DataComp uids: --shards DIR --format webdataset|uids --out DIR|FILE.npy',
};

export function helpText(command?: string): string {
  const lines: string[] = [];
  if (!command) {
    lines.push('usage: squeeze <command> [flags]', '', 'commands:');
    for (const [c, h] of Object.entries(COMMANDS)) lines.push(`  ${c.padEnd(9)} ${h}`);
    lines.push('', 'Run `squeeze <command> --help` for its flags, `squeeze --version` for the version. `npm start` curates a small embedded demo.');
    return lines.join('\n');
  }
  lines.push(`usage: squeeze ${command} [flags]`, `  ${COMMANDS[command]}`, '', 'flags:');
  for (const f of FLAGS.filter((x) => x.commands.includes(command))) {
    lines.push(`  ${`--${f.name}${f.arg ? ` ${f.arg}` : ''}`.padEnd(30)} ${f.helpFor?.[command] ?? f.help}`);
  }
  lines.push(`  ${'--help'.padEnd(30)} this text`);
  return lines.join('\n');
}
