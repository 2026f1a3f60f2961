/**
 * A bounded walk over Avro binary data, run before the library decodes it. Avro's array and map blocks
 * start with an item count the decoder trusts: a 42-byte record that claims 2^50 map entries keeps a
 * plain decoder looping for months on the event loop. This walk follows the writer's schema over the bytes
 * once and refuses, as a `AvroBoundsError`, any count the remaining bytes cannot hold, any length past
 * the end, any union or enum index out of range, and nesting deeper than `maxDepth`. Its work is bounded by
 * the record's length (items that take no bytes, such as nulls, are capped by `maxEmptyItems`), so a record
 * that passes decodes in time proportional to its size.
 *
 * The types are avsc's (what @confluentinc/schemaregistry's Avro deserializer builds from the writer schema).
 */

/** The part of an avsc Type the walk reads. */
export interface AvroTypeLike {
  readonly typeName: string;
  readonly fields?: readonly { readonly type: AvroTypeLike }[];
  readonly types?: readonly AvroTypeLike[];
  readonly valuesType?: AvroTypeLike;
  readonly itemsType?: AvroTypeLike;
  readonly symbols?: readonly string[];
  readonly size?: number;
  readonly underlyingType?: AvroTypeLike;
}

export class AvroBoundsError extends Error {}

export interface AvroBoundsOptions {
  /** deepest nesting of records, unions, arrays and maps */
  maxDepth?: number;
  /** items that occupy no bytes (nulls, empty records) allowed in all blocks together */
  maxEmptyItems?: number;
}

/** Throws AvroBoundsError unless `bytes[start..]` is one well-formed value of `type` whose counts fit its length. */
export function checkAvroBounds(type: AvroTypeLike, bytes: Uint8Array, start: number, opts: AvroBoundsOptions = {}): void {
  const maxDepth = opts.maxDepth ?? 64;
  let emptyLeft = opts.maxEmptyItems ?? 65_536;
  const end = bytes.length;
  let pos = start;
  const fail = (what: string): never => {
    throw new AvroBoundsError(`Avro value is malformed at byte ${pos} of ${end}: ${what}`);
  };
  const need = (n: number, what: string): void => {
    if (n > end - pos) fail(`${what} needs ${n} bytes, ${end - pos} remain`);
    pos += n;
  };
  // a zig-zag varint as a double: exact below 2^53, and larger magnitudes are refused by every check anyway
  const long = (what: string): number => {
    let n = 0;
    let scale = 1;
    for (let i = 0; ; i++) {
      if (i === 10) fail(`${what} is longer than 10 bytes`);
      if (pos >= end) fail(`${what} runs past the end`);
      const b = bytes[pos++];
      n += (b & 0x7f) * scale;
      scale *= 128;
      if ((b & 0x80) === 0) break;
    }
    return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
  };

  const walk = (t: AvroTypeLike, depth: number): void => {
    if (depth > maxDepth) fail(`nested deeper than ${maxDepth}`);
    switch (t.typeName) {
      case 'null':
        return;
      case 'boolean':
        return need(1, 'a boolean');
      case 'int':
      case 'long':
      case 'abstract:long':
        long('a number');
        return;
      case 'float':
        return need(4, 'a float');
      case 'double':
        return need(8, 'a double');
      case 'string':
      case 'bytes': {
        const n = long(`a ${t.typeName} length`);
        if (n < 0) fail(`negative ${t.typeName} length ${n}`);
        return need(n, `a ${t.typeName}`);
      }
      case 'fixed':
        return need(t.size ?? 0, 'a fixed');
      case 'enum': {
        const i = long('an enum index');
        if (i < 0 || i >= (t.symbols?.length ?? 0)) fail(`enum index ${i} out of range`);
        return;
      }
      case 'union:unwrapped':
      case 'union:wrapped': {
        const i = long('a union index');
        const branches = t.types ?? [];
        if (i < 0 || i >= branches.length) fail(`union index ${i} out of range`);
        return walk(branches[i], depth + 1);
      }
      case 'record':
      case 'error':
        for (const f of t.fields ?? []) walk(f.type, depth + 1);
        return;
      case 'array':
      case 'map':
        return blocks(t, depth);
      default:
        if (t.typeName.startsWith('logical:') && t.underlyingType) return walk(t.underlyingType, depth);
        fail(`unsupported type ${t.typeName}`);
    }
  };

  // blocks of `count` items, ended by a zero count; a negative count is followed by the block's byte size
  const blocks = (t: AvroTypeLike, depth: number): void => {
    const isMap = t.typeName === 'map';
    const item = (isMap ? t.valuesType : t.itemsType)!;
    const least = (isMap ? 1 : 0) + minBytes(item);
    for (;;) {
      let count = long(`a ${t.typeName} block count`);
      if (count === 0) return;
      if (count < 0) {
        count = -count;
        const size = long(`a ${t.typeName} block size`);
        if (size < 0 || size > end - pos) fail(`${t.typeName} block of ${size} bytes, ${end - pos} remain`);
      }
      if (least > 0 && count * least > end - pos) fail(`${t.typeName} block claims ${count} entries, ${end - pos} bytes remain`);
      if (least === 0 && (emptyLeft -= count) < 0) fail(`${t.typeName} blocks claim more than ${opts.maxEmptyItems ?? 65_536} empty items`);
      for (let i = 0; i < count; i++) {
        if (isMap) {
          const n = long('a map key length');
          if (n < 0) fail(`negative map key length ${n}`);
          need(n, 'a map key');
        }
        walk(item, depth + 1);
      }
    }
  };

  walk(type, 0);
}

/** The fewest bytes a value of `t` can take (recursive references count as 0: a lower bound is enough). */
function minBytes(t: AvroTypeLike, seen: Set<AvroTypeLike> = new Set()): number {
  if (seen.has(t)) return 0;
  switch (t.typeName) {
    case 'null':
      return 0;
    case 'float':
      return 4;
    case 'double':
      return 8;
    case 'fixed':
      return t.size ?? 0;
    case 'record':
    case 'error': {
      seen.add(t);
      const n = (t.fields ?? []).reduce((sum, f) => sum + minBytes(f.type, seen), 0);
      seen.delete(t);
      return n;
    }
    default:
      if (t.typeName.startsWith('logical:') && t.underlyingType) return minBytes(t.underlyingType, seen);
      // boolean, int, long, string, bytes, enum, a union's index, an array's or map's end: one byte at least
      return 1;
  }
}
