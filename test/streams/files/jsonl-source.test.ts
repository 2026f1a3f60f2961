import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { DEAD_REASONS } from '../../../src/records';
import { openFileSource } from '../../../src/streams/files/file-source';
import { type FileRecord, type FileSourceLimits } from '../../../src/streams/files/file-record';

const limits: FileSourceLimits = { maxRecordBytes: 4096, maxImageBytes: 2048 };

async function collect(it: AsyncIterable<FileRecord>): Promise<FileRecord[]> {
  const out: FileRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

function line(obj: Record<string, unknown>): string {
  return JSON.stringify({ crawl_time: 1700000000000, caption: 'a red square', ...obj });
}

describe('jsonl-source', () => {
  let dir: string;
  let outside: string;
  let jpeg: Buffer;
  let png: Buffer;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'squeeze-jsonl-'));
    outside = fs.mkdtempSync(path.join(os.tmpdir(), 'squeeze-outside-'));
    jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#f00' } }).jpeg().toBuffer();
    png = await sharp({ create: { width: 16, height: 8, channels: 3, background: '#00f' } }).png().toBuffer();
    fs.mkdirSync(path.join(dir, 'img'));
    fs.writeFileSync(path.join(dir, 'img', 'a.png'), png);
    fs.writeFileSync(path.join(dir, 'img', 'big.png'), Buffer.alloc(limits.maxImageBytes + 1, 1));
    fs.writeFileSync(path.join(outside, 'secret.jpg'), jpeg);
    fs.symlinkSync(path.join(outside, 'secret.jpg'), path.join(dir, 'img', 'link-out.jpg'));
    fs.symlinkSync(path.join(dir, 'img', 'a.png'), path.join(dir, 'img', 'link-in.png'));
  });

  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });

  it('maps good lines and dead-letters bad ones, one contiguous offset per line', async () => {
    const lines = [
      /* 0 */ line({ id: 'b64', image_b64: jpeg.toString('base64'), url: 'https://page.example/1', attrs: { lang: 'en', n: 3, ok: true, nil: null } }),
      /* 1 */ line({ id: 'path', image_path: 'img/a.png', source: 'shard-7' }),
      /* 2 */ line({ id: 'remote', image_url: 'https://img.example/x.jpg', caption: undefined, crawl_time: '2024-01-02T03:04:05Z' }),
      /* 3 */ '[1, 2, 3]',
      /* 4 */ '"just a string"',
      /* 5 */ '{"id": "trunc", "caption": "half a reco',
      /* 6 */ line({ id: 'huge', image_url: 'https://img.example/h.jpg', caption: 'x'.repeat(limits.maxRecordBytes * 3) }),
      /* 7 */ line({ id: 'traversal', image_path: '../../etc/passwd' }),
      /* 8 */ line({ id: 'absolute', image_path: '/etc/passwd' }),
      /* 9 */ line({ id: 'symlink-out', image_path: 'img/link-out.jpg' }),
      /* 10 */ line({ id: 'missing-file', image_path: 'img/nope.jpg' }),
      /* 11 */ line({ id: '', image_url: 'https://img.example/e.jpg' }),
      /* 12 */ line({ id: 'x'.repeat(257), image_url: 'https://img.example/l.jpg' }),
      /* 13 */ line({ id: 'no-image' }),
      /* 14 */ line({ id: 'bad-b64', image_b64: '!!!not base64!!!' }),
      /* 15 */ line({ id: 'big-b64', image_b64: Buffer.alloc(limits.maxImageBytes + 10, 7).toString('base64') }),
      /* 16 */ line({ id: 'big-file', image_path: 'img/big.png' }),
      /* 17 */ line({ image_url: 'https://img.example/noid.jpg' }),
      /* 18 */ line({ id: 'bad-caption', image_url: 'https://img.example/c.jpg', caption: 42 }),
      /* 19 */ JSON.stringify({ id: 'no-time', image_url: 'https://img.example/t.jpg' }),
      /* 20 */ line({ id: 'both', image_b64: jpeg.toString('base64'), image_path: 'img/a.png' }),
      /* 21 */ line({ id: 'symlink-in', image_path: 'img/link-in.png' }),
      /* 22 */ line({ id: 'dir-as-image', image_path: 'img' }),
      /* 23 */ line({ id: 'data-uri', image_b64: `data:image/jpeg;base64,${jpeg.toString('base64')}` }),
      /* 24 */ line({ id: 'bad-attrs', image_url: 'https://img.example/a.jpg', attrs: ['x'] }),
      /* 25 */ line({ id: 'sneaky', image_path: 'img/../../' + path.basename(outside) + '/secret.jpg' }),
    ];
    const file = path.join(dir, 'crawl.jsonl');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const recs = await collect(openFileSource(file, limits));

    assert.equal(recs.length, lines.length);
    recs.forEach((r, i) => {
      assert.deepEqual(r.coord, { topic: 'crawl.jsonl', partition: 0, offset: i });
      assert.equal((r.event === null) !== (r.error === null), true, `record ${i}: exactly one of event/error`);
      if (r.error) assert.ok(DEAD_REASONS.includes(r.error.reason));
      assert.ok(r.raw.length <= limits.maxRecordBytes);
    });
    const reason = (i: number): string | undefined => recs[i].error?.reason;

    const b64 = recs[0].event!;
    assert.equal(b64.id, 'b64');
    assert.deepEqual(b64.image, jpeg);
    assert.equal(b64.url, 'https://page.example/1');
    assert.equal(b64.image_url, null);
    assert.equal(b64.caption, 'a red square');
    assert.equal(b64.crawl_time, 1700000000000);
    assert.equal(b64.source, 'crawl.jsonl');
    assert.deepEqual(b64.attrs, { lang: 'en', n: '3', ok: 'true' });
    assert.equal(recs[0].raw.toString(), lines[0]);

    assert.deepEqual(recs[1].event!.image, png);
    assert.equal(recs[1].event!.source, 'shard-7');

    const remote = recs[2].event!;
    assert.equal(remote.image, null);
    assert.equal(remote.image_url, 'https://img.example/x.jpg');
    assert.equal(remote.caption, '', 'a missing caption reads as empty');
    assert.equal(remote.crawl_time, Date.parse('2024-01-02T03:04:05Z'));

    assert.equal(reason(3), 'schema_error');
    assert.match(recs[3].error!.message, /not a JSON object/);
    assert.equal(reason(4), 'schema_error');
    assert.equal(reason(5), 'schema_error');
    assert.match(recs[5].error!.message, /invalid JSON/);

    assert.equal(reason(6), 'record_too_large');
    assert.equal(recs[6].raw.length, limits.maxRecordBytes);
    assert.equal(recs[6].rawBytes, Buffer.byteLength(lines[6]));
    assert.equal(recs[6].raw.toString(), lines[6].slice(0, limits.maxRecordBytes));

    assert.equal(reason(7), 'path_blocked');
    assert.equal(reason(8), 'path_blocked');
    assert.equal(reason(9), 'path_blocked');
    assert.match(recs[9].error!.message, /symlink/);
    assert.equal(reason(10), 'missing_image');
    assert.equal(reason(11), 'id_invalid');
    assert.equal(reason(12), 'id_invalid');
    assert.equal(reason(13), 'missing_image');
    assert.equal(recs[13].error!.id, 'no-image');
    assert.equal(reason(14), 'decode_error');
    assert.equal(reason(15), 'image_too_large');
    assert.equal(reason(16), 'image_too_large');
    assert.equal(reason(17), 'schema_error');
    assert.match(recs[17].error!.message, /\bid\b/);
    assert.equal(reason(18), 'schema_error');
    assert.match(recs[18].error!.message, /caption/);
    // no crawl_time (img2dataset and LAION JSONL have none): 0, unknown, as for Parquet metadata
    assert.equal(recs[19].error, null);
    assert.equal(recs[19].event!.crawl_time, 0);
    assert.equal(reason(20), 'schema_error');
    assert.deepEqual(recs[21].event!.image, png);
    assert.equal(reason(22), 'missing_image');
    assert.deepEqual(recs[23].event!.image, jpeg);
    assert.equal(reason(24), 'schema_error');
    assert.match(recs[24].error!.message, /attrs/);
    assert.equal(reason(25), 'path_blocked');
  });

  it('skips blank lines without an offset and handles CRLF, a BOM and a last line without newline', async () => {
    const a = line({ id: 'a', image_url: 'https://img.example/a.jpg' });
    const b = line({ id: 'b', image_url: 'https://img.example/b.jpg' });
    const c = line({ id: 'c', image_url: 'https://img.example/c.jpg' });
    const file = path.join(dir, 'blank.ndjson');
    fs.writeFileSync(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`${a}\r\n\r\n   \n${b}\n\n${c}`)]));
    const recs = await collect(openFileSource(file, limits));
    assert.deepEqual(
      recs.map((r) => [r.coord.offset, r.event?.id]),
      [
        [0, 'a'],
        [1, 'b'],
        [2, 'c'],
      ],
    );
    assert.equal(recs[0].raw.toString(), a);
  });

  it('streams many lines across read-chunk boundaries in order', async () => {
    const n = 3000;
    const body = Array.from({ length: n }, (_, i) => line({ id: `id-${i}`, image_url: `https://img.example/${i}.jpg`, caption: 'é'.repeat(i % 50) })).join('\n');
    const file = path.join(dir, 'many.json');
    fs.writeFileSync(file, body);
    assert.ok(body.length > 4 * 64 * 1024);
    let i = 0;
    for await (const r of openFileSource(file, limits)) {
      assert.equal(r.coord.offset, i);
      assert.equal(r.event?.id, `id-${i}`);
      assert.equal(r.event?.caption, 'é'.repeat(i % 50));
      i++;
    }
    assert.equal(i, n);
  });

  it('drops a very long line holding only maxRecordBytes of it', async () => {
    const file = path.join(dir, 'long.jsonl');
    const long = line({ id: 'long', image_url: 'https://img.example/l.jpg', caption: 'y'.repeat(8 << 20) });
    const ok = line({ id: 'after', image_url: 'https://img.example/a.jpg' });
    fs.writeFileSync(file, `${long}\n${ok}\n`);
    const recs = await collect(openFileSource(file, { maxRecordBytes: 1024, maxImageBytes: 1024 }));
    assert.equal(recs.length, 2);
    assert.equal(recs[0].error?.reason, 'record_too_large');
    assert.equal(recs[0].raw.length, 1024);
    assert.equal(recs[0].rawBytes, Buffer.byteLength(long));
    assert.equal(recs[1].event?.id, 'after');
    assert.equal(recs[1].coord.offset, 1);
  });

  it('imageRoot: image_path is relative to the root; symlinks that stay inside it are followed, escapes are refused naming the root', async () => {
    // the crawl keeps its images away from the JSONL file, reached through a symlinked root
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'squeeze-root-'));
    const real = path.join(base, 'images');
    fs.mkdirSync(path.join(real, 'shard-1'), { recursive: true });
    fs.mkdirSync(path.join(base, 'meta'));
    fs.writeFileSync(path.join(real, 'shard-1', 'a.png'), png);
    fs.symlinkSync(path.join(real, 'shard-1', 'a.png'), path.join(real, 'alias.png'));
    fs.symlinkSync(path.join(real, 'shard-1'), path.join(real, 'latest'));
    fs.symlinkSync(path.join(outside, 'secret.jpg'), path.join(real, 'out.jpg'));
    fs.writeFileSync(path.join(base, 'beside-root.png'), png);
    const rootLink = path.join(base, 'root-link');
    fs.symlinkSync(real, rootLink);
    const file = path.join(base, 'meta', 'crawl.jsonl');
    const lines = [
      /* 0 */ line({ id: 'plain', image_path: 'shard-1/a.png' }),
      /* 1 */ line({ id: 'file-link', image_path: 'alias.png' }),
      /* 2 */ line({ id: 'dir-link', image_path: 'latest/a.png' }),
      /* 3 */ line({ id: 'link-out', image_path: 'out.jpg' }),
      /* 4 */ line({ id: 'dotdot', image_path: '../beside-root.png' }),
      /* 5 */ line({ id: 'absolute', image_path: path.join(real, 'shard-1', 'a.png') }),
      /* 6 */ line({ id: 'beside-jsonl', image_path: 'crawl.jsonl' }),
    ];
    fs.writeFileSync(file, lines.join('\n') + '\n');
    try {
      const recs = await collect(openFileSource(file, limits, { imageRoot: rootLink }));
      for (const i of [0, 1, 2]) assert.deepEqual(recs[i].event?.image, png, `record ${i}: ${recs[i].error?.message}`);
      const blocked = (i: number, why: RegExp): void => {
        assert.equal(recs[i].error?.reason, 'path_blocked', `record ${i}`);
        assert.match(recs[i].error!.message, why);
        assert.ok(recs[i].error!.message.includes(`the image root ${fs.realpathSync(real)}`), recs[i].error!.message);
      };
      blocked(3, /resolves \(through a symlink\) outside the image root/);
      blocked(4, /escapes the image root/);
      blocked(5, /is absolute; it must be relative to the image root/);
      assert.equal(recs[6].error?.reason, 'missing_image', 'paths resolve under the root, not beside the JSONL file');
      // without a root, the same file resolves beside itself: the old rule, unchanged
      const defaults = await collect(openFileSource(file, limits));
      assert.equal(defaults[0].error?.reason, 'missing_image');
      assert.match(defaults[4].error!.message, /escapes the JSONL file's directory/);
      // a root that does not exist or is not a directory is the user's mistake, before any record
      assert.throws(() => openFileSource(file, limits, { imageRoot: path.join(base, 'nope') }), /image root not found: .*nope/);
      assert.throws(() => openFileSource(file, limits, { imageRoot: file }), /image root .*crawl\.jsonl is not a directory/);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('throws a clear error for a missing file or an unknown kind of input', () => {
    assert.throws(() => openFileSource(path.join(dir, 'absent.jsonl'), limits), /input not found: .*absent\.jsonl/);
    const csv = path.join(dir, 'x.csv');
    fs.writeFileSync(csv, 'a,b\n');
    assert.throws(() => openFileSource(csv, limits), /unsupported input/);
    assert.throws(() => openFileSource(csv, { maxRecordBytes: 0, maxImageBytes: 1 }), /maxRecordBytes/);
  });
});
