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
 * changes no scores, copies or offsets, and keeps no state across restarts.
 *
 * @example
 * batches$.pipe(tag({ bundle }), domainWatch({ domain: () => bundle.calibration?.domain, onChange: (out, msg) => log(msg) }))
 */
import type { OperatorFunction } from 'rxjs';
import { type Batch, isKept } from './sample';
import { stage } from './stage';

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
  /** called when the stream goes out of the domain (true) or back (false) */
  onChange?: (out: boolean, message: string) => void;
  /** called after every batch with the share of the window below the floor */
  onShare?: (share: number) => void;
}

export function domainWatch(o: DomainWatchOptions): OperatorFunction<Batch, Batch> {
  const recent: boolean[] = [];
  let below = 0;
  let out = false;
  return stage('domain', (batch) => {
    const check = o.domain(batch);
    if (!check) return batch;
    const images = batch.samples.filter((s) => isKept(s) && s.image !== null && typeof s.scores.tag_confidence === 'number');
    for (const s of images) {
      const low = (s.scores.tag_confidence as number) < check.floor;
      recent.push(low);
      if (low) below++;
      while (recent.length > check.window) if (recent.shift()) below--;
    }
    const share = recent.length ? below / recent.length : 0;
    o.onShare?.(share);
    // judge only a full enough window (a quarter of it), so the first few images decide nothing
    // hysteresis: back in only below the middle of the expected and the warning share, so a stream near
    // the line does not flap
    const back = (check.expectedShare + check.warnShare) / 2;
    const now = recent.length >= Math.max(8, Math.floor(check.window / 4)) ? (out ? share > back : share > check.warnShare) : out;
    if (now !== out) {
      out = now;
      const name = o.name?.(batch) ?? 'the model bundle';
      o.onChange?.(
        out,
        out
          ? `${(share * 100).toFixed(0)}% of the last ${recent.length} images have no tag at confidence >= ${check.floor} (${(check.expectedShare * 100).toFixed(0)}% on the photos ${name} was calibrated on): this input looks unlike its training data; enrich adds no classes to those images until it recovers (squeeze_domain_out_share)`
          : `input looks like ${name}'s training data again (${(share * 100).toFixed(0)}% of the last ${recent.length} images without a confident tag)`,
      );
    }
    if (out) {
      for (const s of images) if ((s.scores.tag_confidence as number) < check.floor) s.flags.push('domain_out');
    }
    return batch;
  });
}
