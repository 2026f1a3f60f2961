/**
 * The curation chain (docs/ARCHITECTURE.md, Stage contracts) as plain lists of operators:
 *   pre:      decode + validate, fetch by URL, decode the image once (with each model's input),
 *             embed (one model pass), choose the kept patches, tag, model-free quality scores, mix
 *             the scores
 *   stateful: the domain check (per-partition window of tag confidences), exact and near duplicates,
 *             concept balancing, soft-cap copies (in that order)
 *   post:     condense and enrich, only for samples that will be written
 * Without a model bundle the model stages (embed, choose patches, tag, condense) are left out; mixing and
 * soft-cap then run on the model-free scores alone.
 */
import type { OperatorFunction } from 'rxjs';
import { map } from 'rxjs';
import sharp from 'sharp';
import type { Config } from '../config/config';
import { choosePatches } from '../operators/choose-patches';
import { condense } from '../operators/condense';
import { decodeEvent } from '../operators/decode-event';
import { decodeImage } from '../operators/decode-image';
import { balance } from '../operators/balance';
import { dedupExact } from '../operators/dedup-exact';
import { dedupNear } from '../operators/dedup-near';
import { domainWatch } from '../operators/domain-watch';
import { embed } from '../operators/embed';
import { enrich } from '../operators/enrich';
import { fetchImages, type ImageFetch } from '../operators/fetch-images';
import { mix } from '../operators/mix';
import { modelNeeds } from '../operators/model-calls';
import { scoreQuality } from '../operators/score-quality';
import type { Batch } from '../operators/sample';
import { softCap } from '../operators/soft-cap';
import type { StateRegistry } from '../operators/state';
import { tag } from '../operators/tag';
import { validateEvent } from '../operators/validate-event';
import type { CrawlEvent } from '../records';
import { recordDomainShare } from '../telemetry/telemetry';
import { LlmClient } from '../text/llm-client';
import type { BundleHolder } from './bundle-holder';
import type { MixWeightsStore } from './mix-weights';

/** enrich's threshold when neither the config nor the bundle sets one */
export const DEFAULT_ENRICH_THRESHOLD = 0.4;

export interface ChainDeps {
  /** wire bytes -> event; absent when the edge hands over parsed events (files) */
  decode?: (bytes: Buffer) => Promise<CrawlEvent>;
  fetch: ImageFetch | null;
  state: StateRegistry;
  /** null: run without model stages */
  bundle: BundleHolder | null;
  weights: MixWeightsStore;
}

export interface Chain {
  /** stages before the stateful section; they keep no state, several batches may be in them at once */
  pre: OperatorFunction<Batch, Batch>;
  /** stages with per-partition state: one batch at a time, its state snapshot taken as it leaves */
  stateful: OperatorFunction<Batch, Batch>;
  /** stateless stages after the stateful section (only for samples that will be written) */
  post: OperatorFunction<Batch, Batch>;
  /**
   * The same stages by what they do, in chain order (pre = read, image, model, score): the throughput
   * bench times each group alone.
   */
  groups: Record<'read' | 'image' | 'model' | 'score' | 'stateful' | 'post', OperatorFunction<Batch, Batch>>;
}

const compose = (stages: OperatorFunction<Batch, Batch>[]): OperatorFunction<Batch, Batch> => (source) =>
  stages.reduce((acc, op) => acc.pipe(op), source);

/** The model stages are done with the batch: its prepared model inputs go now, not when the samples do. */
function releaseInputs(batch: Batch): Batch {
  for (const s of batch.samples) if (s.image) s.image.inputs = null;
  return batch;
}

