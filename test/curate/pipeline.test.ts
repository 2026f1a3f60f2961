/**
 * The curation chain as curate builds it (pipeline.ts) with a bundle in the layout of a real CLIP export
 * (shortest-crop preprocessing, no detector): what the curator scores is what a direct call of the same
 * bundle on the same stored image and caption gives.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { firstValueFrom, of } from 'rxjs';
import sharp from 'sharp';
import { loadConfig } from '../../src/config/config';
import { BundleHolder } from '../../src/curate/bundle-holder';
import { MixWeightsStore } from '../../src/curate/mix-weights';
import { curationChain } from '../../src/curate/pipeline';
import { loadBundle } from '../../src/models/bundle';
import { prepareImages } from '../../src/models/preprocess';
import { cosine } from '../../src/operators/model-calls';
import { newSample } from '../../src/operators/sample';
import { StateRegistry } from '../../src/operators/state';
import type { CrawlEvent } from '../../src/records';
import { clipBundleDir, photo, removeBundles, SHARED } from '../helpers/clip-bundle';
import { event } from '../helpers/samples';

after(removeBundles);

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test('a real-CLIP-layout bundle scores the same in the curation chain as in a direct call on the same image', async () => {
  const bundle = await loadBundle(await clipBundleDir(), { threads: 1 });
  const holder = new BundleHolder(bundle);
  try {
    const images: { id: string; bytes: Buffer; caption: string }[] = [
      { id: 'png', bytes: await photo(), caption: 'a photo of a cat' },
      { id: 'tall', bytes: await sharp({ create: { width: 240, height: 520, channels: 3, background: '#a05030' } }).jpeg().toBuffer(), caption: 'a photo of a dog on a red wall' },
    ];
    const coco = join(SHARED, 'data/coco/images/val2017/000000397133.jpg');
    if (existsSync(coco)) images.push({ id: 'coco', bytes: readFileSync(coco), caption: 'a man is in a kitchen making pizzas' });
    else console.log('skipped the real photo: ../shared/data/coco absent');
    const events = new Map<string, CrawlEvent>(images.map((i) => [i.id, event(i.id, { image: i.bytes, caption: i.caption })]));
    const cfg = loadConfig({});
    const chain = curationChain(cfg, {
      decode: async (raw) => events.get(raw.toString())!,
      fetch: null,
      state: new StateRegistry(),
      bundle: holder,
      weights: new MixWeightsStore(),
    });
    const samples = images.map((img, k) => newSample({ topic: 't', partition: 0, offset: k }, Buffer.from(img.id)));
    const out = await firstValueFrom(of({ topic: 't', partition: 0, samples }).pipe(chain.pre));
    for (const s of out.samples) {
      assert.equal(s.outcome.kind, 'keep', JSON.stringify(s.outcome));
      assert.equal(s.image!.inputs, null, 'the prepared inputs are released after the model stages');
      const [direct] = await bundle.vision.encode(await prepareImages([s.image!.bytes], bundle.vision.preprocess));
      const [text] = await bundle.text.encode([s.caption]);
      // the same up to float rounding of a batch of three against a batch of one
      assert.ok(maxDiff(s.model!.imageEmbedding, direct.embedding) < 1e-5, `${s.event!.id}: the same image embedding`);
      assert.ok(maxDiff(s.model!.saliency, direct.saliency) < 1e-5, `${s.event!.id}: the same saliency`);
      assert.ok(Math.abs(s.scores.clip_score - cosine(direct.embedding, text)) < 1e-5, `${s.event!.id}: clip_score ${s.scores.clip_score} against ${cosine(direct.embedding, text)} directly`);
      assert.ok(s.patches && s.patches.kept.length === Math.ceil(0.5 * 49), 'the patch choice is made once, at the condense share');
    }
  } finally {
    await holder.close();
  }
});
