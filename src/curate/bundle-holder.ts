/**
 * The model bundle a curator runs with, swappable while it runs: a new version announced on the
 * control topic is loaded in the background and used from the next batch on; batches already
 * stamped with the old version finish with it (docs/ARCHITECTURE.md, Seams).
 */
import type { ModelBundle } from '../models/types';
import type { Batch } from '../operators/sample';

export class BundleHolder {
  private active: ModelBundle;
  private readonly loaded = new Map<string, ModelBundle>();

  constructor(initial: ModelBundle) {
    this.active = initial;
    this.loaded.set(initial.version, initial);
  }

  get version(): string {
    return this.active.version;
  }

  get current(): ModelBundle {
    return this.active;
  }

  /** Marks a batch (and its samples) with the version it will be processed with. */
  stamp(batch: Batch): void {
    batch.modelVersion = this.active.version;
    for (const s of batch.samples) s.modelVersion = this.active.version;
  }

  /** The bundle a stamped batch was meant for. */
  forBatch(batch: Batch): ModelBundle {
    return (batch.modelVersion && this.loaded.get(batch.modelVersion)) || this.active;
  }

  /** Makes `next` the bundle of later batches; keeps the previous one for batches in flight. */
  async swap(next: ModelBundle): Promise<void> {
    if (next.version === this.active.version) return void (await next.close());
    const stale = [...this.loaded.values()].filter((b) => b !== this.active);
    this.loaded.set(next.version, next);
    this.active = next;
    for (const b of stale) {
      this.loaded.delete(b.version);
      await b.close();
    }
  }

  async close(): Promise<void> {
    for (const b of this.loaded.values()) await b.close();
    this.loaded.clear();
  }
}