export function curationChain(cfg: Config, deps: ChainDeps): Chain {
  // every image the chain sees is new: libvips' operation cache would only hold memory (about 20 MB
  // of peak RSS, and a few percent of CPU, on 2,000 generated events)
  sharp.cache(false);
  const l = cfg.limits;
  const holder = deps.bundle;
  // the bundle's calibration sets the defaults of enrichment and soft-cap (flags and config win); a bundle
  // swapped in later keeps the chain's values
  const cal = holder?.current.calibration;
  const read: OperatorFunction<Batch, Batch>[] = [
    decodeEvent({ decode: deps.decode, concurrency: 8 }),
    validateEvent({ maxCaptionChars: l.maxCaptionChars, maxRawCaptionChars: l.maxRawCaptionChars, maxAttrs: l.maxAttrs, maxAttrChars: l.maxAttrChars }),
    fetchImages({ fetch: cfg.fetch.enabled ? deps.fetch : null, concurrency: cfg.fetch.concurrency }),
  ];
  const image: OperatorFunction<Batch, Batch>[] = [
    decodeImage({
      maxImageBytes: l.maxImageBytes,
      maxPixels: l.maxPixels,
      minSide: l.minSide,
      maxAspect: l.maxAspect,
      imageFormat: cfg.output.imageFormat,
      quality: cfg.output.quality,
      concurrency: cfg.concurrency,
      // the bundle's model inputs are prepared here (a bundle swapped in meanwhile prepares them again)
      prepare: holder ? () => modelNeeds(holder.current) : undefined,
    }),
  ];
  const model: OperatorFunction<Batch, Batch>[] = [];
  const score: OperatorFunction<Batch, Batch>[] = [];
  const stateful: OperatorFunction<Batch, Batch>[] = [];
  const post: OperatorFunction<Batch, Batch>[] = [];
  if (holder && cfg.tag.enabled) {
    // first in the stateful section: its per-partition window must see one partition's batches in order,
    // one at a time, and be snapshotted with the others, so a restart or a replay flags the same images
    stateful.push(
      domainWatch({
        domain: (batch) => holder.forBatch(batch).calibration?.domain,
        name: (batch) => holder.forBatch(batch).version,
        onChange: (_, message) => process.stderr.write(`squeeze: warning: ${message}\n`),
        onShare: recordDomainShare,
        state: deps.state,
      }),
    );
  }
  if (cfg.dedup.exact) stateful.push(dedupExact({ memory: cfg.dedup.memory, state: deps.state }));
  if (cfg.dedup.near) {
    const d = cfg.dedup;
    // the bundle's calibration says whether its embedding can confirm near duplicates (else thumbnails do)
    const useEmbeddings = holder !== null && cal?.dedup?.confirm !== 'thumbnails';
    const maxThumbDistance = d.nearThumbDistance ?? cal?.dedup?.maxThumbDistance ?? undefined;
    stateful.push(dedupNear({ maxBits: d.nearMaxBits, eps: d.nearEps, memory: d.nearMemory, useEmbeddings, maxThumbDistance, state: deps.state }));
  }
  if (cfg.balance.enabled) {
    const vocabulary = holder?.current.tags.vocabulary ?? [];
    stateful.push(balance({ tau: cfg.balance.tau, vocabulary, seed: cfg.seed, state: deps.state }));
  }

  if (holder) {
    const bundle = (batch: Batch) => holder.forBatch(batch);
    model.push(
      map((batch) => {
        holder.stamp(batch);
        return batch;
      }),
      embed({ bundle, batchSize: 32 }),
      // the patch choice, once: tag's zero-shot pass encodes it, condense records it
      choosePatches({ rho: cfg.condense.rho, mass: cfg.condense.mass ?? undefined, forceDetections: { minScore: cfg.condense.forceDetectionScore } }),
    );
    if (cfg.tag.enabled) model.push(tag({ bundle, threshold: cfg.tag.threshold ?? undefined, source: cfg.tag.source }));
    model.push(map(releaseInputs));
  }
  score.push(scoreQuality(), mix({ weights: () => deps.weights.current() }));
  if (cfg.softCap.enabled) {
    const sc = cfg.softCap;
    // warm-up: frozen statistics of the mixed score, from the config or the mixing weights (stats.score)
    const frozen = deps.weights.current().stats.score;
    const mean = sc.warmupMean ?? frozen?.mean ?? null;
    const sd = sc.warmupSd ?? frozen?.std ?? null;
    const warmup = sc.warmup > 0 && mean !== null && sd !== null ? { mean, sd, items: sc.warmup } : null;
    stateful.push(
      softCap({ alpha: sc.alpha ?? cal?.softCap?.alpha, rate: sc.rate, mode: sc.mode ?? cal?.softCap?.mode, maxCopies: sc.maxCopies, halfLife: sc.halfLife ?? undefined, seed: cfg.seed, state: deps.state, warmup }),
    );
  }
  if (holder && cfg.condense.enabled) {
    const c = cfg.condense;
    post.push(condense({ blank: c.blank, quality: c.quality }));
  }
  if (cfg.enrich.enabled) {
    const e = cfg.enrich;
    const llm = e.llmUrl
      ? new LlmClient({ baseUrl: e.llmUrl, model: e.llmModel, apiKey: e.llmApiKey ?? undefined, timeoutMs: e.llmTimeoutMs, concurrency: e.llmConcurrency })
      : null;
    post.push(enrich({ threshold: e.threshold ?? cal?.enrich?.threshold ?? DEFAULT_ENRICH_THRESHOLD, llm, maxAdded: e.maxAdded }));
  }
  const groups = { read, image, model, score, stateful, post };
  return { pre: compose([...read, ...image, ...model, ...score]), stateful: compose(stateful), post: compose(post), groups: Object.fromEntries(Object.entries(groups).map(([k, v]) => [k, compose(v)])) as Chain['groups'] };
}
