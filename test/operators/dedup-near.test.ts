import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { firstValueFrom, from, toArray } from 'rxjs';
import { generateCrawl } from '../../src/gen';
import { decodeImage } from '../../src/operators/decode-image';
import { dedupExact } from '../../src/operators/dedup-exact';
import { dedupNear, type DedupNearOptions, imageThumbnail, type NearSnapshot, THUMB_SIDE } from '../../src/operators/dedup-near';
import { type Batch, newSample, type Outcome, partitionKey, type Sample } from '../../src/operators/sample';
import { StateRegistry } from '../../src/operators/state';
import { batchOf, event, keptSample } from '../helpers/samples';

const kinds = (b: Batch[]) => b.flatMap((x) => x.samples.map((s) => (s.outcome.kind === 'filtered' ? s.outcome.reason : s.outcome.kind)));

async function run(op: ReturnType<typeof dedupNear>, batches: Batch[]): Promise<Batch[]> {
  return firstValueFrom(from(batches).pipe(op, toArray()));
}

// ---------------------------------------------------------------------------------------------------------
// The synthetic crawl, decoded by the project's decode-image (real dHash), then dedupExact.

const GEN_N = 1500;
const GEN_SEED = 11;
const BATCH = 100;
let gen: { samples: Sample[]; afterExact: Outcome[]; seconds: number; thumbs: Map<Sample, Uint8Array | null> } | null = null;
/** the uninterrupted run of the default configuration, for the restore test */
let genWhole: string[] | null = null;

before(async () => {
  const t0 = performance.now();
  const samples: Sample[] = [];
  let offset = 0;
  for await (const ev of generateCrawl({ n: GEN_N, seed: GEN_SEED })) {
    const s = newSample({ topic: 'gen', partition: 0, offset: offset++ }, Buffer.from('raw'));
    s.event = ev;
    s.caption = ev.caption;
    samples.push(s);
  }
  const batches = chunk(samples);
  const decoded = await firstValueFrom(
    from(batches).pipe(
      decodeImage({ maxImageBytes: 20 << 20, maxPixels: 40e6, minSide: 32, maxAspect: 8, imageFormat: 'keep', quality: 90, concurrency: 4 }),
      dedupExact({ memory: 100_000 }),
      toArray(),
    ),
  );
  const all = decoded.flatMap((b) => b.samples);
  // the default thumbnail source, computed once and shared by the runs below
  const thumbs = new Map<Sample, Uint8Array | null>();
  for (const s of all) if (s.image) thumbs.set(s, await imageThumbnail(s.image.bytes).catch(() => null));
  gen = { samples: all, afterExact: all.map((s) => s.outcome), seconds: (performance.now() - t0) / 1000, thumbs };
});

const genThumbs: DedupNearOptions['thumbnails'] = (s) => gen!.thumbs.get(s) ?? null;

function chunk(samples: Sample[]): Batch[] {
  const out: Batch[] = [];
  for (let i = 0; i < samples.length; i += BATCH) out.push({ topic: 'gen', partition: 0, samples: samples.slice(i, i + BATCH) });
  return out;
}

/** Resets outcomes to what they were after dedupExact, so several configurations can run on one decode. */
function genBatches(): Batch[] {
  gen!.samples.forEach((s, i) => (s.outcome = gen!.afterExact[i]));
  return chunk(gen!.samples);
}

interface Scores {
  recall: Record<string, { found: number; total: number }>;
  originals: number;
  falsePositives: number;
}

function score(samples: Sample[]): Scores {
  const recall: Scores['recall'] = {};
  let originals = 0;
  let falsePositives = 0;
  for (const s of samples) {
    if (!s.image) continue; // never decoded: not a dedup question
    const kind = s.event!.attrs.truth_dup_kind;
    const dropped = s.outcome.kind === 'filtered' && (s.outcome.reason === 'duplicate_exact' || s.outcome.reason === 'duplicate_near');
    if (kind) {
      const r = (recall[kind] ??= { found: 0, total: 0 });
      r.total++;
      if (dropped) r.found++;
    } else {
      originals++;
      if (dropped) falsePositives++;
    }
  }
  return { recall, originals, falsePositives };
}

const fmt = (sc: Scores) =>
  Object.entries(sc.recall)
    .map(([k, r]) => `${k} ${r.found}/${r.total} = ${(r.found / r.total).toFixed(3)}`)
    .join(', ') + `; originals filtered ${sc.falsePositives}/${sc.originals} = ${((100 * sc.falsePositives) / sc.originals).toFixed(2)}%`;

