/**
 * `npm run bench -- train`: the cost of one trainer step (forward, backward, Adam) of the built-in CLIP at
 * batch 32 when only the kept patches go through the image tower (FLIP, trainer.ts), against every patch.
 * Median of BENCH_TRAIN_STEPS (default 40) steps per keep ratio, the same images and captions for each.
 */
import { Rng } from '../src/gen/rng';
import { BUILTIN_BUNDLE } from '../src/curate/models';
import { Adam, clipLoss, gatherPatches, imageBackward, imageForwardStem, imageStem, patchCount, patchDim, textBackward, textForward, view } from '../src/train/clip/tiny-clip';
import { loadSamples, tokenizeAll } from '../src/train/clip/train';
import { loadTrainable } from '../src/train/builtin-model';
import { machine, table, writeResult } from './lib';

export async function benchTrain(): Promise<void> {
  const steps = Number(process.env.BENCH_TRAIN_STEPS ?? 40);
  const B = 32;
  const t = await loadTrainable(BUILTIN_BUNDLE);
  const p = t.params;
  const c = p.config;
  const P = patchCount(c);
  const K = patchDim(c);
  const samples = (await loadSamples({ n: 80, seed: 77 })).slice(0, B);
  const X = new Float32Array(B * P * K);
  const prior = new Float32Array(B * P);
  samples.forEach((s, i) => {
    const st = imageStem(c, s.pixels, 1);
    X.set(st.X, i * P * K);
    prior.set(st.prior, i * P);
  });
  const tok = tokenizeAll(samples.map((s) => s.caption), t.vocab, c.context);
  const rows: Record<string, string | number>[] = [];
  const result: Record<string, number> = {};
  for (const keep of [1, 0.5, 0.25]) {
    const rng = new Rng(5);
    const lists = samples.map(() => rng.shuffle(Array.from({ length: P }, (_, j) => j)).slice(0, Math.round(P * keep)).sort((a, b) => a - b));
    const adam = new Adam(p.data.length);
    const params = { ...p, data: Float32Array.from(p.data) };
    const times: number[] = [];
    for (let s = 0; s < steps + 5; s++) {
      const t0 = performance.now();
      const g = gatherPatches(c, { X, prior }, B, lists);
      const img = imageForwardStem(params, g.stem, B, g.mask);
      const txt = textForward(params, tok.ids, tok.mask, B);
      const l = clipLoss(img.embeds, txt.embeds, B, c.embed, view(params, 'logit_scale')[0]!);
      const grad = new Float32Array(params.data.length);
      imageBackward(params, img, l.dImage, grad);
      textBackward(params, txt, l.dText, grad);
      adam.step(params.data, grad, 1e-4);
      if (s >= 5) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    result[`keep_${keep}`] = median;
    rows.push({ keep, patches_per_image: Math.round(P * keep), median_ms_per_step: median.toFixed(2), vs_keep_1: (median / result.keep_1!).toFixed(2) });
  }
  table(`Trainer step, built-in CLIP, batch ${B}, median of ${steps} steps (FLIP: only kept patches through the image tower)`, rows);
  console.log(`-> ${writeResult('train', { machine: machine(), batch: B, steps, medianMsPerStep: result, ratioKeepHalf: result['keep_0.5']! / result.keep_1! })}`);
}
