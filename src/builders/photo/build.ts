/**
 * Builds the photo bundle (the default): the real SqueezeNet 1.1 as a locked image tower with a class-
 * activation saliency (squeezenet-tower.ts), a word-level text tower trained against it LiT-style on real
 * human captions (lit.ts), and the real YOLOX-nano detector for tags and enrichment. Everything is
 * calibrated on the `cal` split of the photos (data.ts) and recorded in bundle.json; the `eval` split is
 * left for `npm run bench -- photos`.
 *
 * Inputs: a shared/ data directory with data/flickr8k, data/coco and models/{squeezenet_fp16,yolox_nano}.
 * Deterministic from the seed (fixed data order, seeded draws, fixed summation order); the version is
 * `photo-lit-1-<sha256 of the two tower files, 8 hex>`.
 *
 * @example
 * await buildPhotoBundle('./models/photo', { shared: sharedDir()!, onProgress: console.log });
 */
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Graph } from '../../models/onnx/graph';
import { mentions } from '../../text/english';
import { openSession } from '../../models/session';
import { prepareImage } from '../../models/preprocess';
import { WordTokenizer } from '../../models/word-tokenizer';
import { YoloxDetector } from '../../models/yolox';
import { calibrateEnrichThreshold, calibrateThumbDistance, cocoNames, meanStd, nearDuplicateForms, rocAuc, round, tuneSoftCap } from './calibrate';
import { loadPhotos } from '../../streams/files/shared-photos';
import { PHOTO_PREPROCESS, photoFeatures } from './features';
import { encodeFeatures, encodeTokens, type LitParams, trainLit } from './lit';
import { buildSqueezeNetTower, FEATURE_DIM, PHOTO_VISION_IO, SQUEEZENET } from './squeezenet-tower';

export const PHOTO_MODEL_NAME = 'photo-lit-1';

const NOTICE = `# The photo bundle: what is in it and under which terms

- \`vision.onnx\`: the pretrained SqueezeNet 1.1 ImageNet classifier (its weights unchanged, fp16), MIT/BSD
  licensed (\`LICENSE.squeezenet.MIT\`), wrapped in a head that Squeeze adds: masked pooling, a class-activation
  saliency and a linear projection trained by \`squeeze build-model\`.
- \`yolox_nano.onnx\`: the pretrained YOLOX-nano COCO detector, unchanged, Apache-2.0 (\`LICENSE.yolox.Apache-2.0\`).
  \`coco_classes.txt\`: the 80 COCO class names in the detector's order.
- \`text.onnx\`, \`words.json\` and the projection in \`vision.onnx\` were trained on the human captions of
  Flickr8k (research use only: the photos and captions are not licensed for commercial use) and of MS-COCO 2017
  (annotations CC BY 4.0). Treat the trained weights as research-use only, like their Flickr8k training data.
  No photo or caption is stored in the bundle; the word list is the captions' vocabulary.
`;
export const PHOTO_TEXT_IO = { ids: 'input_ids', mask: 'attention_mask', embeds: 'text_embeds' } as const;

export const PHOTO_BUILD_DEFAULTS = {
  seed: 7,
  steps: 400,
  batch: 128,
  lr: 3e-3,
  decay: 1e-4,
  embed: 128,
  context: 24,
  /** words seen at least this often in the training captions get their own id */
  minCount: 2,
  /** precision of added classes the enrichment threshold must reach on the cal split (Wilson lower bound, z = 1) */
  enrichMinPrecision: 0.9,
  /** detections below this score are not tags at all (bundle detector.scoreThreshold) */
  detectorScore: 0.3,
};

export interface PhotoBuildOptions {
  shared: string;
  seed?: number;
  steps?: number;
  onProgress?: (msg: string) => void;
}

export interface PhotoCalibration {
  clipScore: { auc: number; trueMean: number; trueStd: number; mismatchedMean: number; mismatchedStd: number; pairs: number };
  enrich: { threshold: number; precision: number; added: number };
  domain: { statistic: 'tag_confidence'; floor: number; expectedShare: number; warnShare: number; window: number };
  mix: { weights: Record<string, number>; stats: Record<string, { mean: number; std: number }> };
  softCap: { alpha: number; mode: 'systematic'; tpr: number; fpr: number };
  dedup: { confirm: 'embeddings' | 'thumbnails'; eps: number; embeddingRecall: number; distinctMaxCosine: number; maxThumbDistance: number; thumbRecall: number };
}