test('gen data: recall >= 0.95 exact, >= 0.9 on each near kind, <= 1% originals filtered (no embeddings)', async (t) => {
  const t0 = performance.now();
  const out = await run(dedupNear({ thumbnails: genThumbs }), genBatches());
  const seconds = (performance.now() - t0) / 1000;
  genWhole = kinds(out);
  const sc = score(out.flatMap((b) => b.samples));
  t.diagnostic(`gen n=${GEN_N} seed=${GEN_SEED}: gen + decode + exact + thumbnails ${gen!.seconds.toFixed(1)} s, dedupNear ${seconds.toFixed(1)} s`);
  t.diagnostic(`dHash + thumbnails: ${fmt(sc)}`);
  const exact = sc.recall.exact;
  assert.ok(exact.total >= 20, 'the crawl has exact duplicates');
  assert.ok(exact.found / exact.total >= 0.95, `exact recall ${exact.found}/${exact.total}`);
  for (const k of ['reencode', 'resize', 'crop']) {
    const r = sc.recall[k];
    assert.ok(r && r.total >= 20, `the crawl has ${k} duplicates`);
    assert.ok(r.found / r.total >= 0.9, `${k} recall ${r.found}/${r.total}`);
  }
  assert.ok(sc.falsePositives / sc.originals <= 0.01, `originals filtered ${sc.falsePositives}/${sc.originals}`);
});

test('gen data, dHash only (thumbnails off): measured for the record, documented as weaker', async (t) => {
  for (const maxBits of [4, 10]) {
    const out = await run(dedupNear({ thumbnails: false, maxBits }), genBatches());
    t.diagnostic(`dHash only, maxBits ${maxBits}: ${fmt(score(out.flatMap((b) => b.samples)))}`);
  }
});

test('gen data: snapshot/restore mid-stream into a fresh operator decides as an uninterrupted run', async (t) => {
  const whole = genWhole ?? kinds(await run(dedupNear({ thumbnails: genThumbs }), genBatches()));
  const batches = genBatches();
  const cut = Math.floor(batches.length / 2);
  const state = new StateRegistry();
  const first = await run(dedupNear({ thumbnails: genThumbs, state }), batches.slice(0, cut));
  const snap = JSON.parse(JSON.stringify(state.snapshot(partitionKey('gen', 0)))) as { dedup_near: NearSnapshot };
  const fresh = new StateRegistry();
  const op = dedupNear({ thumbnails: genThumbs, state: fresh });
  fresh.restore(partitionKey('gen', 0), snap);
  const rest = await run(op, batches.slice(cut));
  assert.deepEqual([...kinds(first), ...kinds(rest)], whole);
  const entries = Buffer.from(snap.dedup_near.flags, 'base64').length;
  const bytes = JSON.stringify(snap.dedup_near).length;
  t.diagnostic(`gen snapshot: ${entries} entries, ${bytes} bytes of JSON = ${(bytes / entries).toFixed(0)} B/entry`);
});

// ---------------------------------------------------------------------------------------------------------
// Unit tests on synthetic samples.

function near(offset: number, dhash: string, opts: { emb?: Float32Array; w?: number; h?: number; partition?: number } = {}): Sample {
  const s = keptSample(offset, { partition: opts.partition });
  s.image!.dhash = dhash;
  s.image!.width = opts.w ?? 64;
  s.image!.height = opts.h ?? 64;
  if (opts.emb) {
    s.model = { imageEmbedding: opts.emb, textEmbedding: new Float32Array(0), saliency: new Float32Array(0), grid: { rows: 1, cols: 1 } };
  }
  return s;
}

/** a hash with the given bit positions (0 = most significant) flipped */
function flipBits(hex: string, bits: number[]): string {
  let v = BigInt(`0x${hex}`);
  for (const b of bits) v ^= 1n << BigInt(63 - b);
  return v.toString(16).padStart(16, '0');
}

function unit(dim: number, seed: number): Float32Array {
  const v = new Float32Array(dim);
  let x = seed;
  let n = 0;
  for (let i = 0; i < dim; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    v[i] = x / 2 ** 32 - 0.5;
    n += v[i] * v[i];
  }
  for (let i = 0; i < dim; i++) v[i] /= Math.sqrt(n);
  return v;
}

