import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeYolox, nmsByClass, toSourceBox, YoloxDetector, yoloxGrids } from '../../src/models/yolox';
import { prepareImages } from '../../src/models/preprocess';

const SHARED = join(__dirname, '../../../../shared');
const MODEL = join(SHARED, 'models/yolox_nano/yolox_nano.onnx');
const CLASSES = join(SHARED, 'models/yolox_nano/coco_classes.txt');
const COCO = join(SHARED, 'data/coco');

test('grids: 52x52, 26x26, 13x13 row-major for a 416 input (3549 rows)', () => {
  const g = yoloxGrids(416, 416);
  assert.equal(g.gx.length, 3549);
  assert.deepEqual([g.gx[53], g.gy[53], g.stride[53]], [1, 1, 8]);
  assert.deepEqual([g.gx[2704], g.gy[2704], g.stride[2704]], [0, 0, 16]);
  assert.deepEqual([g.gx[3548], g.gy[3548], g.stride[3548]], [12, 12, 32]);
});

test('decoder + class-wise NMS on a hand-made output tensor', () => {
  const C = 3;
  const cols = 5 + C;
  const out = new Float32Array(3549 * cols);
  const set = (row: number, v: number[]) => out.set(v, row * cols);
  // stride 8, cell (10, 5): centre (84, 44), 32x16, class 0 at 0.9 * 0.8 and class 2 at 0.9 * 0.5
  set(5 * 52 + 10, [0.5, 0.5, Math.log(4), Math.log(2), 0.9, 0.8, 0, 0.5]);
  // its neighbour (11, 5): centre (92, 44), same size, IoU 0.6 with the first: suppressed in class 0
  set(5 * 52 + 11, [0.5, 0.5, Math.log(4), Math.log(2), 0.9, 0.7, 0, 0]);
  // far away in class 0 (no overlap): kept
  set(40 * 52 + 40, [0, 0, 0, 0, 0.95, 0.9, 0, 0]);
  // stride 16, cell (3, 2): centre (48, 32), 16x16, class 1 at 0.4
  set(2704 + 2 * 26 + 3, [0, 0, 0, 0, 0.5, 0, 0.8, 0]);
  // below the threshold
  set(2704 + 10 * 26 + 10, [0, 0, 0, 0, 0.2, 0, 1, 0]);
  // stride 32, last cell (12, 12): centre (384, 384), 64x32, class 2 at 0.6
  set(3548, [0, 0, Math.log(2), 0, 0.6, 0, 0, 1]);

  const cands = decodeYolox(out, [416, 416], C, { scoreThreshold: 0.3 });
  assert.equal(cands.length, 6);
  const kept = nmsByClass(cands, 0.45);
  const r3 = (v: number) => Math.round(v * 1000) / 1000;
  const simple = kept.map((d) => [d.classId, r3(d.score), r3(d.x1), r3(d.y1), r3(d.x2), r3(d.y2)]);
  assert.deepEqual(simple, [
    [0, 0.855, 316, 316, 324, 324],
    [0, 0.72, 68, 36, 100, 52],
    [2, 0.6, 352, 368, 416, 400],
    [2, 0.45, 68, 36, 100, 52],
    [1, 0.4, 40, 24, 56, 40],
  ]);
  // a lower threshold for NMS suppresses less; class-agnostic overlap never suppresses across classes
  assert.equal(nmsByClass(cands, 0.7).length, 6);
  assert.equal(nmsByClass(cands, 0.45, 2).length, 2);
  // letterbox scale 0.5 maps back to doubled pixels, clipped to the image
  const box = toSourceBox(kept[2], { width: 800, height: 790, scale: 0.5, scaleY: 0.5, padX: 0, padY: 0 });
  assert.deepEqual(box.map(r3), [704, 736, 96, 54]);
  // exports that leave logits: sigmoid applied on request
  const logits = new Float32Array(3549 * cols);
  logits.set([0, 0, 0, 0, 2, -1, 3, -1], 100 * cols);
  const withSig = decodeYolox(logits, [416, 416], C, { scoreThreshold: 0.5, sigmoid: true });
  assert.equal(withSig.length, 1);
  assert.ok(Math.abs(withSig[0].score - 1 / (1 + Math.exp(-2)) / (1 + Math.exp(-3))) < 1e-6);
  assert.throws(() => decodeYolox(new Float32Array(10), [416, 416], C, { scoreThreshold: 0.3 }), /expected 3549 x 8/);
});

