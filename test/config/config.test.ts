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
  assert.throws(() => loadConfig({ flags: { brokers: 'no-port' } }), /config key brokers\.0 is "no-port" \(set by a flag\): expected host:port/);
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

test('config errors name the key, the value, where it came from and what is expected', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  const file = (name: string, body: unknown): string => {
    const p = join(dir, name);
    writeFileSync(p, JSON.stringify(body));
    return p;
  };
  const message = (sources: Parameters<typeof loadConfig>[0]): string => {
    try {
      loadConfig(sources);
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.message.split('\n').length, 1);
      assert.doesNotMatch(e.message, /\(root\)|Unrecognized key|Expected .*, received/, 'no zod wording');
      return e.message;
    }
    throw new Error('no error');
  };
  const f1 = file('typo.json', { shrad: { maxRows: 5 } });
  assert.equal(message({ file: f1 }).startsWith(`unknown config key "shrad": did you mean "shard"? known keys: brokers,`), true);
  assert.match(message({ file: f1 }), new RegExp(`\\(in ${f1.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)$`));
  // unknown keys inside a section are mistakes too, not silently ignored
  assert.match(message({ file: file('nested.json', { shard: { maxRowz: 5 } }) }), /^unknown config key "shard\.maxRowz": did you mean "shard\.maxRows"\? known keys under shard: maxRows,/);
  assert.match(message({ file: file('list.json', [1, 2]) }), /must hold a JSON object .*, got an array$/);
  assert.match(message({ file: file('zero.json', { shard: { maxRows: 0 } }) }), /^config key shard\.maxRows is 0 \(in .*zero\.json\): expected an integer >= 1$/);
  assert.match(message({ file: file('float.json', { shard: { maxRows: 1.5 } }) }), /shard\.maxRows is 1\.5 .*: expected an integer$/);
  assert.match(message({ file: file('enum.json', { progress: 'loud' }) }), /^config key progress is "loud" .*: expected one of auto, tty, json, off$/);
  assert.match(message({ file: file('type.json', { softCap: { alpha: 'high' } }) }), /^config key softCap\.alpha is "high" .*: expected a number( \(or null\))?$/);
  assert.match(message({ file: file('obj.json', { shard: 5 }) }), /^config key shard is 5 .*: expected an object$/);
  assert.match(message({ file: file('url.json', { enrich: { llmUrl: 'nope' } }) }), /enrich\.llmUrl is "nope" .*: expected a URL/);
  assert.match(message({ file: file('empty.json', { topic: '' }) }), /^config key topic is "" .*: expected a non-empty string$/);
  assert.match(message({ flags: { 'condense.rho': '3' }, flagNames: { 'condense.rho': 'rho' } }), /^config key condense\.rho is 3 \(set by --rho\): expected a number <= 1$/);
  assert.match(message({ flags: { 'shard.maxRows': 'lots' }, flagNames: { 'shard.maxRows': 'shard-rows' } }), /^shard\.maxRows must be a number, got "lots" \(set by --shard-rows\)$/);
  assert.match(message({ env: { SQUEEZE_PROMETHEUS_PORT: '99999' } }), /^config key telemetry\.prometheusPort is 99999 \(from SQUEEZE_PROMETHEUS_PORT\): expected an integer <= 65535$/);
  assert.match(message({ env: { SQUEEZE_KAFKA_SSL: 'maybe' } }), /^kafka\.ssl must be true or false, got "maybe" \(from SQUEEZE_KAFKA_SSL\)$/);
});
