/**
 * Per-partition operator state. Stateful operators register here; the shard sink snapshots every
 * operator's state for a partition into that partition's commit record, and a restart, a partition
 * assignment or a replay restores it before the first batch (docs/ARCHITECTURE.md, Ordering and concurrency).
 */

export interface StatefulOperator {
  /** a JSON-able copy of the operator's state for one partition */
  snapshot(partition: string): unknown;
  /** restore one partition; `undefined` means start empty */
  restore(partition: string, state: unknown): void;
  /** forget a partition (revoked) */
  drop(partition: string): void;
}

export class StateRegistry {
  private readonly operators = new Map<string, StatefulOperator>();

  register(name: string, operator: StatefulOperator): void {
    if (this.operators.has(name)) throw new Error(`state for operator ${name} registered twice`);
    this.operators.set(name, operator);
  }

  snapshot(partition: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [name, op] of this.operators) out[name] = op.snapshot(partition);
    return out;
  }

  restore(partition: string, state: Record<string, unknown> | undefined): void {
    for (const [name, op] of this.operators) op.restore(partition, state?.[name]);
  }

  drop(partition: string): void {
    for (const op of this.operators.values()) op.drop(partition);
  }
}
