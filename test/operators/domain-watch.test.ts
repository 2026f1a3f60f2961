import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, from, toArray } from 'rxjs';
import { domainWatch, type DomainCheck } from '../../src/operators/domain-watch';
import { type Batch, partitionKey } from '../../src/operators/sample';
import { StateRegistry } from '../../src/operators/state';
import { batchOf, keptSample } from '../helpers/samples';

const CHECK: DomainCheck = { floor: 0.5, expectedShare: 0.1, warnShare: 0.4, window: 40 };

/** batches of 10 samples of one partition whose best tag confidence is below the floor with the given shares */
function stream(shares: number[], partition = 0, first = 0): Batch[] {
  let offset = first;
  return shares.map((share) =>
    batchOf(
      Array.from({ length: 10 }, (_, i) => {
        const s = keptSample(offset++, { partition });
        // the batch's low images spread evenly through it (0.3: the 4th, 7th and 10th)
        const k = Math.round(share * 10);
        s.scores.tag_confidence = Math.floor(((i + 1) * k) / 10) > Math.floor((i * k) / 10) ? 0.2 : 0.9;
        return s;
      }),
      't',
      partition,
    ),
  );
}

/** the offsets flagged `domain_out`, per batch */
const flagged = (batches: Batch[]): number[][] =>
  batches.map((b) => b.samples.filter((s) => s.flags.includes('domain_out')).map((s) => s.coord.offset));

/** one operator instance registered in `state` (restore into it before running); runs batches through it */
function watcher(state: StateRegistry, events: string[] = []): (batches: Batch[]) => Promise<Batch[]> {
  const op = domainWatch({ domain: () => CHECK, state, onChange: (_, m) => events.push(m) });
  return (batches) => firstValueFrom(from(batches).pipe(op, toArray()));
}

async function run(shares: number[], given: DomainCheck | null = CHECK) {
  const check = given ?? undefined;
  const events: boolean[] = [];
  const seen: number[] = [];
  const out = await firstValueFrom(
    from(stream(shares)).pipe(domainWatch({ domain: () => check, onChange: (o) => events.push(o), onShare: (s) => seen.push(s) }), toArray()),
  );
  return { events, seen, out };
}

test('in-domain streams never warn; a shift out warns once, flags the images below the floor, and recovery is announced', async () => {
  assert.deepEqual((await run([0.1, 0.2, 0.1, 0, 0.1, 0.2])).events, []);
  const r = await run([0.1, 0.1, 0.1, 0.1, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0, 0, 0, 0, 0]);
  assert.deepEqual(r.events, [true, false]);
  const flaggedPerBatch = r.out.map((b) => b.samples.filter((s) => s.flags.includes('domain_out')).length);
  assert.equal(flaggedPerBatch.slice(0, 4).reduce((a, b) => a + b, 0), 0, 'nothing flagged while in domain');
  assert.ok(flaggedPerBatch.slice(6, 10).every((n) => n === 8), 'every low image flagged while out');
  for (const b of r.out) for (const s of b.samples) if (s.flags.includes('domain_out')) assert.ok(s.scores.tag_confidence! < CHECK.floor);
});

test('hysteresis: a share between the middle and the warning line after a warning keeps the state', async () => {
  // out at 0.8, then 0.3 (below warn 0.4, above the middle 0.25): no recovery announced
  assert.deepEqual((await run([0.8, 0.8, 0.8, 0.8, 0.3, 0.3, 0.3, 0.3, 0.3])).events, [true]);
});

test('judges nothing before a quarter of the window, and nothing without a calibrated check', async () => {
  assert.deepEqual((await run([1], { ...CHECK, window: 400 })).events, [], '10 images of a 400 window');
  const none = await run([1, 1, 1, 1, 1, 1], null);
  assert.deepEqual(none.events, []);
  assert.deepEqual(none.seen, []);
});

test('partitions are judged apart: one partition going out flags nothing in another interleaved with it', async () => {
  // A: in the domain, then far out; B: a steady 30% below the floor (out only if A's images counted)
  const a = stream([0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], 0);
  const b = stream([0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], 1);
  const events: string[] = [];
  const out = await watcher(new StateRegistry(), events)(a.flatMap((x, i) => [x, b[i]]));
  const byPartition = (p: number) => flagged(out.filter((x) => x.partition === p)).flat().length;
  assert.ok(byPartition(0) > 0, 'A is flagged');
  assert.equal(byPartition(1), 0, "A's crossing flags nothing in B");
  assert.equal(events.length, 1);
  assert.match(events[0], /^t\[0\]: /, 'the warning names the partition');
});