function mix(a: Float32Array, b: Float32Array, t: number): Float32Array {
  const v = a.map((x, i) => (1 - t) * x + t * b[i]);
  const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return v.map((x) => x / n);
}

const hashOnly: DedupNearOptions = { thumbnails: false };
const H = '0123456789abcdef';

test('hash only: every hash within maxBits is found wherever the bits differ (multi-probe LSH); maxBits + 1 is not', async () => {
  const spreads = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], // 10 bits in the first band... and beyond
    [0, 7, 15, 16, 23, 31, 32, 40, 48, 63], // spread over all bands
    [48, 49, 50, 51, 52, 53, 54, 55, 56, 57],
  ];
  for (const bits of spreads) {
    const out = await run(dedupNear(hashOnly), [batchOf([near(0, H), near(1, flipBits(H, bits))])]);
    assert.deepEqual(kinds(out), ['keep', 'duplicate_near'], `bits ${bits}`);
  }
  const far = await run(dedupNear(hashOnly), [batchOf([near(0, H), near(1, flipBits(H, [0, 1, 2, 3, 16, 17, 18, 32, 33, 48, 49]))])]);
  assert.deepEqual(kinds(far), ['keep', 'keep']);
});

test('embeddings: cosine confirmation rejects a hash collision with a different image, accepts a near pair', async () => {
  const a = unit(512, 1);
  const other = unit(512, 2);
  const nearA = mix(a, other, 0.02); // cosine ~ 0.9998
  const cos = (x: Float32Array, y: Float32Array) => x.reduce((s, v, i) => s + v * y[i], 0);
  assert.ok(cos(a, other) < 0.2 && cos(a, nearA) > 0.99);
  const out = await run(dedupNear(hashOnly), [
    batchOf([
      near(0, H, { emb: a }),
      near(1, H, { emb: other }), // the same dHash, a different picture: kept
      near(2, flipBits(H, [5, 40]), { emb: nearA }), // a near copy of the first: filtered
    ]),
  ]);
  assert.deepEqual(kinds(out), ['keep', 'keep', 'duplicate_near']);
  // without embeddings the same three collide on the hash alone
  const blind = await run(dedupNear({ ...hashOnly, useEmbeddings: false }), [batchOf([near(0, H, { emb: a }), near(1, H, { emb: other }), near(2, flipBits(H, [5, 40]), { emb: nearA })])]);
  assert.deepEqual(kinds(blind), ['keep', 'duplicate_near', 'duplicate_near']);
  // a pair below the cosine threshold (1 - eps) is not a duplicate
  const apart = mix(a, other, 0.35);
  assert.ok(cos(a, apart) < 0.92);
  const out2 = await run(dedupNear(hashOnly), [batchOf([near(0, H, { emb: a }), near(1, H, { emb: apart })])]);
  assert.deepEqual(kinds(out2), ['keep', 'keep']);
});

/** a flat-colour thumbnail with one bright square at (x, y) */
function thumb(base: [number, number, number], x: number, y: number, size = 5): Uint8Array {
  const t = new Uint8Array(THUMB_SIDE * THUMB_SIDE * 3);
  for (let j = 0; j < THUMB_SIDE; j++) {
    for (let i = 0; i < THUMB_SIDE; i++) {
      const inside = i >= x && i < x + size && j >= y && j < y + size;
      for (let c = 0; c < 3; c++) t[(j * THUMB_SIDE + i) * 3 + c] = inside ? 240 : base[c];
    }
  }
  return t;
}

test('thumbnails: decide instead of the hash when there are no embeddings', async () => {
  const thumbs = new Map<number, Uint8Array>([
    [0, thumb([40, 90, 200], 4, 4)],
    [1, thumb([40, 90, 200], 4, 4)], // same picture, hash 9 bits away: duplicate
    [2, thumb([200, 60, 40], 8, 8)], // same hash as 0, different picture: kept
  ]);
  const op = dedupNear({ thumbnails: (s) => thumbs.get(s.coord.offset) ?? null });
  const out = await run(op, [batchOf([near(0, H), near(1, flipBits(H, [1, 9, 17, 20, 30, 33, 41, 50, 60])), near(2, H)])]);
  assert.deepEqual(kinds(out), ['keep', 'duplicate_near', 'keep']);
});