export interface PhotoBuildResult {
  version: string;
  seconds: number;
  calibration: PhotoCalibration;
}


/** The text tower as ONNX: ids, mask int64 [N, L] -> text_embeds [N, E] (unit rows), as lit.ts computes it. */
export function exportLitText(p: LitParams, metadata: Record<string, string> = {}): Buffer {
  const { vocab: V, context: L, embed: E } = p.config;
  const g = new Graph('squeeze_photo_text');
  const ids = g.input(PHOTO_TEXT_IO.ids, 'int64', ['N', L]);
  const mask = g.node('Cast', [g.input(PHOTO_TEXT_IO.mask, 'int64', ['N', L])], { to: 1 });
  const tokens = g.node('Gather', [g.initializer('txt.tok', Float32Array.from(p.tok), [V, E]), ids], { axis: 0 });
  const bias = g.node('Gather', [g.initializer('txt.word_bias', Float32Array.from(p.wordBias), [V]), ids], { axis: 0 });
  const penalty = g.node('Mul', [g.node('Sub', [mask, g.initializer('txt.one', [1], [])]), g.initializer('txt.penalty', [1e4], [])]);
  const weights = g.node('Softmax', [g.node('Add', [bias, penalty])], { axis: -1 });
  const pooled = g.node('Reshape', [g.node('MatMul', [g.node('Unsqueeze', [weights, g.ints([1])]), tokens]), g.ints([-1, E])]);
  const sum = g.node('ReduceSum', [g.node('Mul', [pooled, pooled]), g.ints([1])], { keepdims: 1 });
  const embeds = g.node('Div', [pooled, g.node('Add', [g.node('Sqrt', [sum]), g.initializer('txt.eps', [1e-12], [])])]);
  g.output(embeds, 'float', ['N', E], PHOTO_TEXT_IO.embeds);
  return g.toBytes({ model: 'squeeze photo text tower (LiT)', ...metadata });
}

function tokenize(tok: WordTokenizer, texts: string[]): { ids: Int32Array; mask: Uint8Array } {
  const L = tok.context;
  const ids = new Int32Array(texts.length * L);
  const mask = new Uint8Array(texts.length * L);
  texts.forEach((t, i) => {
    const e = tok.encode(t);
    ids.set(e.ids, i * L);
    mask.set(e.mask, i * L);
  });
  return { ids, mask };
}

function standardiser(X: Float32Array, rows: number): { shift: Float32Array; scale: Float32Array; apply: (Y: Float32Array) => Float32Array } {
  const D = FEATURE_DIM;
  const mean = new Float64Array(D);
  const sq = new Float64Array(D);
  for (let r = 0; r < rows; r++) for (let d = 0; d < D; d++) mean[d] += X[r * D + d];
  for (let d = 0; d < D; d++) mean[d] /= rows;
  for (let r = 0; r < rows; r++) for (let d = 0; d < D; d++) sq[d] += (X[r * D + d] - mean[d]) ** 2;
  const shift = Float32Array.from(mean);
  const scale = Float32Array.from(sq, (v) => 1 / Math.sqrt(v / rows + 1e-6));
  const apply = (Y: Float32Array) => Float32Array.from(Y, (v, i) => (v - shift[i % D]) * scale[i % D]);
  return { shift, scale, apply };
}

/** Cosines of row i of A and row i of B, [n, E] each. */
function rowCosines(A: Float32Array, B: Float32Array, n: number, E: number): number[] {
  return Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let e = 0; e < E; e++) s += A[i * E + e] * B[i * E + e];
    return s;
  });
}

