/**
 * Hostile Avro crawl events for the decode tests (unit and Kafka): a valid header and fields, then a map or
 * an array block whose count claims far more entries than the record's bytes can hold.
 */

/** Avro's zig-zag varint of a (possibly huge) integer. */
export function zigzag(n: bigint): Buffer {
  let z = n >= 0n ? n * 2n : -n * 2n - 1n;
  const out: number[] = [];
  do {
    let b = Number(z & 0x7fn);
    z >>= 7n;
    if (z > 0n) b |= 0x80;
    out.push(b);
  } while (z > 0n);
  return Buffer.from(out);
}

const str = (s: string): Buffer => Buffer.concat([zigzag(BigInt(Buffer.byteLength(s))), Buffer.from(s)]);

/**
 * A crawl-event body (schemas/crawl-event.avsc, without the 5-byte registry header) up to its attrs map,
 * followed by `attrs` as raw bytes.
 */
export function crawlEventBody(id: string, attrs: Buffer): Buffer {
  return Buffer.concat([
    str(id),
    zigzag(0n), // url: null
    zigzag(1n), str('https://x.example/a.jpg'), // image_url
    zigzag(0n), // image: null
    str('a caption'),
    zigzag(1_700_000_000_000n), // crawl_time
    zigzag(0n), // source: null
    attrs,
  ]);
}

/** The attrs map bombs: a positive count, a negative count with a block size, both claiming 2^50 entries. */
export const MAP_BOMBS: Record<string, Buffer> = {
  'map count 2^50': zigzag(2n ** 50n),
  'map count -2^50 with block size 2': Buffer.concat([zigzag(-(2n ** 50n)), zigzag(2n)]),
  'map count 2^32, one entry present': Buffer.concat([zigzag(2n ** 32n), str('k'), str('v')]),
};

/** `header` (magic byte and schema id of a registered crawl-event schema) + a bomb body. */
export function bombRecord(header: Buffer, id: string, attrs: Buffer): Buffer {
  return Buffer.concat([header.subarray(0, 5), crawlEventBody(id, attrs)]);
}
