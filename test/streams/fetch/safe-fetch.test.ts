import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { classifyAddress, createImageFetcher, type FetchLimits } from '../../../src/streams/fetch/safe-fetch';

const base: FetchLimits = { timeoutMs: 2000, maxBytes: 4096, maxRedirects: 3, allowHosts: ['127.0.0.1'], userAgent: 'squeeze-test' };

describe('safe-fetch', () => {
  let server: http.Server;
  let port: number;
  let origin: string;
  let jpeg: Buffer;
  const seen: string[] = [];

  before(async () => {
    jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#f00' } }).jpeg().toBuffer();
    server = http.createServer((req, res) => {
      seen.push(`${req.url} ${req.headers['user-agent']}`);
      const to = (location: string): void => {
        res.writeHead(302, { location });
        res.end();
      };
      switch (req.url) {
        case '/img.jpg':
          res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': jpeg.length });
          res.end(jpeg);
          return;
        case '/redirect':
          return to('/img.jpg');
        case '/redirect-abs':
          return to(`http://127.0.0.1:${port}/redirect`);
        case '/redirect-metadata':
          return to('http://169.254.169.254/latest/meta-data/');
        case '/redirect-private':
          return to('http://10.1.2.3/x.jpg');
        case '/redirect-file':
          return to('file:///etc/passwd');
        case '/loop':
          return to('/loop');
        case '/no-location':
          res.writeHead(302);
          res.end();
          return;
        case '/big-declared':
          res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': 10_000 });
          res.end(Buffer.alloc(10_000));
          return;
        case '/big-chunked': {
          res.writeHead(200, { 'content-type': 'image/jpeg' });
          let sent = 0;
          const pump = (): void => {
            while (sent < 1 << 20) {
              sent += 1024;
              if (!res.write(Buffer.alloc(1024))) {
                res.once('drain', pump);
                return;
              }
            }
            res.end();
          };
          res.on('close', () => (sent = 1 << 20));
          pump();
          return;
        }
        case '/slow':
          return; // never answers
        case '/slow-body':
          res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': 100 });
          res.write(Buffer.alloc(10)); // and never the rest
          return;
        default:
          res.writeHead(404);
          res.end('not found');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    origin = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('fetches from an allow-listed loopback server', async () => {
    const r = await createImageFetcher(base)(`${origin}/img.jpg`);
    assert.equal(r.ok, true);
    assert.ok(r.ok);
    assert.deepEqual(r.bytes, jpeg);
    assert.equal(r.contentType, 'image/jpeg');
    assert.equal(r.finalUrl, `${origin}/img.jpg`);
    assert.ok(seen.includes('/img.jpg squeeze-test'), 'sends the configured user agent');
  });

  it('honours host:port allow-list entries and names', async () => {
    const withPort = await createImageFetcher({ ...base, allowHosts: [`127.0.0.1:${port}`] })(`${origin}/img.jpg`);
    assert.equal(withPort.ok, true);
    const otherPort = await createImageFetcher({ ...base, allowHosts: [`127.0.0.1:${port === 1 ? 2 : port - 1}`] })(`${origin}/img.jpg`);
    assert.equal(otherPort.ok, false);
    assert.equal(!otherPort.ok && otherPort.reason, 'fetch_blocked');
    const byName = await createImageFetcher({ ...base, allowHosts: ['LOCALHOST'] })(`http://localhost:${port}/img.jpg`);
    assert.equal(byName.ok, true, JSON.stringify(!byName.ok && byName));
  });

  it('blocks loopback and private targets that are not allow-listed, including through DNS', async () => {
    const fetch = createImageFetcher({ ...base, allowHosts: [] });
    const before = seen.length;
    for (const url of [
      `${origin}/img.jpg`,
      `http://localhost:${port}/img.jpg`,
      `http://[::1]:${port}/img.jpg`,
      `http://2130706433:${port}/img.jpg`, // 127.0.0.1 written as a number
      `http://0x7f.1:${port}/img.jpg`,
      `http://[::ffff:127.0.0.1]:${port}/img.jpg`,
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
      'http://192.168.1.1/',
      'http://0.0.0.0/',
    ]) {
      const r = await fetch(url);
      assert.equal(!r.ok && r.reason, 'fetch_blocked', url);
    }
    assert.equal(seen.length, before, 'no request reached the server');
  });

  it('blocks schemes other than http and https', async () => {
    const fetch = createImageFetcher(base);
    for (const url of ['file:///etc/passwd', 'ftp://127.0.0.1/x.jpg', 'data:image/png;base64,AAAA', 'javascript:alert(1)', 'gopher://127.0.0.1/']) {
      const r = await fetch(url);
      assert.equal(!r.ok && r.reason, 'fetch_blocked', url);
    }
  });

  it('follows redirects, re-checking every hop', async () => {
    const fetch = createImageFetcher(base);
    const ok = await fetch(`${origin}/redirect-abs`);
    assert.ok(ok.ok);
    assert.equal(ok.finalUrl, `${origin}/img.jpg`);
    for (const path of ['/redirect-metadata', '/redirect-private', '/redirect-file']) {
      const r = await fetch(`${origin}${path}`);
      assert.equal(!r.ok && r.reason, 'fetch_blocked', path);
      assert.match(!r.ok ? r.message : '', /redirect 1/);
    }
  });

  it('caps redirects', async () => {
    const loop = await createImageFetcher(base)(`${origin}/loop`);
    assert.equal(!loop.ok && loop.reason, 'fetch_failed');
    assert.match(!loop.ok ? loop.message : '', /more than 3 redirects/);
    const none = await createImageFetcher({ ...base, maxRedirects: 0 })(`${origin}/redirect`);
    assert.equal(!none.ok && none.reason, 'fetch_failed');
    const noLocation = await createImageFetcher(base)(`${origin}/no-location`);
    assert.equal(!noLocation.ok && noLocation.reason, 'fetch_failed');
  });

  it('refuses bodies over maxBytes, declared or streamed', async () => {
    const fetch = createImageFetcher(base);
    const declared = await fetch(`${origin}/big-declared`);
    assert.equal(!declared.ok && declared.reason, 'image_too_large');
    assert.match(!declared.ok ? declared.message : '', /Content-Length/);
    const chunked = await fetch(`${origin}/big-chunked`);
    assert.equal(!chunked.ok && chunked.reason, 'image_too_large');
  });

  it('times out on a slow server', async () => {
    const fetch = createImageFetcher({ ...base, timeoutMs: 300 });
    for (const path of ['/slow', '/slow-body']) {
      const started = Date.now();
      const r = await fetch(`${origin}${path}`);
      assert.equal(!r.ok && r.reason, 'fetch_failed', path);
      assert.match(!r.ok ? r.message : '', /timed out after 300 ms/);
      assert.ok(Date.now() - started < 1500, 'gives up near the timeout');
    }
  });

  it('reports non-2xx, unreachable and malformed URLs as fetch_failed without throwing', async () => {
    const fetch = createImageFetcher(base);
    const missing = await fetch(`${origin}/missing.jpg`);
    assert.equal(!missing.ok && missing.reason, 'fetch_failed');
    assert.match(!missing.ok ? missing.message : '', /HTTP 404/);
    const closed = await new Promise<number>((resolve) => {
      const s = http.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const refused = await fetch(`http://127.0.0.1:${closed}/x.jpg`);
    assert.equal(!refused.ok && refused.reason, 'fetch_failed');
    for (const bad of ['not a url', '', 'http://', 'http://exa mple.com/']) {
      const r = await fetch(bad);
      assert.equal(r.ok, false, bad);
    }
    const nonString = await fetch(undefined as unknown as string);
    assert.equal(!nonString.ok && nonString.reason, 'fetch_failed');
    const unresolvable = await fetch('http://squeeze-test-host.invalid/x.jpg');
    assert.equal(!unresolvable.ok && unresolvable.reason, 'fetch_failed');
  });

  it('classifies addresses', () => {
    const table: Array<[string, string | null]> = [
      ['8.8.8.8', null],
      ['93.184.216.34', null],
      ['1.1.1.1', null],
      ['127.0.0.1', 'loopback'],
      ['127.255.255.254', 'loopback'],
      ['10.0.0.1', 'private'],
      ['172.16.0.1', 'private'],
      ['172.31.255.255', 'private'],
      ['172.32.0.1', null],
      ['192.168.0.10', 'private'],
      ['100.64.0.1', 'cgnat'],
      ['100.127.255.255', 'cgnat'],
      ['100.128.0.1', null],
      ['169.254.169.254', 'link-local'],
      ['0.0.0.0', 'this-network'],
      ['0.1.2.3', 'this-network'],
      ['224.0.0.1', 'multicast'],
      ['239.255.255.250', 'multicast'],
      ['255.255.255.255', 'broadcast'],
      ['240.0.0.1', 'reserved'],
      ['192.0.2.1', 'documentation'],
      ['198.18.0.1', 'benchmark'],
      ['::', 'unspecified'],
      ['::1', 'loopback'],
      ['[::1]', 'loopback'],
      ['0:0:0:0:0:0:0:1', 'loopback'],
      ['fe80::1', 'link-local'],
      ['fe80::1%eth0', 'link-local'],
      ['febf::1', 'link-local'],
      ['fec0::1', 'site-local'],
      ['fc00::1', 'unique-local'],
      ['fd12:3456:789a::1', 'unique-local'],
      ['ff02::1', 'multicast'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['::ffff:7f00:1', 'loopback'],
      ['::ffff:10.0.0.1', 'private'],
      ['::ffff:169.254.169.254', 'link-local'],
      ['::ffff:8.8.8.8', null],
      ['::127.0.0.1', 'reserved'],
      ['64:ff9b::127.0.0.1', 'loopback'],
      ['64:ff9b::8.8.8.8', null],
      ['2002:7f00:1::', 'loopback'],
      ['2002:0808:0808::1', null],
      ['2001:db8::1', 'documentation'],
      ['2001:0:4136:e378::1', 'reserved'],
      ['2606:4700:4700::1111', null],
      ['2a00:1450:4001:82a::200e', null],
      ['example.com', 'invalid'],
      ['', 'invalid'],
      ['256.1.1.1', 'invalid'],
      ['1.2.3', 'invalid'],
    ];
    for (const [ip, want] of table) assert.equal(classifyAddress(ip), want, ip);
  });
});