test('memory is bounded; LRU keeps a recently matched entry where FIFO evicts it', async () => {
  const hashes = ['0000000000000000', 'ffffffffffffffff', '00000000ffffffff', 'ffffffff00000000', '0f0f0f0f0f0f0f0f'];
  const seq = (ev: 'lru' | 'fifo') => {
    const state = new StateRegistry();
    const op = dedupNear({ ...hashOnly, memory: 3, eviction: ev, maxBits: 2, state });
    // A B C, then A again (a match refreshes A under LRU), then D E: two evictions, then A once more
    const order = [0, 1, 2, 0, 3, 4, 0];
    return run(op, [batchOf(order.map((h, i) => near(i, hashes[h])))]).then((out) => ({ out, state }));
  };
  const l = await seq('lru');
  assert.deepEqual(kinds(l.out), ['keep', 'keep', 'keep', 'duplicate_near', 'keep', 'keep', 'duplicate_near']);
  const f = await seq('fifo');
  assert.deepEqual(kinds(f.out), ['keep', 'keep', 'keep', 'duplicate_near', 'keep', 'keep', 'keep']);
  for (const { state } of [l, f]) {
    const snap = state.snapshot(partitionKey('t', 0)) as { dedup_near: NearSnapshot };
    assert.equal(Buffer.from(snap.dedup_near.flags, 'base64').length, 3);
  }
});

test('per-bucket cap: a full bucket forgets its oldest entry (hash-only entries nothing else reaches leave memory)', async () => {
  const state = new StateRegistry();
  // all share band 0 (the top 16 bits), the other bands differ a lot
  const hs = ['abcd000000000000', 'abcdffffffffffff', 'abcd0f0f0f0f0f0f', 'abcdf0f0f0f0f0f0'];
  const op = dedupNear({ ...hashOnly, perBucket: 2, maxBits: 4, state });
  await run(op, [batchOf(hs.map((h, i) => near(i, h)))]);
  const snap = (state.snapshot(partitionKey('t', 0)) as { dedup_near: NearSnapshot }).dedup_near;
  const masks = [...new Uint16Array(new Uint8Array(Buffer.from(snap.mask, 'base64')).buffer)];
  // entries 0 and 1 were pushed out of band 0's bucket; they remain indexed by bands 1-3
  assert.equal(masks.length, 4);
  assert.deepEqual(masks, [0b1110, 0b1110, 0b1111, 0b1111]);
  // entry 0 is still found through its other bands
  const again = await run(op, [batchOf([near(9, 'abcd000000000001')])]);
  assert.deepEqual(kinds(again), ['duplicate_near']);
});

test('partitions do not share memory; drop forgets a partition', async () => {
  const state = new StateRegistry();
  const op = dedupNear({ ...hashOnly, state });
  const out = await run(op, [batchOf([near(0, H, { partition: 0 })], 't', 0), batchOf([near(0, H, { partition: 1 })], 't', 1)]);
  assert.deepEqual(kinds(out), ['keep', 'keep']);
  state.drop(partitionKey('t', 0));
  const again = await run(op, [batchOf([near(1, H)], 't', 0)]);
  assert.deepEqual(kinds(again), ['keep']);
});

test('samples already dropped upstream, or without an image, are left alone', async () => {
  const a = near(0, H);
  a.outcome = { kind: 'filtered', reason: 'duplicate_exact' };
  const noImage = newSample({ topic: 't', partition: 0, offset: 1 }, Buffer.from('r'));
  noImage.event = event('x');
  const out = await run(dedupNear(hashOnly), [batchOf([a, noImage, near(2, H)])]);
  assert.deepEqual(kinds(out), ['duplicate_exact', 'keep', 'keep']);
});