/** Caption words that count as naming each YOLOX class. */
const SYNONYMS: Record<string, string[]> = {
  person: ['person', 'people', 'man', 'men', 'woman', 'women', 'boy', 'girl', 'child', 'children', 'kid', 'player', 'skier', 'surfer', 'snowboarder', 'skateboarder', 'guy', 'lady', 'ladies', 'baby', 'toddler', 'crowd', 'someone', 'rider', 'chef', 'baker', 'family', 'couple', 'team', 'batter', 'catcher', 'pitcher', 'umpire', 'presenter', 'audience', 'group', 'student', 'adult', 'he', 'she', 'they'],
  bicycle: ['bicycle', 'bike', 'cyclist'],
  car: ['car', 'vehicle', 'taxi', 'traffic', 'suv', 'van'],
  motorbike: ['motorcycle', 'motorbike', 'bike', 'scooter', 'moped'],
  aeroplane: ['airplane', 'plane', 'jet', 'aircraft', 'airliner'],
  bus: ['bus'],
  train: ['train', 'locomotive'],
  truck: ['truck', 'vehicle', 'van'],
  boat: ['boat', 'ship', 'sailboat', 'kayak', 'canoe'],
  'traffic light': ['traffic', 'light', 'stoplight'],
  'fire hydrant': ['hydrant'],
  'stop sign': ['stop', 'sign'],
  'parking meter': ['meter', 'parking'],
  bench: ['bench'],
  bird: ['bird', 'pigeon', 'seagull', 'gull', 'duck', 'goose'],
  cat: ['cat', 'kitten', 'kitty'],
  dog: ['dog', 'puppy'],
  horse: ['horse', 'pony'],
  sheep: ['sheep', 'lamb'],
  cow: ['cow', 'cattle', 'bull', 'calf'],
  elephant: ['elephant'],
  bear: ['bear'],
  zebra: ['zebra'],
  giraffe: ['giraffe'],
  backpack: ['backpack', 'bag'],
  umbrella: ['umbrella', 'parasol'],
  handbag: ['handbag', 'purse', 'bag'],
  tie: ['tie', 'suit'],
  suitcase: ['suitcase', 'luggage', 'bag'],
  frisbee: ['frisbee'],
  skis: ['ski', 'skiing', 'skier'],
  snowboard: ['snowboard', 'snowboarder', 'snowboarding'],
  'sports ball': ['ball', 'soccer', 'football', 'baseball', 'tennis', 'basketball', 'volleyball'],
  kite: ['kite'],
  'baseball bat': ['bat', 'baseball'],
  'baseball glove': ['glove', 'mitt', 'baseball'],
  skateboard: ['skateboard', 'skateboarder', 'skateboarding', 'skater'],
  surfboard: ['surfboard', 'surfer', 'surfing', 'board'],
  'tennis racket': ['racket', 'racquet', 'tennis'],
  bottle: ['bottle'],
  'wine glass': ['wine', 'glass'],
  cup: ['cup', 'mug', 'coffee', 'tea'],
  fork: ['fork'],
  knife: ['knife', 'knives'],
  spoon: ['spoon'],
  bowl: ['bowl'],
  banana: ['banana'],
  apple: ['apple'],
  sandwich: ['sandwich'],
  orange: ['orange'],
  broccoli: ['broccoli', 'brocolli'],
  carrot: ['carrot'],
  'hot dog': ['hotdog', 'hot'],
  pizza: ['pizza'],
  donut: ['donut', 'doughnut'],
  cake: ['cake', 'cupcake', 'dessert'],
  chair: ['chair', 'seat'],
  sofa: ['sofa', 'couch'],
  pottedplant: ['plant', 'flower', 'potted'],
  bed: ['bed'],
  diningtable: ['table', 'desk'],
  toilet: ['toilet'],
  tvmonitor: ['tv', 'television', 'monitor', 'screen'],
  laptop: ['laptop', 'computer'],
  mouse: ['mouse'],
  remote: ['remote', 'controller'],
  keyboard: ['keyboard'],
  'cell phone': ['phone', 'cellphone', 'smartphone'],
  microwave: ['microwave'],
  oven: ['oven', 'stove'],
  toaster: ['toaster'],
  sink: ['sink'],
  refrigerator: ['refrigerator', 'fridge'],
  book: ['book'],
  clock: ['clock'],
  vase: ['vase'],
  scissors: ['scissors'],
  'teddy bear': ['teddy', 'bear'],
  'hair drier': ['dryer', 'drier'],
  toothbrush: ['toothbrush'],
};

