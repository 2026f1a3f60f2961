/**
 * The curation chain of DESIGN 4 as a plain list of operators. This chain: decode and
 * validate, fetch by URL, decode the image once, exact-duplicate removal. Later stages slot in here.
 */
import type { OperatorFunction } from 'rxjs';
import type { Config } from '../config/config';
import { decodeEvent } from '../operators/decode-event';
import { decodeImage } from '../operators/decode-image';
import { dedupExact } from '../operators/dedup-exact';
import { fetchImages, type ImageFetch } from '../operators/fetch-images';
import type { Batch } from '../operators/sample';
import type { StateRegistry } from '../operators/state';
import { validateEvent } from '../operators/validate-event';
import type { CrawlEvent } from '../records';

export interface ChainDeps {
  decode: (bytes: Buffer) => Promise<CrawlEvent>;
  fetch: ImageFetch | null;
  state: StateRegistry;
}

export interface Chain {
  /** stages before the stateful section; they keep no state, several batches may be in them at once */
  pre: OperatorFunction<Batch, Batch>;
  /** stages with per-partition state: one batch at a time, its state snapshot taken as it leaves */
  stateful: OperatorFunction<Batch, Batch>;
  /** stateless stages after the stateful section (only for samples that will be written) */
  post: OperatorFunction<Batch, Batch>;
}

const compose = (stages: OperatorFunction<Batch, Batch>[]): OperatorFunction<Batch, Batch> => (source) =>
  stages.reduce((acc, op) => acc.pipe(op), source);

export function curationChain(cfg: Config, deps: ChainDeps): Chain {
  const l = cfg.limits;
  const pre: OperatorFunction<Batch, Batch>[] = [
    decodeEvent({ decode: deps.decode, concurrency: 8 }),
    validateEvent({ maxCaptionChars: l.maxCaptionChars }),
    fetchImages({ fetch: cfg.fetch.enabled ? deps.fetch : null, concurrency: cfg.fetch.concurrency }),
    decodeImage({
      maxImageBytes: l.maxImageBytes,
      maxPixels: l.maxPixels,
      minSide: l.minSide,
      maxAspect: l.maxAspect,
      imageFormat: cfg.output.imageFormat,
      quality: cfg.output.quality,
      concurrency: cfg.concurrency,
    }),
  ];
  const stateful: OperatorFunction<Batch, Batch>[] = [];
  if (cfg.dedup.exact) stateful.push(dedupExact({ memory: cfg.dedup.memory, state: deps.state }));
  const post: OperatorFunction<Batch, Batch>[] = [];
  return { pre: compose(pre), stateful: compose(stateful), post: compose(post) };
}

