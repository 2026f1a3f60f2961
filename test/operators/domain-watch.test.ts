import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstValueFrom, from, toArray } from 'rxjs';
import { domainWatch, type DomainCheck } from '../../src/operators/domain-watch';
import type { Batch } from '../../src/operators/sample';
import { batchOf, keptSample } from '../helpers/samples';

const CHECK: DomainCheck = { floor: 0.5, expectedShare: 0.1, warnShare: 0.4, window: 40 };

/** batches of 10 samples whose best tag confidence is below the floor with the given shares */
function stream(shares: number[]): Batch[] {
  let offset = 0;
  return shares.map((share) =>
    batchOf(
      Array.from({ length: 10 }, (_, i) => {
        const s = keptSample(offset++);
        s.scores.tag_confidence = i < Math.round(share * 10) ? 0.2 : 0.9;
        return s;
      }),
    ),
  );
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