function named(label: string, words: Set<string>): boolean {
  return (SYNONYMS[label] ?? [label]).some((s) => words.has(s) || words.has(`${s}s`) || words.has(`${s}es`));
}

test('YOLOX-nano on real COCO photos: detections exist and their labels agree with the human captions', async () => {
  if (!existsSync(MODEL) || !existsSync(join(COCO, 'captions.jsonl'))) {
    console.log('skipped: ../shared (yolox_nano model or COCO photos) absent');
    return;
  }
  const det = await YoloxDetector.load(MODEL, CLASSES, { scoreThreshold: 0.35, nmsIou: 0.45, threads: 1 });
  try {
    assert.deepEqual(det.inputSize, [416, 416]);
    assert.equal(det.labels.length, 80);
    const rows = readFileSync(join(COCO, 'captions.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { file: string; width: number; height: number; captions: string[] })
      .slice(0, 20);
    const t0 = Date.now();
    const results = await det.detect(await prepareImages(rows.map((r) => readFileSync(join(COCO, r.file))), det.preprocess));
    const ms = Date.now() - t0;
    let withDetections = 0;
    let labels = 0;
    let agree = 0;
    const misses: string[] = [];
    results.forEach((dets, i) => {
      const r = rows[i];
      if (dets.length) withDetections++;
      for (const d of dets) {
        const [x, y, w, h] = d.box;
        assert.ok(x >= 0 && y >= 0 && w >= 0 && h >= 0 && x + w <= r.width + 1e-6 && y + h <= r.height + 1e-6, `box ${d.box} outside ${r.width}x${r.height}`);
        assert.ok(d.score >= 0.35 && d.score <= 1);
      }
      const words = new Set(r.captions.join(' ').toLowerCase().split(/[^a-z]+/));
      for (const label of new Set(dets.map((d) => d.label))) {
        labels++;
        if (named(label, words)) agree++;
        else misses.push(`${label} (${r.file.split('/').pop()})`);
      }
    });
    const share = agree / labels;
    console.log(
      `yolox-nano on ${rows.length} COCO val2017 photos (${ms} ms): ${withDetections} with detections, ${labels} distinct (photo, label) pairs, ` +
        `${agree} named in the captions = ${(share * 100).toFixed(1)}%; not named: ${misses.join(', ')}`,
    );
    assert.ok(withDetections >= 15, `only ${withDetections} of 20 photos have detections`);
    assert.ok(share >= 0.5, `caption agreement ${share}`);
    // the first photo is "a man in a kitchen making pizzas": a person box on the right half
    const person = results[0].find((d) => d.label === 'person');
    assert.ok(person && person.box[0] > 320, JSON.stringify(results[0]));
  } finally {
    await det.close();
  }
});
