/**
 * Seeded randomness for the synthetic crawl. Everything in `src/gen` draws from here, never from
 * Math.random, so the same seed always yields byte-identical events.
 */
import { fmix32 } from '../util/hash';

/**
 * Hashes a list of numbers into one 32-bit seed. Numbers are taken as integers; values beyond 32 bits
 * (any safe integer) contribute both halves, so seeds 1 and 2^32 + 1 differ.
 */
export function hashSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = fmix32((h ^ lo) + 0x7f4a7c15);
    h = fmix32((h ^ hi) + 0x165667b1);
  }
  return h;
}

/** mulberry32: tiny, fast, good enough for test data, and fully determined by its 32-bit state. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform float in [lo, hi). */
  float(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [lo, hi], both ends included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** Picks by weight; weights need not sum to 1. */
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of items) total += w;
    let u = this.next() * total;
    for (const [v, w] of items) {
      if (u < w) return v;
      u -= w;
    }
    return items[items.length - 1]![0];
  }

  /** Fisher-Yates in place; returns the same array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = items[i] as T;
      items[i] = items[j] as T;
      items[j] = t;
    }
    return items;
  }

  /** An independent stream, so later draws here do not shift the child's sequence. */
  fork(tag: number): Rng {
    return new Rng(hashSeed(this.u32(), tag));
  }
}
