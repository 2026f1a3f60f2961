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
import { type Batch, filter, partitionKey } from './sample';
import { stage } from './stage';
import type { StateRegistry } from './state';

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

export function dedupExact(options: DedupExactOptions): OperatorFunction<Batch, Batch> {
  const memory = new Map<string, BoundedSet>();
  const forPartition = (key: string): BoundedSet => {
    let set = memory.get(key);
    if (!set) memory.set(key, (set = new BoundedSet(options.memory)));
    return set;
  };
  options.state?.register('dedup_exact', {
    snapshot: (key) => ({ hashes: memory.get(key)?.toArray() ?? [] }),
    restore: (key, state) => {
      const hashes = (state as { hashes?: string[] } | undefined)?.hashes ?? [];
      memory.set(key, new BoundedSet(options.memory, hashes));
    },
    drop: (key) => void memory.delete(key),
  });
  return stage('dedup_exact', (batch) => {
    const seen = forPartition(partitionKey(batch.topic, batch.partition));
    for (const s of batch.samples) {
      if (s.outcome.kind !== 'keep' || !s.image) continue;
      const h = s.image.contentHash.slice(0, 16);
      if (seen.seen(h)) filter(s, 'duplicate_exact');
      else seen.add(h);
    }
    return batch;
  });
}
