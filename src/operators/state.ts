/**
 * Per-partition operator state. Stateful operators register here; the shard sink snapshots every
 * operator's state for a partition into that partition's commit record, and a restart, a partition
 * assignment or a replay restores it before the first batch (docs/ARCHITECTURE.md, Ordering and concurrency).
 */
import type { z } from 'zod';

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

/** How one stateful operator keeps its state per partition (`partitionState`). */
export interface PartitionStateSpec<S, J> {
  /** the state a partition starts with: a fresh partition, or a commit record written before this state existed */
  empty: (key: string) => S;
  /** the snapshot's JSON shape: a restore that does not match it fails with one line naming the operator */
  schema: z.ZodType<J, z.ZodTypeDef, unknown>;
  /** the state from a snapshot that passed the schema (may throw for what the schema cannot say) */
  fromJson: (json: J, key: string) => S;
  toJson: (state: S) => J;
}

/**
 * The per-partition skeleton of a stateful operator: one state object per partition key, created empty
 * on first use, registered with `registry` under `name` (snapshot, validated restore, drop). Returns the
 * accessor the operator calls once per batch with its partition key.
 */
export function partitionState<S, J>(registry: StateRegistry | undefined, name: string, spec: PartitionStateSpec<S, J>): (key: string) => S {
  const states = new Map<string, S>();
  const of = (key: string): S => {
    let s = states.get(key);
    if (s === undefined) states.set(key, (s = spec.empty(key)));
    return s;
  };
  registry?.register(name, {
    // a partition the operator has not seen yet has no state: null, which restores empty
    snapshot: (key) => {
      const s = states.get(key);
      return s === undefined ? null : spec.toJson(s);
    },
    restore: (key, json) => {
      if (json == null) return void states.set(key, spec.empty(key));
      const parsed = spec.schema.safeParse(json);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new Error(`${name}: malformed state snapshot for ${key}: ${issue.path.join('.') || 'the snapshot'}: ${issue.message}`);
      }
      states.set(key, spec.fromJson(parsed.data, key));
    },
    drop: (key) => void states.delete(key),
  });
  return of;
}