export async function buildPhotoBundle(outDir: string, opts: PhotoBuildOptions): Promise<PhotoBuildResult> {
  const started = process.hrtime.bigint();
  const o = { ...PHOTO_BUILD_DEFAULTS, seed: opts.seed ?? PHOTO_BUILD_DEFAULTS.seed, steps: opts.steps ?? PHOTO_BUILD_DEFAULTS.steps };
  const say = (msg: string) => opts.onProgress?.(`[${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(1)} s] ${msg}`);
  const squeezenetPath = join(opts.shared, 'models', 'squeezenet_fp16', 'SqueezeNet_fp16.onnx');
  const yoloxDir = join(opts.shared, 'models', 'yolox_nano');
  const photos = loadPhotos(opts.shared);
  const train = photos.filter((p) => p.split === 'train');
  const cal = photos.filter((p) => p.split === 'cal');
  if (train.length < 100 || cal.length < 50) throw new Error(`build-model: too few photos under ${opts.shared}/data (train ${train.length}, cal ${cal.length})`);
  const squeezenet = await readFile(squeezenetPath);

  say(`locked SqueezeNet features of ${train.length} training photos (and their mirror images) and ${cal.length} calibration photos`);
  const featureSession = await openSession(buildSqueezeNetTower(squeezenet, null), { threads: 2 });
  const trainF = await photoFeatures(featureSession, train.map((p) => p.path), 2);
  const calF = await photoFeatures(featureSession, cal.map((p) => p.path), 1);
  // near-duplicate forms of cal photos: a re-encode, a 0.6x resize and a 90% centre crop of each
  const dupPhotos = cal.slice(0, Math.min(cal.length, 120));
  const variants: Buffer[] = [];
  for (const p of dupPhotos) variants.push(...(await nearDuplicateForms(await readFile(p.path))));
  const variantF = await photoFeatures(featureSession, variants, 1);
  await featureSession.release();

  // vocabulary of the training captions, most frequent first (ties by spelling); 0 pad, 1 unknown
  const counts = new Map<string, number>();
  for (const p of train) for (const c of p.captions) for (const w of WordTokenizer.words(c)) counts.set(w, (counts.get(w) ?? 0) + 1);
  const words = [...counts].filter(([, c]) => c >= o.minCount).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([w]) => w);
  const vocab: Record<string, number> = {};
  words.forEach((w, i) => (vocab[w] = i + 2));
  const tokenizer = new WordTokenizer(vocab, o.context);

  const std = standardiser(trainF.X, train.length * 2);
  const captions = train.flatMap((p, i) => p.captions.map((c) => ({ c, i })));
  const tok = tokenize(tokenizer, captions.map((x) => x.c));
  say(`training the text tower and image projection (LiT): ${words.length} words, ${captions.length} captions, ${o.steps} steps`);
  const config = { vocab: words.length + 2, context: o.context, feature: FEATURE_DIM, embed: o.embed };
  const params = trainLit(
    config,
    { X: std.apply(trainF.X), images: train.length, views: 2, ids: tok.ids, mask: tok.mask, captionImage: Int32Array.from(captions.map((x) => x.i)) },
    { seed: o.seed, steps: o.steps, batch: o.batch, lr: o.lr, decay: o.decay, onStep: (s, loss, acc) => (s % 100 === 99 ? say(`step ${s + 1}/${o.steps}: loss ${loss.toFixed(3)}, batch top-1 ${acc.toFixed(3)}`) : undefined) },
  );

  // clip_score on the cal split: every caption of a photo against it, and a caption of another photo
  say('calibrating clip_score, enrichment and the domain check on the cal split');
  const E = o.embed;
  const pairImages: number[] = [];
  const trueTexts: string[] = [];
  const otherTexts: string[] = [];
  cal.forEach((p, i) => {
    p.captions.forEach((c, k) => {
      pairImages.push(i);
      trueTexts.push(c);
      const other = cal[(i + 1 + ((k * 7919 + i) % (cal.length - 1))) % cal.length];
      otherTexts.push(other.captions[k % other.captions.length]);
    });
  });
  const imgEmb = encodeFeatures(params, std.apply(calF.X), cal.length);
  const pairEmb = new Float32Array(pairImages.length * E);
  pairImages.forEach((img, r) => pairEmb.set(imgEmb.subarray(img * E, (img + 1) * E), r * E));
  const enc = (texts: string[]) => {
    const t = tokenize(tokenizer, texts);
    return encodeTokens(params, t.ids, t.mask, texts.length);
  };
  const pos = rowCosines(pairEmb, enc(trueTexts), pairImages.length, E);
  const neg = rowCosines(pairEmb, enc(otherTexts), pairImages.length, E);
  const auc = rocAuc(pos, neg);
  const t = meanStd(pos);
  const m = meanStd(neg);

  // the detector on the cal photos: which classes would enrichment add to a caption of another photo,
  // and are they right (named by one of the photo's own captions)?
  const detector = await YoloxDetector.load(join(yoloxDir, 'yolox_nano.onnx'), join(yoloxDir, 'coco_classes.txt'), { scoreThreshold: o.detectorScore, nmsIou: 0.45, threads: 2 });
  const added: { score: number; right: boolean }[] = [];
  const topScores: number[] = [];
  for (let i = 0; i < cal.length; i++) {
    const [dets] = await detector.detect([await prepareImage(await readFile(cal[i].path), detector.preprocess)]);
    const best = new Map<string, number>();
    for (const d of dets) {
      const label = cocoNames([d.label])[0];
      best.set(label, Math.max(best.get(label) ?? 0, d.score));
    }
    topScores.push(Math.max(0, ...best.values()));
    const other = cal[(i + 1) % cal.length].captions[0];
    for (const [label, score] of best) {
      if (mentions(other, label)) continue;
      added.push({ score, right: cal[i].captions.some((c) => mentions(c, label)) });
    }
  }
  await detector.close();
  const enrich = calibrateEnrichThreshold(added, o.enrichMinPrecision, o.detectorScore, 1);
  // near duplicates: can the embedding confirm them? Recall of the variants at the cosine every distinct
  // pair of cal photos stays below; otherwise dedup confirms with colour thumbnails instead
  const varEmb = encodeFeatures(params, std.apply(variantF.X), variants.length);
  const variantCos = variants.map((_, v) => {
    const i = Math.floor(v / 3);
    let dot = 0;
    for (let e = 0; e < E; e++) dot += varEmb[v * E + e] * imgEmb[i * E + e];
    return dot;
  });
  let distinctMax = -1;
  for (let i = 0; i < cal.length; i++) {
    for (let j = i + 1; j < cal.length; j++) {
      let dot = 0;
      for (let e = 0; e < E; e++) dot += imgEmb[i * E + e] * imgEmb[j * E + e];
      distinctMax = Math.max(distinctMax, dot);
    }
  }
  const embeddingRecall = variantCos.filter((c) => c > distinctMax + 0.02).length / variantCos.length;
  const thumbs = await calibrateThumbDistance(await Promise.all(cal.map((p) => readFile(p.path))), variants, [2.5, 4, 5, 6, 7, 8], 0.98);
  const dedup = {
    confirm: embeddingRecall >= 0.95 ? ('embeddings' as const) : ('thumbnails' as const),
    eps: round(Math.max(0.01, 1 - (distinctMax + 0.02)), 3),
    embeddingRecall: round(embeddingRecall, 3),
    distinctMaxCosine: round(distinctMax, 3),
    maxThumbDistance: thumbs.distance,
    thumbRecall: thumbs.recall,
  };
  // domain floor: the best tag confidence that 90% of the cal photos reach; the warning when 30 points more
  // of a stream's images than that fall short of it
  const sortedTop = [...topScores].sort((x, y) => x - y);
  const floor = Math.max(o.detectorScore, Math.floor(sortedTop[Math.floor(0.1 * sortedTop.length)] * 100) / 100);
  const expectedShare = topScores.filter((s) => s < floor).length / topScores.length;
  const domain = { statistic: 'tag_confidence' as const, floor, expectedShare: round(expectedShare, 3), warnShare: round(Math.min(0.95, expectedShare + 0.3), 3), window: 200 };
  // mixing: clip_score standardised with the centre of the two groups and their pooled spread; its weight
  // and the soft-cap alpha tuned on cal for a crawl where a quarter of the pairs are right
  const pooledStd = Math.sqrt((t.std ** 2 + m.std ** 2) / 2);
  const clipStat = { mean: round((t.mean + m.mean) / 2), std: round(pooledStd) };
  const tuned = tuneSoftCap(pos, neg, clipStat, { trueShare: 0.25, rate: 1, maxFpr: 0.2 });
  const mixing = {
    weights: { clip_score: tuned.weight, caption_quality: 0.25, image_quality: 0.25 },
    stats: {
      clip_score: clipStat,
      caption_quality: { mean: 0.6, std: 0.3 },
      image_quality: { mean: 0.5, std: 0.15 },
    },
  };
  const calibration: PhotoCalibration = {
    clipScore: { auc: round(auc), trueMean: round(t.mean), trueStd: round(t.std), mismatchedMean: round(m.mean), mismatchedStd: round(m.std), pairs: pos.length },
    enrich,
    domain,
    mix: mixing,
    softCap: { alpha: tuned.alpha, mode: 'systematic', tpr: tuned.tpr, fpr: tuned.fpr },
    dedup,
  };
  say(`cal: near duplicates by embedding: ${dedup.embeddingRecall} of ${variants.length} variants above the distinct photos' largest cosine ${dedup.distinctMaxCosine}: dedup confirms with ${dedup.confirm}; thumbnails at distance ${thumbs.distance} find ${thumbs.recall} of them, ${thumbs.falsePositives} of ${cal.length} originals filtered`);
  say(`cal: soft-cap alpha ${tuned.alpha}, clip_score weight ${tuned.weight}: ${tuned.tpr} of true pairs and ${tuned.fpr} of mismatched keep a copy (fluid limit, a quarter true)`);
  say(`cal: clip_score AUC ${auc.toFixed(3)} (true ${t.mean.toFixed(3)}, mismatched ${m.mean.toFixed(3)}); enrich threshold ${enrich.threshold} (precision ${enrich.precision} on ${enrich.added} added classes); ${(expectedShare * 100).toFixed(1)}% of photos without a detection >= ${floor}`);

  const meta = { version: PHOTO_MODEL_NAME, seed: String(o.seed) };
  const vision = buildSqueezeNetTower(squeezenet, { shift: std.shift, scale: std.scale, weight: params.weight, bias: params.bias, embed: E }, meta);
  const text = exportLitText(params, meta);
  const version = `${PHOTO_MODEL_NAME}-${createHash('sha256').update(vision).update(text).digest('hex').slice(0, 8)}`;
  const classes = cocoNames((await readFile(join(yoloxDir, 'coco_classes.txt'), 'utf8')).split('\n').map((l) => l.trim()).filter(Boolean));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const bundle = {
    format: 'squeeze-bundle/1',
    version,
    vision: {
      onnx: 'vision.onnx',
      kind: 'attention-pool',
      preprocess: PHOTO_PREPROCESS,
      grid: { rows: SQUEEZENET.grid, cols: SQUEEZENET.grid },
      inputs: { pixels: PHOTO_VISION_IO.pixels, mask: PHOTO_VISION_IO.mask },
      outputs: { embeds: PHOTO_VISION_IO.embeds, attention: PHOTO_VISION_IO.attention },
    },
    text: {
      onnx: 'text.onnx',
      tokenizer: { kind: 'words', vocab: 'words.json', context: o.context },
      inputs: { ids: PHOTO_TEXT_IO.ids, mask: PHOTO_TEXT_IO.mask },
      outputs: { embeds: PHOTO_TEXT_IO.embeds },
    },
    detector: { kind: 'yolox', onnx: 'yolox_nano.onnx', classes: 'coco_classes.txt', scoreThreshold: o.detectorScore, nmsIou: 0.45 },
    tags: { vocabulary: classes, prompt: 'a photo of a {}', threshold: o.detectorScore, confidence: 'softmax' },
    calibration,
    training: {
      seed: o.seed,
      steps: o.steps,
      batch: o.batch,
      lr: o.lr,
      embed: E,
      words: words.length,
      photos: { train: train.length, cal: cal.length, eval: photos.filter((p) => p.split === 'eval').length },
      captions: captions.length,
      data: 'Flickr8k (research use only) and MS-COCO 2017 captions (CC BY 4.0); photos split by image (data.ts photoSplit)',
      seconds: Math.round(seconds * 10) / 10,
    },
    licenses: {
      'vision.onnx': 'contains the SqueezeNet 1.1 weights (MIT/BSD, LICENSE.squeezenet.MIT); head trained on Flickr8k + COCO captions',
      'yolox_nano.onnx': 'YOLOX-nano (Apache-2.0, LICENSE.yolox.Apache-2.0)',
      'text.onnx': 'trained on Flickr8k and COCO captions: research use only (Flickr8k terms)',
    },
  };
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'vision.onnx'), vision);
  await writeFile(join(outDir, 'text.onnx'), text);
  await writeFile(join(outDir, 'words.json'), JSON.stringify(vocab) + '\n');
  await writeFile(join(outDir, 'coco_classes.txt'), classes.join('\n') + '\n');
  const copies: [string, string][] = [
    [join(yoloxDir, 'yolox_nano.onnx'), 'yolox_nano.onnx'],
    [join(yoloxDir, 'LICENSE.Apache-2.0'), 'LICENSE.yolox.Apache-2.0'],
    [join(opts.shared, 'models', 'squeezenet_fp16', 'LICENSE.MIT'), 'LICENSE.squeezenet.MIT'],
  ];
  for (const [from, name] of copies) {
    await copyFile(from, join(outDir, name));
    await chmod(join(outDir, name), 0o644);
  }
  await writeFile(join(outDir, 'NOTICE.md'), NOTICE);
  await writeFile(join(outDir, 'bundle.json'), JSON.stringify(bundle, null, 2) + '\n');
  say(`wrote ${version} to ${outDir} in ${seconds.toFixed(1)} s`);
  return { version, seconds, calibration };
}

