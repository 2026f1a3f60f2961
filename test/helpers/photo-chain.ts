/**
 * The model part of the curation chain on hand-made events, for tests of a real bundle: decode the image,
 * embed, choose patches, tag, domain check, condense and enrich, as curate runs them (pipeline.ts), without Kafka or files.
 */
import { firstValueFrom, from, toArray } from 'rxjs';
import type { ModelBundle } from '../../src/models/types';
import { choosePatches } from '../../src/operators/choose-patches';
import { condense } from '../../src/operators/condense';
import { modelNeeds } from '../../src/operators/model-calls';
import { decodeImage } from '../../src/operators/decode-image';
import { domainWatch } from '../../src/operators/domain-watch';
import { embed } from '../../src/operators/embed';
import { enrich } from '../../src/operators/enrich';
import { type Batch, newSample } from '../../src/operators/sample';
import { tag } from '../../src/operators/tag';
import { event } from './samples';

export interface ChainRun {
  batches: Batch[];
  /** the domain check's messages, in order, with the state they announce */
  domain: { out: boolean; message: string }[];
}

export async function runModelChain(bundle: ModelBundle, items: { image: Buffer; caption: string }[], opts: { enrichThreshold?: number; batch?: number } = {}): Promise<ChainRun> {
  const size = opts.batch ?? 16;
  const batches: Batch[] = [];
  for (let i = 0; i < items.length; i += size) {
    const samples = items.slice(i, i + size).map((it, k) => {
      const s = newSample({ topic: 't', partition: 0, offset: i + k }, Buffer.from('raw'));
      s.event = event(`e${i + k}`, { image: it.image, caption: it.caption });
      s.caption = it.caption;
      return s;
    });
    batches.push({ topic: 't', partition: 0, samples });
  }
  const domain: ChainRun['domain'] = [];
  const out = await firstValueFrom(
    from(batches).pipe(
      decodeImage({ maxImageBytes: 20 << 20, maxPixels: 40_000_000, minSide: 16, maxAspect: 8, imageFormat: 'keep', quality: 85, prepare: () => modelNeeds(bundle) }),
      embed({ bundle }),
      choosePatches({ rho: 0.5, forceDetections: { minScore: 0.5 } }),
      tag({ bundle }),
      domainWatch({ domain: () => bundle.calibration?.domain, onChange: (o, message) => domain.push({ out: o, message }) }),
      condense({ blank: false }),
      enrich({ threshold: opts.enrichThreshold ?? bundle.calibration?.enrich?.threshold ?? 0.4 }),
      toArray(),
    ),
  );
  return { batches: out, domain };
}
