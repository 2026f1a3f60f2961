import { newSample, type Batch, type Sample } from '../../src/operators/sample';
import type { CrawlEvent } from '../../src/records';

export function event(id: string, over: Partial<CrawlEvent> = {}): CrawlEvent {
  return {
    id,
    url: null,
    image_url: null,
    image: null,
    caption: `caption of ${id}`,
    crawl_time: 1_700_000_000_000,
    source: 'test',
    attrs: {},
    ...over,
  };
}

/** A kept sample with an event and a fake decoded image of `bytes` bytes. */
export function keptSample(offset: number, opts: { topic?: string; partition?: number; bytes?: number; time?: number; hash?: string } = {}): Sample {
  const s = newSample({ topic: opts.topic ?? 't', partition: opts.partition ?? 0, offset }, Buffer.from('raw'));
  s.event = event(`e${offset}`, { crawl_time: opts.time ?? 1_700_000_000_000 });
  s.caption = s.event.caption;
  s.image = {
    format: 'jpeg',
    width: 64,
    height: 64,
    contentHash: opts.hash ?? `${offset}`.padStart(64, '0'),
    dhash: '0'.repeat(16),
    bytes: Buffer.alloc(opts.bytes ?? 100, 1),
    mime: 'image/jpeg',
    inputs: null,
  };
  return s;
}

export function batchOf(samples: Sample[], topic = 't', partition = 0): Batch {
  return { topic, partition, samples };
}

/** A 4 x 4 patch grid. */
export const g4 = { rows: 4, cols: 4 };

/** Saliency over P patches where patch j has weight w(j), normalised. */
export const saliency = (P: number, w: (j: number) => number): Float32Array => {
  const a = Float32Array.from({ length: P }, (_, j) => w(j));
  const s = a.reduce((x, y) => x + y, 0);
  return a.map((x) => x / s);
};
