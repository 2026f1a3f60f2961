/**
 * dedupExact: drops a sample whose content hash (decodeImage's: of the stored bytes for JPEG and WebP kept
 * as they came, of the decoded pixels for re-encoded images) equals an earlier sample's of the same
 * partition (keep the first seen). Memory is a bounded LRU of 64-bit hash prefixes per partition,
 * snapshotted into the commit record so restarts and replays decide the same way.
 *
 * @example
 * batches$.pipe(decodeImage(...), dedupExact({ memory: 100_000, state }))
 */
import type { OperatorFunction } from 'rxjs';
import { z } from 'zod';
import { type Batch, filterOut, partitionKey } from './sample';
import { stage } from './stage';
import { partitionState, type StateRegistry } from './state';

export interface DedupExactOptions {
  /** most hashes remembered per partition */
  memory: number;
  state?: StateRegistry;
}

/** Insertion-ordered set with least-recently-seen eviction. */
class BoundedSet {
  private readonly items = new Set<string>();
  constructor(private readonly limit: number, initial: string[] = []) {
    for (const h of initial) this.add(h);
  }
  /** true when already present (and refreshes it) */
  seen(h: string): boolean {
    if (!this.items.has(h)) return false;
    this.items.delete(h);
    this.items.add(h);
    return true;
  }
  add(h: string): void {
    this.items.add(h);
    if (this.items.size > this.limit) this.items.delete(this.items.values().next().value as string);
  }
  toArray(): string[] {
    return [...this.items];
  }
  get size(): number {
    return this.items.size;
  }
}

/** The snapshot of one partition: the remembered hash prefixes, least recently seen first. */
const Snapshot = z.object({ hashes: z.array(z.string()) });

export function dedupExact(options: DedupExactOptions): OperatorFunction<Batch, Batch> {
  const forPartition = partitionState(options.state, 'dedup_exact', {
    empty: () => new BoundedSet(options.memory),
    schema: Snapshot,
    fromJson: (json) => new BoundedSet(options.memory, json.hashes),
    toJson: (set) => ({ hashes: set.toArray() }),
  });
  return stage('dedup_exact', (batch) => {
    const seen = forPartition(partitionKey(batch.topic, batch.partition));
    for (const s of batch.samples) {
      if (s.outcome.kind !== 'keep' || !s.image) continue;
      const h = s.image.contentHash.slice(0, 16);
      if (seen.seen(h)) filterOut(s, 'duplicate_exact');
      else seen.add(h);
    }
    return batch;
  });
}
