import assert from 'node:assert/strict';
import * as net from 'node:net';
import { after, before, test } from 'node:test';
import { checkServices, ConnectError, probeTcp, withDeadline } from '../../../src/streams/kafka/reach';
import { closedPort } from '../../helpers/ports';

// accepts connections and never says a word (a wrong service, or a broker behind a black hole)
let silent: net.Server;
let silentPort = 0;
const sockets = new Set<net.Socket>();
before(async () => {
  silent = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  silentPort = (silent.address() as net.AddressInfo).port;
});
after(() => {
  for (const s of sockets) s.destroy();
  silent.close();
});

test('probeTcp: resolves on a listening port, names the cause on a closed one', async () => {
  await probeTcp({ host: '127.0.0.1', port: silentPort }, 2000);
  const port = await closedPort();
  await assert.rejects(probeTcp({ host: '127.0.0.1', port }, 2000), /connection refused: nothing listens there \(ECONNREFUSED\)/);
});

test('withDeadline: the value when in time, else a ConnectError that says how long it waited', async () => {
  assert.equal(await withDeadline(Promise.resolve(7), 1000, (w) => `never ${w}`), 7);
  let gaveUp = false;
  await assert.rejects(
    withDeadline(new Promise(() => undefined), 20, (w) => `no answer ${w}`, () => (gaveUp = true)),
    (e: Error) => e instanceof ConnectError && e.message === 'no answer within 0.02 s',
  );
  assert.ok(gaveUp, 'the timeout hook ran (callers disconnect their client there)');
});

test('checkServices: says where it connects first, needs one bootstrap broker, names every address and cause', async () => {
  const closed = await closedPort();
  const lines: string[] = [];
  const log = (l: string): void => void lines.push(l);
  await checkServices({ brokers: [`127.0.0.1:${closed}`, `127.0.0.1:${silentPort}`], registry: 'mock://x', timeoutMs: 2000, log });
  assert.deepEqual(lines, [`squeeze: connecting to Kafka at 127.0.0.1:${closed},127.0.0.1:${silentPort}...`], 'a mock registry is not probed');

  lines.length = 0;
  await assert.rejects(
    checkServices({ brokers: [`127.0.0.1:${closed}`, 'localhost:0'], timeoutMs: 2000, log }),
    (e: Error) =>
      e instanceof ConnectError &&
      e.message.startsWith(`cannot reach Kafka at 127.0.0.1:${closed}: connection refused: nothing listens there (ECONNREFUSED); localhost:0: `),
  );
  assert.equal(lines.length, 1);

  lines.length = 0;
  const registry = `http://127.0.0.1:${closed}/apis/ccompat/v7`;
  await assert.rejects(
    checkServices({ brokers: [`127.0.0.1:${silentPort}`], registry, timeoutMs: 2000, log }),
    new RegExp(`cannot reach the schema registry at ${registry.replace(/[.?/]/g, '\\$&')} \\(127\\.0\\.0\\.1:${closed}\\): connection refused`),
  );
  assert.deepEqual(lines, [`squeeze: connecting to Kafka at 127.0.0.1:${silentPort}...`, `squeeze: connecting to the schema registry at ${registry}...`]);

  await assert.rejects(checkServices({ registry: 'not a url', timeoutMs: 100, log }), /schema registry "not a url" is not a URL/);
  await assert.rejects(checkServices({ brokers: ['no-port'], timeoutMs: 100, log }), /"no-port" is not host:port/);
});
