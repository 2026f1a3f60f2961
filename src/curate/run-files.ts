/**
 * Embedded mode (no services): a file dataset or the built-in demo is curated into a local output
 * directory (or an object store). The file readers parse each record into an event themselves and hand it
 * to the curator with the record it came from (a JSONL line, a tar sample's .json, a Parquet row), which
 * a dead letter keeps. Re-running over the same --out resumes after the last commit record.
 */
import { openShardStore } from '../streams/shards/shard-store';
import { basename } from 'node:path';
import type { Config } from '../config/config';
import { generateCrawl } from '../gen';
import { sharedDir } from '../streams/files/shared-photos';
import { examplePhotos, photoDemoEvents } from './photo-demo';
import type { CrawlEvent } from '../records';
import { openFileSource } from '../streams/files/file-source';
import { type FileRecord, type InputMeter } from '../streams/files/file-record';
import { createImageFetcher } from '../streams/fetch/safe-fetch';
import { Curator, type Inbound } from './curator';
import { modelNotice, openModels, openWeights } from './models';

export interface FileRunOptions {
  /** called every second and after each commit, with how much of the input has been read */
  onProgress?: (curator: Curator, input: InputMeter) => void;
}

export async function curateFiles(given: Config, opts: FileRunOptions = {}): Promise<Curator> {
  const demo = given.input ? null : demoSource(given);
  const cfg = demo?.cfg ?? given;
  const topic = cfg.input ? basename(cfg.input) : 'demo';
  const meter: InputMeter = cfg.input ? { done: 0, total: 0, unit: 'bytes' } : { done: 0, total: cfg.demo ?? 200, unit: 'events' };
  // open the input first: a wrong path is the user's mistake to hear about before anything loads
  const records: AsyncIterable<FileRecord> = cfg.input
    ? openFileSource(cfg.input, { maxRecordBytes: cfg.limits.maxRecordBytes, maxImageBytes: cfg.limits.maxImageBytes }, { imageRoot: cfg.imageRoot, meter })
    : demoRecords(topic, demo!.events);
  const store = await openShardStore(cfg.out!);
  const bundle = await openModels(cfg);
  // the demo's first line says what it curates, then the note on the model
  if (demo) process.stderr.write(`squeeze: demo: ${demo.what}\n`);
  const notice = modelNotice(cfg, bundle);
  if (notice) process.stderr.write(`${notice}\n`);
  const curator = new Curator(cfg, { fetch: makeFetcher(cfg), bundle, weights: openWeights(cfg, bundle), store });
  const next = (await curator.assign(topic, 0)) ?? 0;
  const progress = (): void => opts.onProgress?.(curator, meter);
  // a line after each commit as well as every second, so progress never lags the commit records
  curator.stats.onCommitted = progress;
  const timer = opts.onProgress ? setInterval(progress, 1000) : null;
  try {
    let batch: Inbound[] = [];
    for await (const r of records) {
      if (!cfg.input) meter.done = r.coord.offset + 1;
      if (r.coord.offset < next) continue;
      batch.push(toInbound(r));
      if (batch.length >= cfg.batchSize) {
        await curator.push(topic, 0, batch);
        batch = [];
      }
    }
    await curator.push(topic, 0, batch);
    await curator.flush();
    await curator.close();
  } finally {
    if (timer) clearInterval(timer);
    await bundle?.close();
  }
  return curator;
}

export function makeFetcher(cfg: Config) {
  if (!cfg.fetch.enabled) return null;
  const fetcher = createImageFetcher({
    timeoutMs: cfg.fetch.timeoutMs,
    maxBytes: cfg.limits.maxImageBytes,
    maxRedirects: cfg.fetch.maxRedirects,
    allowHosts: cfg.fetch.allowHosts,
    userAgent: cfg.fetch.userAgent,
  });
  return fetcher;
}

function toInbound(r: FileRecord): Inbound {
  if (r.error || !r.event) {
    return { coord: r.coord, value: r.raw, rejected: r.error ?? { reason: 'schema_error', message: 'unreadable record' } };
  }
  return { coord: r.coord, value: r.raw, event: r.event };
}

/**
 * The demo's events: real photos with human captions, from a shared/ data directory when one is present,
 * else (or with `--demo-kind examples`) the COCO photos shipped in examples/photos; the generated crawl
 * with `--demo-kind generated` (which
 * the photo bundle does not know: without --models the generated demo runs on builtin-shapes).
 */
export function demoSource(cfg: Config): { events: AsyncIterable<CrawlEvent> | Iterable<CrawlEvent>; what: string; cfg: Config } {
  const n = cfg.demo ?? 200;
  const shared = cfg.demoKind === 'generated' || cfg.demoKind === 'examples' ? null : sharedDir();
  const models = (dflt: string) => cfg.models ?? dflt;
  if (shared) {
    return { events: photoDemoEvents(shared, n, cfg.seed), what: `${n} events from real photos with human captions in ${shared}/data (a quarter with another photo's caption); models: ${models('photo')}`, cfg };
  }
  const examples = cfg.demoKind === 'generated' ? [] : examplePhotos();
  if (examples.length >= 2) {
    return {
      events: photoDemoEvents(examples, n, cfg.seed, { brokenEvery: 50 }),
      what: `${n} events from the ${examples.length} real COCO photos in examples/photos (CC BY 2.0, see its ATTRIBUTION.md) with their human captions; a quarter carry another photo's caption, some repeat a photo, one in fifty is cut short; models: ${models('photo')}`,
      cfg,
    };
  }
  if (cfg.demoKind === 'photos' || cfg.demoKind === 'examples') throw new Error(`--demo-kind ${cfg.demoKind} needs the example photos (examples/photos)${cfg.demoKind === 'photos' ? ' or a shared/ data directory (SQUEEZE_SHARED)' : ''}`);
  return { events: generateCrawl({ n, seed: cfg.seed }), what: `${n} generated events (synthetic shapes; models: ${models('builtin-shapes')})`, cfg: { ...cfg, models: models('builtin-shapes') } };
}

async function* demoRecords(topic: string, events: AsyncIterable<CrawlEvent> | Iterable<CrawlEvent>): AsyncGenerator<FileRecord> {
  let offset = 0;
  for await (const event of events) {
    // what a dead letter keeps of a demo event: the event as JSON, its image as a byte count
    const raw = Buffer.from(JSON.stringify({ ...event, image: event.image ? `<${event.image.length} bytes>` : null }));
    yield { coord: { topic, partition: 0, offset: offset++ }, event, error: null, raw };
  }
}
