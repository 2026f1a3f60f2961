import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, configHash, loadConfig, maskedConfig } from '../../src/config/config';

test('defaults validate and describe an embedded run', () => {
  const c = loadConfig();
  assert.deepEqual(c.brokers, []);
  assert.equal(c.registry.startsWith('mock://'), true);
  assert.equal(c.shard.maxRows, 1000);
  assert.equal(c.limits.maxCaptionChars, 2000);
});

test('layers: file < environment < flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ topic: 'from-file', group: 'file-group', shard: { maxRows: 10 }, brokers: ['file:1'] }));
  const c = loadConfig({
    file,
    env: { SQUEEZE_TOPIC: 'from-env', SQUEEZE_BROKERS: 'a:1,b:2' },
    flags: { topic: 'from-flag', 'shard.idleMs': '250', drain: true },
  });
  assert.equal(c.topic, 'from-flag');
  assert.deepEqual(c.brokers, ['a:1', 'b:2']);
  assert.equal(c.group, 'file-group');
  assert.equal(c.shard.maxRows, 10);
  assert.equal(c.shard.idleMs, 250);
  assert.equal(c.drain, true);
});

test('mistakes give one clear ConfigError naming the key', () => {
  assert.throws(() => loadConfig({ flags: { 'shard.maxRows': 'lots' } }), (e: Error) => e instanceof ConfigError && /shard\.maxRows must be a number/.test(e.message));
  assert.throws(() => loadConfig({ flags: { brokers: 'no-port' } }), /brokers\.0: broker must look like host:port/);
  assert.throws(() => loadConfig({ flags: { 'shard.maxRows': '0' } }), /shard\.maxRows/);
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  writeFileSync(join(dir, 'bad.json'), '{ nope');
  assert.throws(() => loadConfig({ file: join(dir, 'bad.json') }), /not valid JSON/);
  writeFileSync(join(dir, 'unknown.json'), '{"shrad": {}}');
  assert.throws(() => loadConfig({ file: join(dir, 'unknown.json') }), /shrad/);
  assert.throws(() => loadConfig({ file: join(dir, 'missing.json') }), /cannot read config file/);
});

test('secrets are masked when printed and do not change the config hash', () => {
  const c = loadConfig({ env: { SQUEEZE_SASL_PASSWORD: 'hunter2', SQUEEZE_SASL_USERNAME: 'u' } });
  assert.equal(c.kafka.saslPassword, 'hunter2');
  const printed = JSON.stringify(maskedConfig(c));
  assert.doesNotMatch(printed, /hunter2/);
  assert.match(printed, /\*\*\*/);
  assert.equal(configHash(c), configHash(loadConfig()));
  assert.notEqual(configHash(loadConfig({ flags: { 'limits.minSide': '64' } })), configHash(c));
});