test('snapshot/restore with embeddings and thumbnails equals an uninterrupted run; snapshot size per 10k entries', async (t) => {
  // 3000 samples: random hashes, a third re-used with a few bits flipped; embeddings for half of them
  let x = 12345;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const hex = () => Array.from({ length: 16 }, () => '0123456789abcdef'[Math.floor(rnd() * 16)]).join('');
  const specs: { h: string; e: number | null; th: number }[] = [];
  for (let i = 0; i < 3000; i++) {
    if (i > 10 && rnd() < 0.33) {
      const j = Math.floor(rnd() * i);
      specs.push({ h: flipBits(specs[j].h, [Math.floor(rnd() * 64), Math.floor(rnd() * 64)]), e: specs[j].e, th: specs[j].th });
    } else specs.push({ h: hex(), e: rnd() < 0.5 ? i : null, th: i });
  }
  const thumbOf = (i: number) => thumb([(i * 37) % 256, (i * 91) % 256, (i * 53) % 256], i % 11, (i >> 3) % 11);
  const build = (from_: number, to: number) => {
    const out: Batch[] = [];
    for (let i = from_; i < to; i += 250) {
      out.push(batchOf(specs.slice(i, Math.min(to, i + 250)).map((sp, k) => near(i + k, sp.h, sp.e === null ? {} : { emb: unit(64, sp.e) }))));
    }
    return out;
  };
  const opts = (state?: StateRegistry): DedupNearOptions => ({ memory: 1000, perBucket: 4, thumbnails: (s) => thumbOf(specs[s.coord.offset].th), state });
  const whole = kinds(await run(dedupNear(opts()), build(0, 3000)));
  assert.ok(whole.filter((k) => k === 'duplicate_near').length > 500);
  const state = new StateRegistry();
  const first = await run(dedupNear(opts(state)), build(0, 1700));
  const snap = JSON.parse(JSON.stringify(state.snapshot(partitionKey('t', 0))));
  const fresh = new StateRegistry();
  const op = dedupNear(opts(fresh));
  fresh.restore(partitionKey('t', 0), snap);
  const rest = await run(op, build(1700, 3000));
  assert.deepEqual([...kinds(first), ...kinds(rest)], whole);

  // size per 10k entries (measured on 2,500, sizes are linear), worst case for deflate, with and without 512-d embeddings
  const ENTRIES = 2500;
  const sizes: string[] = [];
  for (const variant of ['hash only', 'hash + thumbnail', 'hash + thumbnail + 512-d embedding'] as const) {
    const st = new StateRegistry();
    // random colour per quadrant plus per-pixel noise: far apart (cheap to scan) and incompressible (worst case)
    const noise = (_i: number) => {
      const quads = Array.from({ length: 12 }, () => Math.floor(rnd() * 256));
      return Uint8Array.from({ length: THUMB_SIDE * THUMB_SIDE * 3 }, (_, k) => {
        const px = Math.floor(k / 3);
        const q = ((Math.floor(px / THUMB_SIDE) < THUMB_SIDE / 2 ? 0 : 2) + (px % THUMB_SIDE < THUMB_SIDE / 2 ? 0 : 1)) * 3 + (k % 3);
        return Math.max(0, Math.min(255, quads[q] + Math.floor(rnd() * 33) - 16));
      });
    };
    const o = dedupNear({
      memory: ENTRIES,
      perBucket: ENTRIES,
      maxBits: 0,
      maxThumbDistance: 0,
      maxCrop: 0,
      thumbnails: variant === 'hash only' ? false : (s) => noise(s.coord.offset),
      state: st,
    });
    const batches: Batch[] = [];
    for (let i = 0; i < ENTRIES; i += 500) {
      batches.push(batchOf(Array.from({ length: 500 }, (_, k) => near(i + k, hex(), variant.endsWith('embedding') ? { emb: unit(512, i + k) } : {}))));
    }
    await run(o, batches);
    const snap = st.snapshot(partitionKey('t', 0));
    assert.equal(Buffer.from((snap as { dedup_near: NearSnapshot }).dedup_near.flags, 'base64').length, ENTRIES);
    const per10k = (JSON.stringify(snap).length * 10_000) / ENTRIES / 1024 / 1024;
    sizes.push(`${variant}: ${per10k.toFixed(2)} MiB`);
    // raw column bytes per entry: 35 (seq, dims, mask, flags, hex hash) + 768 thumbnail + 516 embedding, in base64
    assert.ok(per10k < (variant === 'hash only' ? 0.5 : variant === 'hash + thumbnail' ? 10.5 : 17.5), `${variant}: ${per10k} MiB per 10k`);
  }
  t.diagnostic(`snapshot JSON per 10k entries: ${sizes.join('; ')}`);
});

test('a snapshot with no state starts empty', async () => {
  const fresh = new StateRegistry();
  const op = dedupNear({ ...hashOnly, state: fresh });
  fresh.restore(partitionKey('t', 0), undefined);
  const out = await run(op, [batchOf([near(0, H), near(1, H)])]);
  assert.deepEqual(kinds(out), ['keep', 'duplicate_near']);
});
