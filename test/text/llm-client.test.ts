import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { inspect } from 'node:util';
import { buildPrompt, LlmClient, type LlmClientOptions, validateRewrite } from '../../src/text/llm-client';

/** A loopback server speaking the chat completions API; `mode` says how it answers. */
type Mode = 'ok' | 'slow' | 'error' | 'garbage' | 'no-choices' | 'markup' | 'hold';
let mode: Mode = 'ok';
let calls = 0;
let inFlight = 0;
let maxInFlight = 0;
let lastBody: { model?: string; messages?: { role: string; content: string }[] } = {};
let lastHeaders: IncomingMessage['headers'] = {};
let lastPath = '';
let server: Server;
let baseUrl = '';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  calls++;
  // only 'hold' requests count: a 'slow' one from an earlier test may still be sleeping here
  const counted = mode === 'hold';
  if (counted) maxInFlight = Math.max(maxInFlight, ++inFlight);
  try {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    lastBody = JSON.parse(raw);
    lastHeaders = req.headers;
    lastPath = req.url ?? '';
    const user = lastBody.messages?.find((m) => m.role === 'user')?.content ?? '';
    const caption = /Caption: (.*)/.exec(user)?.[1] ?? '';
    const reply = (content: unknown) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] }));
    };
    switch (mode) {
      case 'ok':
        return reply(`"${caption.replace(/\.$/, '')} with a ring."`);
      case 'hold':
        await sleep(40);
        return reply(`${caption} with a ring.`);
      case 'slow':
        await sleep(600);
        return reply('too late');
      case 'error':
        res.writeHead(500, { 'content-type': 'application/json' });
        return void res.end('{"error":{"message":"boom"}}');
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end('{"choices": [ {"message": ');
      case 'no-choices':
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end('{"choices": []}');
      case 'markup':
        return reply('**A red star**\nwith a ring');
    }
  } finally {
    if (counted) inFlight--;
  }
}

