/**
 * domainWatch: notices a stream that looks unlike what the model bundle was calibrated on (issue: the
 * photo bundle fed generated shapes, or the shapes bundle fed photos). The statistic is each image's
 * best tag confidence (`s.scores.tag_confidence`, the top detection or zero-shot score); an image is
 * "out" when it is below the bundle's calibrated floor. Over the last `window` images, the share that is
 * out is compared with `warnShare` (the builder sets it well above the share seen on its calibration
 * photos, `expectedShare`).
 *
 * Once above it, the stream counts as out until the share falls below the middle of `expectedShare` and
 * `warnShare` (hysteresis). While out, every image below the floor is flagged `domain_out` (enrich then adds no
 * classes to its caption), and `onChange` hears the new state once per crossing, with a one-line message:
 * the curator logs it and exports the share as the `squeeze_domain_out_share` gauge. Advisory only: it
 * changes no scores, copies or offsets.
 *
 * The window and the out state are kept per partition and registered as `domain` state, so the flags
 * (and with them the captions) of a partition depend only on its records and how they were batched, not
 * on restarts, partition assignment or other partitions' batches: the curator runs this stage first in
 * the stateful section, one batch at a time, and restores its state from the commit record. The state
 * is `{ v: 1, w: "0110…", out }`, one character per windowed image (1: below the floor), oldest first; a
 * partition without one (a fresh one, or a commit record written before this state existed) starts
 * empty and in the domain. The state is judged after each image, in offset order, so a different batching
 * of the same records (Kafka fetches differ from run to run) flags the same images.
 *
 * @example
 * batches$.pipe(tag({ bundle }), domainWatch({ domain: () => bundle.calibration?.domain, state, onChange: (out, msg) => log(msg) }))
 */
import type { OperatorFunction } from 'rxjs';
import { z } from 'zod';
import { type Batch, isKept, partitionKey } from './sample';
import { stage } from './stage';
import { partitionState, type StateRegistry } from './state';

export interface DomainCheck {
  floor: number;
  expectedShare: number;
  warnShare: number;
  window: number;
}

export interface DomainWatchOptions {
  /** the check of the batch's bundle; undefined: nothing to check against */
  domain: (batch: Batch) => DomainCheck | undefined;
  /** the bundle's name for messages */
  name?: (batch: Batch) => string;
  /** called when a partition's stream goes out of the domain (true) or back (false) */
  onChange?: (out: boolean, message: string) => void;
  /** called after every batch with the share of its partition's window below the floor */
  onShare?: (share: number) => void;
  /** where the per-partition state registers (as `domain`); absent: kept in memory only */
  state?: StateRegistry;
}

/** The JSON state of one partition (what goes into commit records). */
export const DomainWatchSnapshot = z.object({
  v: z.literal(1),
  /** the window, oldest first: '1' below the floor, '0' not */
  w: z.string().regex(/^[01]*$/, 'the window is a string of 0s and 1s'),
  /** whether the partition's stream counts as out of the domain */
  out: z.boolean(),
});
export type DomainWatchState = z.infer<typeof DomainWatchSnapshot>;

/** One partition's window of below-floor flags and its out state. */
class DomainWindow {
  out = false;
  private below = 0;
  constructor(private readonly recent: boolean[] = []) {
    for (const low of recent) if (low) this.below++;
  }

  static restore(s: DomainWatchState): DomainWindow {
    const w = new DomainWindow([...s.w].map((c) => c === '1'));
    w.out = s.out;
    return w;
  }

  snapshot(): DomainWatchState {
    return { v: 1, w: this.recent.map((low) => (low ? '1' : '0')).join(''), out: this.out };
  }

  get size(): number {
    return this.recent.length;
  }

  get share(): number {
    return this.recent.length ? this.below / this.recent.length : 0;
  }

  /** adds one image; keeps the last `limit` (a bundle swapped in may have another window) */
  push(low: boolean, limit: number): void {
    this.recent.push(low);
    if (low) this.below++;
    while (this.recent.length > limit) if (this.recent.shift()) this.below--;
  }
}

export function domainWatch(o: DomainWatchOptions): OperatorFunction<Batch, Batch> {
  const forPartition = partitionState(o.state, 'domain', {
    empty: () => new DomainWindow(),
    schema: DomainWatchSnapshot,
    fromJson: (json) => DomainWindow.restore(json),
    toJson: (w) => w.snapshot(),
  });
  return stage('domain', (batch) => {
    const check = o.domain(batch);
    if (!check) return batch;
    const w = forPartition(partitionKey(batch.topic, batch.partition));
    const images = batch.samples.filter((s) => isKept(s) && s.image !== null && typeof s.scores.tag_confidence === 'number');
    // hysteresis: back in only below the middle of the expected and the warning share, so a stream near
    // the line does not flap
    const back = (check.expectedShare + check.warnShare) / 2;
    // judged image by image, in offset order: the flags do not depend on where batches begin and end
    for (const s of images) {
      const low = (s.scores.tag_confidence as number) < check.floor;
      w.push(low, check.window);
      const share = w.share;
      // judge only a full enough window (a quarter of it), so the first few images decide nothing
      const now = w.size >= Math.max(8, Math.floor(check.window / 4)) ? (w.out ? share > back : share > check.warnShare) : w.out;
      if (now !== w.out) {
        w.out = now;
        const name = o.name?.(batch) ?? 'the model bundle';
        const where = `${batch.topic}[${batch.partition}]`;
        o.onChange?.(
          now,
          now
            ? `${where}: ${(share * 100).toFixed(0)}% of the last ${w.size} images have no tag at confidence >= ${check.floor} (${(check.expectedShare * 100).toFixed(0)}% on the photos ${name} was calibrated on): this input looks unlike its training data; enrich adds no classes to those images until it recovers (squeeze_domain_out_share)`
            : `${where}: input looks like ${name}'s training data again (${(share * 100).toFixed(0)}% of the last ${w.size} images without a confident tag)`,
        );
      }
      if (w.out && low) s.flags.push('domain_out');
    }
    o.onShare?.(w.share);
    return batch;
  });
}