test('a snapshot taken mid-stream and restored into a fresh operator flags exactly as an uninterrupted run', async () => {
  // out at 0.8, then 0.3 (kept out by hysteresis): a fresh window would not flag those images
  const shares = [0.1, 0.1, 0.8, 0.8, 0.8, 0.8, 0.3, 0.3, 0.3, 0.3, 0, 0, 0, 0];
  const whole = flagged(await watcher(new StateRegistry())(stream(shares)));
  for (const split of [1, 4, 6, 8, 11]) {
    const first = new StateRegistry();
    const head = await watcher(first)(stream(shares.slice(0, split)));
    // through JSON, as the commit record stores it
    const saved = JSON.parse(JSON.stringify(first.snapshot(partitionKey('t', 0)))) as Record<string, unknown>;
    const second = new StateRegistry();
    const events: string[] = [];
    const resumed = watcher(second, events);
    second.restore(partitionKey('t', 0), saved);
    const tail = await resumed(stream(shares.slice(split), 0, split * 10));
    assert.deepEqual([...flagged(head), ...flagged(tail)], whole, `split after batch ${split}`);
    const wasOut = (saved.domain as { out: boolean }).out;
    if (wasOut) assert.ok(!events.some((m) => /looks unlike/.test(m)), 'a restored out state is not announced again');
  }
  assert.ok(whole.slice(6, 10).every((f) => f.length === 3), 'the 0.3 batches after the crossing are flagged');
});

test('the snapshot is compact; no state (an older commit record) starts empty; a malformed one fails clearly', async () => {
  const reg = new StateRegistry();
  await watcher(reg)(stream([0.8, 0.8, 0.8, 0.8, 0.8, 0.8]));
  const snap = reg.snapshot(partitionKey('t', 0)).domain as { v: number; w: string; out: boolean };
  assert.equal(snap.v, 1);
  assert.equal(snap.out, true);
  assert.equal(snap.w.length, CHECK.window);
  assert.match(snap.w, /^(0111101111){4}$/, 'the last 40 images, oldest first');
  assert.equal(reg.snapshot(partitionKey('t', 9)).domain, null, 'a partition never seen has no state');

  // a commit record written before the domain state existed: the registry passes undefined
  const old = new StateRegistry();
  const run = watcher(old);
  old.restore(partitionKey('t', 0), { dedup_exact: { hashes: [] } });
  assert.deepEqual(old.snapshot(partitionKey('t', 0)).domain, { v: 1, w: '', out: false });
  assert.deepEqual(flagged(await run(stream([0.3, 0.3, 0.3, 0.3, 0.3]))).flat(), [], 'empty and in the domain');

  for (const bad of ['garbage', 7, { v: 2, w: '', out: false }, { v: 1, w: '01x', out: true }, { v: 1, w: '01', out: 'yes' }, { v: 1, out: false }]) {
    const reg2 = new StateRegistry();
    watcher(reg2);
    assert.throws(() => reg2.restore(partitionKey('t', 0), { domain: bad }), /^Error: domain: malformed state snapshot/, JSON.stringify(bad));
  }
});

test('the same records in other batches flag the same images (Kafka fetches differ from run to run)', async () => {
  const shares = [0.1, 0.1, 0.8, 0.8, 0.8, 0.8, 0.3, 0.3, 0.3, 0.3, 0, 0, 0, 0];
  const samples = () => stream(shares).flatMap((b) => b.samples);
  const rebatch = (size: number): Batch[] => {
    const all = samples();
    return Array.from({ length: Math.ceil(all.length / size) }, (_, i) => batchOf(all.slice(i * size, (i + 1) * size), 't', 0));
  };
  const offsets = async (size: number) => flagged(await watcher(new StateRegistry())(rebatch(size))).flat();
  const by10 = await offsets(10);
  assert.ok(by10.length > 20);
  for (const size of [1, 7, 33, 140]) assert.deepEqual(await offsets(size), by10, `batches of ${size}`);
});