before(async () => {
  server = createServer((req, res) => void handle(req, res).catch(() => res.destroy()));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

beforeEach(() => {
  mode = 'ok';
  calls = 0;
  maxInFlight = 0;
});

const client = (o: Partial<LlmClientOptions> = {}) =>
  new LlmClient({ baseUrl, model: 'tiny-chat', timeoutMs: 2000, concurrency: 4, cacheSize: 100, ...o });

test('prompt and validation', () => {
  const p = buildPrompt('A red star', ['ring', 'moon']);
  assert.match(p, /Rewrite the caption so it is grammatical and concise \(≤ 60 words\)\. Keep every fact it states\./);
  assert.match(p, /mention these objects visible in the image: ring, moon\. Do not add any other object\./);
  assert.match(p, /Caption: A red star/);
  assert.equal(validateRewrite('  "A red star with a ring."  '), 'A red star with a ring.');
  assert.equal(validateRewrite('Caption: A red star with a ring.'), 'A red star with a ring.');
  for (const bad of ['', '   ', 'two\nlines', '<b>x</b>', '**bold**', '# Title', 'x'.repeat(400), '{classes}', 42, null, '...']) {
    assert.equal(validateRewrite(bad), null, String(bad));
  }
  assert.equal(validateRewrite('A red star.', ['ring'], true), null, 'must mention the classes when asked');
  assert.equal(validateRewrite('A red star and two rings.', ['ring'], true), 'A red star and two rings.');
});

test('success: POST {baseUrl}/chat/completions with model and messages; content returned', async () => {
  const errors: string[] = [];
  const c = client({ apiKey: 'sk-secret-123', onError: (m) => errors.push(m) });
  const out = await c.rewrite('A red star.', ['ring']);
  assert.equal(out, 'A red star with a ring.');
  assert.equal(lastPath, '/v1/chat/completions');
  assert.equal(lastBody.model, 'tiny-chat');
  assert.ok(lastBody.messages!.some((m) => m.role === 'user' && m.content.includes('these objects visible in the image: ring.')));
  assert.equal(lastHeaders.authorization, 'Bearer sk-secret-123');
  assert.deepEqual(errors, []);
});

test('slow server: timeout, null, fallback', async () => {
  mode = 'slow';
  const errors: string[] = [];
  const c = client({ timeoutMs: 100, onError: (m) => errors.push(m) });
  const t0 = Date.now();
  assert.equal(await c.rewrite('A red star.', ['ring']), null);
  assert.ok(Date.now() - t0 < 500, 'gave up at the timeout');
  assert.equal(c.stats().timeouts, 1);
  assert.match(errors[0], /no answer within 100 ms/);
});

test('HTTP 500, garbage JSON, no choices, markup: null', async () => {
  for (const m of ['error', 'garbage', 'no-choices', 'markup'] as Mode[]) {
    mode = m;
    const c = client();
    assert.equal(await c.rewrite(`caption for ${m}`, ['ring']), null, m);
    assert.equal(c.stats().failures, 1, m);
  }
});

test('unreachable endpoint: null, not a throw', async () => {
  const dead = createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const port = (dead.address() as AddressInfo).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const c = new LlmClient({ baseUrl: `http://127.0.0.1:${port}/v1`, model: 'm', timeoutMs: 1000 });
  assert.equal(await c.rewrite('A red star.', ['ring']), null);
});

test('cache: identical requests reach the server once (sequential and concurrent); failures are not cached', async () => {
  const c = client();
  const a = await c.rewrite('A red star.', ['ring', 'moon']);
  const b = await c.rewrite('A red star.', ['moon', 'ring']);
  assert.equal(a, b);
  assert.equal(calls, 1);
  mode = 'hold';
  const [x, y] = await Promise.all([c.rewrite('A blue moon.', ['ring']), c.rewrite('A blue moon.', ['ring'])]);
  assert.equal(x, y);
  assert.equal(calls, 2);
  assert.equal(c.stats().cacheHits, 2);
  mode = 'error';
  await c.rewrite('A pink heart.', ['ring']);
  mode = 'ok';
  assert.ok(await c.rewrite('A pink heart.', ['ring']));
  assert.equal(calls, 4);
});

test('cache is bounded (least recently used goes first)', async () => {
  const c = client({ cacheSize: 2 });
  await c.rewrite('one', ['ring']);
  await c.rewrite('two', ['ring']);
  await c.rewrite('one', ['ring']); // refresh "one"
  await c.rewrite('three', ['ring']); // evicts "two"
  assert.equal(calls, 3);
  await c.rewrite('one', ['ring']);
  assert.equal(calls, 3);
  await c.rewrite('two', ['ring']);
  assert.equal(calls, 4);
});

test('concurrency bound: never more requests in flight than allowed', async () => {
  mode = 'hold';
  const c = client({ concurrency: 2 });
  const outs = await Promise.all(Array.from({ length: 7 }, (_, i) => c.rewrite(`caption ${i}`, ['ring'])));
  assert.ok(outs.every((o) => o !== null));
  assert.equal(calls, 7);
  assert.equal(maxInFlight, 2);
});

test('the API key never shows: not in JSON, inspect or error messages', async () => {
  const errors: string[] = [];
  const c = client({ apiKey: 'sk-secret-123', onError: (m) => errors.push(m) });
  mode = 'error';
  await c.rewrite('A red star.', ['ring']);
  mode = 'slow';
  await new LlmClient({ baseUrl, model: 'm', apiKey: 'sk-secret-123', timeoutMs: 50, onError: (m) => errors.push(m) }).rewrite('x y', ['ring']);
  const shown = [JSON.stringify(c), inspect(c, { depth: 5, showHidden: true }), String(c), ...errors].join('\n');
  assert.ok(errors.length >= 2);
  assert.ok(!shown.includes('sk-secret-123'), shown);
  assert.ok(JSON.stringify(c).includes('***'));
});
