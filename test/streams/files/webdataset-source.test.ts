import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import { openFileSource } from '../../../src/streams/files/file-source';
import { type FileRecord, type FileSourceLimits } from '../../../src/streams/files/file-record';
import { splitMemberName } from '../../../src/streams/files/webdataset-source';

const limits: FileSourceLimits = { maxRecordBytes: 4096, maxImageBytes: 4096 };

async function collect(it: AsyncIterable<FileRecord>): Promise<FileRecord[]> {
  const out: FileRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

type Member = [name: string, body: Buffer | string];

async function writeTar(file: string, members: Member[]): Promise<Buffer> {
  const pack = tar.pack();
  const mtime = new Date(1700000000000);
  for (const [name, body] of members) pack.entry({ name, mtime }, body);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c);
  const bytes = Buffer.concat(chunks);
  fs.writeFileSync(file, bytes);
  return bytes;
}

/** What img2dataset writes per sample. */
function meta(key: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    url: `https://img.example/${key}.jpg`,
    caption: `caption from json ${key}`,
    key,
    status: 'success',
    error_message: null,
    width: 32,
    height: 32,
    exif: { Make: 'x' },
    ...extra,
  });
}

describe('webdataset-source', () => {
  let dir: string;
  let jpeg: Buffer;
  let png: Buffer;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'squeeze-wds-'));
    jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#f00' } }).jpeg().toBuffer();
    png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#0f0' } }).png().toBuffer();
    fs.mkdirSync(path.join(dir, 'shards'));
    await writeTar(path.join(dir, 'shards', '00000.tar'), [
      ['000000000.jpg', jpeg],
      ['000000000.txt', 'a red square'],
      ['000000000.json', meta('000000000')],
      ['000000001.jpg', jpeg],
      ['000000001.txt', 'another red square'],
      ['000000001.json', meta('000000001')],
      ['000000002.txt', 'caption without image'],
      ['000000002.json', meta('000000002')],
      ['sub/000000003.png', png],
      ['sub/000000003.json', meta('', { url: 'https://img.example/3.png', caption: 'json caption' })],
    ]);
    await writeTar(path.join(dir, 'shards', '00001.tar'), [
      ['000000004.json', meta('000000004')],
      ['000000004.jpg', jpeg],
      ['000000004.txt', 'order inside a sample does not matter'],
      ['000000005.svg', '<svg xmlns="http://www.w3.org/2000/svg"/>'],
      ['000000005.txt', 'vector'],
      ['000000006.jpg', Buffer.alloc(limits.maxImageBytes + 1, 1)],
      ['000000006.txt', 'too big'],
      ['000000007.jpg', jpeg],
      ['000000007.json', '{"key": "000000007", "url": '],
      ['._000000008.jpg', 'AppleDouble junk'],
      ['000000008.webp', png],
    ]);
    // img2dataset writes these beside the shards; they are not samples.
    fs.writeFileSync(path.join(dir, 'shards', '00000.parquet'), 'not read');
    fs.writeFileSync(path.join(dir, 'shards', '00000_stats.json'), '{}');
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads a directory of shards in order with offsets continuing across them', async () => {
    const recs = await collect(openFileSource(path.join(dir, 'shards'), limits));
    assert.equal(recs.length, 9);
    recs.forEach((r, i) => {
      assert.deepEqual(r.coord, { topic: 'shards', partition: 0, offset: i });
      assert.equal((r.event === null) !== (r.error === null), true);
    });

    const first = recs[0].event!;
    assert.equal(first.id, '000000000');
    assert.deepEqual(first.image, jpeg);
    assert.equal(first.caption, 'a red square');
    assert.equal(first.image_url, 'https://img.example/000000000.jpg');
    assert.equal(first.url, null);
    assert.equal(first.source, '00000.tar');
    assert.equal(first.crawl_time, 1700000000000);
    assert.deepEqual(first.attrs, { status: 'success', width: '32', height: '32' });
    assert.equal(recs[0].raw.toString(), meta('000000000'));

    assert.equal(recs[1].event!.id, '000000001');
    assert.equal(recs[2].error!.reason, 'missing_image');
    assert.equal(recs[2].error!.id, '000000002');
    assert.match(recs[2].error!.message, /no image member/);

    const sub = recs[3].event!;
    assert.equal(sub.id, 'sub/000000003', 'empty json key falls back to the tar key');
    assert.deepEqual(sub.image, png);
    assert.equal(sub.caption, 'json caption', 'json caption when there is no .txt');

    const fromSecond = recs[4].event!;
    assert.equal(fromSecond.id, '000000004');
    assert.equal(fromSecond.source, '00001.tar');
    assert.equal(fromSecond.caption, 'order inside a sample does not matter');

    assert.equal(recs[5].error!.reason, 'unsupported_format');
    assert.equal(recs[5].raw.toString(), 'vector', 'raw is the .txt part when there is no .json');
    assert.equal(recs[6].error!.reason, 'image_too_large');
    assert.equal(recs[7].error!.reason, 'schema_error');
    assert.deepEqual(recs[8].event!.image, png);
    assert.equal(recs[8].event!.id, '000000008');
  });

  it('names a single shard by its file name', async () => {
    const recs = await collect(openFileSource(path.join(dir, 'shards', '00001.tar'), limits));
    assert.equal(recs.length, 5);
    assert.deepEqual(
      recs.map((r) => r.coord),
      [0, 1, 2, 3, 4].map((offset) => ({ topic: '00001.tar', partition: 0, offset })),
    );
  });

  it('dead-letters the rest of a truncated shard and goes on with the next one', async () => {
    const cut = path.join(dir, 'cut');
    fs.mkdirSync(cut);
    const full = await writeTar(path.join(cut, 'a.tar'), [
      ['k1.jpg', jpeg],
      ['k1.txt', 'one'],
      ['k2.jpg', jpeg],
      ['k2.txt', 'two'],
    ]);
    fs.writeFileSync(path.join(cut, 'a.tar'), full.subarray(0, 512 * 6 + 100)); // inside k2.jpg's data
    await writeTar(path.join(cut, 'b.tar'), [
      ['k3.jpg', jpeg],
      ['k3.txt', 'three'],
    ]);
    const recs = await collect(openFileSource(cut, limits));
    assert.deepEqual(
      recs.map((r) => [r.coord.offset, r.event?.id ?? r.error?.reason]),
      [
        [0, 'k1'],
        [1, 'decode_error'],
        [2, 'k3'],
      ],
    );
    assert.match(recs[1].error!.message, /a\.tar .*sample k2 incomplete/);
    assert.equal(recs[1].error!.id, 'k2');
  });

  it('throws for a directory without shards; a file that is not a tar is one dead letter', async () => {
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    assert.throws(() => openFileSource(empty, limits), /no \.tar shards/);
    const junk = path.join(dir, 'junk.tar');
    fs.writeFileSync(junk, 'this is not a tar archive '.repeat(40));
    const recs = await collect(openFileSource(junk, limits));
    assert.equal(recs.length, 1);
    assert.equal(recs[0].error?.reason, 'decode_error');
  });

  it('splits member names the WebDataset way', () => {
    assert.deepEqual(splitMemberName('000001.jpg'), { key: '000001', ext: 'jpg' });
    assert.deepEqual(splitMemberName('./dir/a.seg.PNG'), { key: 'dir/a', ext: 'seg.png' });
    assert.equal(splitMemberName('._000001.jpg'), null);
    assert.equal(splitMemberName('README'), null);
    assert.equal(splitMemberName('dir/'), null);
  });
});
