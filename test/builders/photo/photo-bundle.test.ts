/**
 * The shipped photo bundle (models/photo): it loads and runs through onnxruntime-node, its enrichment
 * never names what a caption already implies nor what the detector does not see, the domain check fires
 * on generated shapes, and a rebuild from the shared photos reproduces its recorded calibration.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { PHOTO_BUNDLE } from '../../../src/curate/models';
import { generateCrawl } from '../../../src/gen';
import { loadBundle, type OnnxModelBundle } from '../../../src/models/bundle';
import { buildPhotoBundle } from '../../../src/builders/photo/build';
import { loadPhotos, sharedDir, type PhotoItem } from '../../../src/streams/files/shared-photos';
import { classesToAdd } from '../../../src/operators/enrich';
import { mentions } from '../../../src/text/english';
import { runModelChain } from '../../helpers/photo-chain';
import { prepareImages } from '../../../src/models/preprocess';

const shared = sharedDir();
const noShared = shared ? false : 'skipped: ../shared (photos and models) absent';
const spec = JSON.parse(readFileSync(join(PHOTO_BUNDLE, 'bundle.json'), 'utf8'));
let bundle: OnnxModelBundle;
let photos: PhotoItem[] = [];

before(async () => {
  bundle = await loadBundle(PHOTO_BUNDLE, { threads: 2 });
  if (shared) photos = loadPhotos(shared);
});
after(async () => bundle?.close());

test('the photo bundle loads with its detector, a 13 x 13 grid and calibration, and encodes an image', async () => {
  assert.match(bundle.version, /^photo-lit-1-[0-9a-f]{8}$/);
  assert.deepEqual(bundle.vision.grid, { rows: 13, cols: 13 });
  assert.ok(bundle.detector, 'YOLOX-nano is part of the default bundle');
  assert.equal(bundle.tags.vocabulary.length, 80);
  assert.ok(bundle.tags.vocabulary.includes('tv') && !bundle.tags.vocabulary.includes('tvmonitor'), 'COCO names, not VOC ones');
  const c = bundle.calibration;
  assert.ok(c.clipScore && c.clipScore.auc >= 0.85, `recorded cal AUC ${c.clipScore?.auc}`);
  assert.ok(c.enrich && c.enrich.precision >= 0.9, 'enrichment threshold calibrated for precision 0.9');
  assert.ok(c.domain && c.mix && c.softCap);
  // a real decode and inference: a half-red half-blue picture
  const img = await sharp({ create: { width: 320, height: 240, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .composite([{ input: await sharp({ create: { width: 160, height: 240, channels: 3, background: { r: 20, g: 40, b: 220 } } }).png().toBuffer(), left: 160, top: 0 }])
    .jpeg()
    .toBuffer();
  const [enc] = await bundle.vision.encode(await prepareImages([img], bundle.vision.preprocess));
  assert.equal(enc.saliency.length, 169);
  assert.ok(Math.abs(enc.saliency.reduce((a, b) => a + b, 0) - 1) < 1e-4);
  assert.ok(Math.abs(Math.hypot(...enc.embedding) - 1) < 1e-4);
  // a keep mask zeroes the dropped patches' saliency and changes the embedding
  const keep = Uint8Array.from({ length: 169 }, (_, j) => (j % 13 < 6 ? 1 : 0));
  const [masked] = await bundle.vision.encode(await prepareImages([img], bundle.vision.preprocess), [keep]);
  assert.ok(masked.saliency.every((v, j) => keep[j] || v === 0));
  const cos = masked.embedding.reduce((a, v, i) => a + v * enc.embedding[i], 0);
  assert.ok(cos < 0.9999, 'the masked embedding sees only the kept half');
  const [t1, t2] = await bundle.text.encode(['a dog runs on the grass', 'a dog runs on the grass']);
  assert.deepEqual(Array.from(t1), Array.from(t2));
});

test('enrich never adds a class the caption already implies (synonyms, plurals, hyponyms)', () => {
  const t = (label: string, score = 0.95) => [{ label, score }];
  const implied: [string, string][] = [
    ['A puppy chews a stick.', 'dog'],
    ['Two skiers race down the slope.', 'person'],
    ['A girl in a red dress.', 'person'],
    ['A man rides a motorbike.', 'motorcycle'],
    ['Kittens asleep on a sofa.', 'cat'],
    ['Kittens asleep on a sofa.', 'couch'],
    ['A golden retriever in the snow.', 'dog'],
    ['The television is on.', 'tv'],
    ['She holds her phone.', 'cell phone'],
    ['A jet at the gate.', 'airplane'],
  ];
  for (const [caption, label] of implied) assert.deepEqual(classesToAdd(caption, t(label), 0.5), [], `${caption} already names ${label}`);
  assert.deepEqual(classesToAdd('A field of grass.', t('dog'), 0.5), ['dog']);
  assert.deepEqual(classesToAdd('A field of grass.', t('dog', 0.6), 0.85), [], 'below the calibrated threshold');
});

test('the domain check warns once on generated shapes fed to the photo bundle, and their captions get no classes', async () => {
  const items: { image: Buffer; caption: string }[] = [];
  for await (const e of generateCrawl({ n: 120, seed: 3, badRate: 0 })) if (e.image) items.push({ image: e.image, caption: e.caption });
  const r = await runModelChain(bundle, items);
  assert.equal(r.domain.length, 1, JSON.stringify(r.domain));
  assert.equal(r.domain[0].out, true);
  assert.match(r.domain[0].message, /looks unlike its training data/);
  const samples = r.batches.flatMap((b) => b.samples).filter((s) => s.outcome.kind === 'keep');
  const flagged = samples.filter((s) => s.flags.includes('domain_out'));
  // from the image the warning fired at on, every image below the floor is flagged
  assert.ok(flagged.length >= samples.length / 4, `${flagged.length} of ${samples.length} flagged`);
  const floor = bundle.calibration.domain!.floor;
  const firstFlagged = samples.indexOf(flagged[0]);
  for (const s of samples.slice(firstFlagged)) assert.equal(s.flags.includes('domain_out'), (s.scores.tag_confidence ?? 0) < floor);
  for (const s of flagged) assert.ok(!s.flags.some((f) => f.startsWith('enriched:+')), 'no class added to a flagged image');
  const shapes = ['circle', 'square', 'triangle', 'star', 'heart', 'ring', 'hexagon', 'moon', 'pentagon', 'bolt'];
  for (const s of samples) for (const f of s.flags) if (f.startsWith('enriched:+')) assert.ok(!shapes.includes(f.slice(10)), `added ${f}`);
});

test('real photos do not trip the domain check', { skip: noShared }, async () => {
  const some = photos.filter((p) => p.split === 'eval').slice(0, 120);
  const r = await runModelChain(bundle, await Promise.all(some.map(async (p) => ({ image: await readFile(p.path), caption: p.captions[0] }))));
  assert.deepEqual(r.domain, []);
});

test('a mismatched caption on a photo gets "dog" only where the detector sees a dog', { skip: noShared }, async () => {
  const evalPhotos = photos.filter((p) => p.split === 'eval');
  const dogless = evalPhotos.filter((p) => !p.captions.some((c) => mentions(c, 'dog'))).slice(0, 60);
  const dogs = evalPhotos.filter((p) => p.captions.filter((c) => mentions(c, 'dog')).length >= 3).slice(0, 60);
  assert.ok(dogless.length >= 30 && dogs.length >= 30);
  // dog photos with a caption of a dogless photo, and dogless photos with a caption of a dog photo
  const items = [
    ...dogs.map((p, i) => ({ photo: p, caption: dogless[i % dogless.length].captions[0] })),
    ...dogless.map((p, i) => ({ photo: p, caption: dogs[i % dogs.length].captions.find((c) => mentions(c, 'dog'))! })),
  ];
  const r = await runModelChain(bundle, await Promise.all(items.map(async (x) => ({ image: await readFile(x.photo.path), caption: x.caption }))));
  const samples = r.batches.flatMap((b) => b.samples);
  const threshold = bundle.calibration.enrich!.threshold;
  let addedDog = 0;
  samples.forEach((s, i) => {
    const added = s.flags.includes('enriched:+dog');
    const seen = (s.tags ?? []).some((t) => t.label === 'dog' && t.score >= threshold);
    assert.equal(added, seen && !mentions(items[i].caption, 'dog'), `${items[i].photo.key}: "${s.caption}"`);
    if (added) addedDog++;
    if (i >= dogs.length) assert.ok(!added, `dogless photo ${items[i].photo.key} got "dog"`);
  });
  assert.ok(addedDog >= 5, `the detector named the dog on ${addedDog} of ${dogs.length} dog photos with a dogless caption`);
});

test('a bundle with a missing or mismatched file fails at load, naming the file and what is wrong', async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'photo-bad-')), 'bundle');
  try {
    cpSync(PHOTO_BUNDLE, dir, { recursive: true });
    rmSync(join(dir, 'yolox_nano.onnx'));
    await assert.rejects(loadBundle(dir, { threads: 1 }), /yolox_nano\.onnx is missing \(detector\.onnx/);
    cpSync(join(PHOTO_BUNDLE, 'yolox_nano.onnx'), join(dir, 'yolox_nano.onnx'));
    writeFileSync(join(dir, 'bundle.json'), JSON.stringify({ ...spec, vision: { ...spec.vision, inputs: { ...spec.vision.inputs, mask: 'keep_mask' } } }));
    await assert.rejects(loadBundle(dir, { threads: 1 }), /vision\.onnx: expected input "keep_mask"/);
    writeFileSync(join(dir, 'bundle.json'), JSON.stringify({ ...spec, vision: { ...spec.vision, grid: { rows: 14, cols: 14 } } }));
    await assert.rejects(loadBundle(dir, { threads: 1 }), /vision\.onnx: .*patch_mask.*\[N, 196\]/);
    writeFileSync(join(dir, 'bundle.json'), JSON.stringify({ ...spec, calibration: { ...spec.calibration, enrich: { threshold: 2 } } }));
    await assert.rejects(loadBundle(dir, { threads: 1 }), /bundle\.json: calibration\.enrich\.threshold/);
  } finally {
    rmSync(join(dir, '..'), { recursive: true, force: true });
  }
});

test('squeeze build-model --kind photo reproduces the shipped bundle\'s recorded calibration (about a minute)', { skip: noShared }, async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'photo-build-')), 'bundle');
  try {
    const r = await buildPhotoBundle(out, { shared: shared! });
    const want = spec.calibration;
    const got = r.calibration;
    assert.ok(Math.abs(got.clipScore.auc - want.clipScore.auc) <= 0.01, `AUC ${got.clipScore.auc} vs ${want.clipScore.auc}`);
    assert.ok(Math.abs(got.clipScore.trueMean - want.clipScore.trueMean) <= 0.01);
    assert.ok(Math.abs(got.enrich.threshold - want.enrich.threshold) <= 0.05, `enrich threshold ${got.enrich.threshold} vs ${want.enrich.threshold}`);
    assert.equal(got.softCap.alpha, want.softCap.alpha);
    assert.equal(got.mix.weights.clip_score, want.mix.weights.clip_score);
    assert.equal(Math.abs(got.domain.expectedShare - want.domain.expectedShare) <= 0.02, true);
    // on the machine that built the shipped bundle the bytes are the same too; elsewhere onnxruntime's
    // float rounding may differ, which the tolerances above allow
    const built = JSON.parse(readFileSync(join(out, 'bundle.json'), 'utf8'));
    assert.equal(built.version.slice(0, 12), 'photo-lit-1-');
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true });
  }
});
