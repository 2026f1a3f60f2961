#!/usr/bin/env node
// Runs the compiled tests in dist/test with node's test runner.
//   --unit   leaves out test/integration (the tests that need Kafka and the schema registry)
//   NAME...  only test files whose path contains NAME
// Integration tests use SQUEEZE_BROKERS / SQUEEZE_REGISTRY when set; otherwise this script starts the
// local services with deploy/services.sh (the script users run) and stops them afterwards.
'use strict';
const { spawnSync } = require('node:child_process');
const { readdirSync, readFileSync, statSync, mkdtempSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const root = join(__dirname, '..');
const unitOnly = process.argv.includes('--unit');
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const testRoot = join(root, 'dist', 'test');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}

const isIntegration = (f) => f.includes(join('dist', 'test', 'integration'));
let files = walk(testRoot).sort();
if (unitOnly) files = files.filter((f) => !isIntegration(f));
if (only.length) files = files.filter((f) => only.some((o) => f.includes(o)));

const env = { ...process.env };
let started = false;
if (files.some(isIntegration) && !env.SQUEEZE_BROKERS) {
  const services = join(root, 'deploy', 'services.sh');
  const up = spawnSync('bash', [services, 'start'], { stdio: 'inherit', cwd: root });
  if (up.status !== 0) {
    console.error('could not start Kafka and the schema registry (deploy/services.sh start); see the log lines above');
    process.exit(1);
  }
  started = true;
  const vars = spawnSync('bash', [services, 'env'], { encoding: 'utf8', cwd: root }).stdout;
  for (const m of vars.matchAll(/export (\w+)=(\S+)/g)) env[m[1]] = m[2].replace(/^['"]|['"]$/g, '');
}

// Unit tests run in parallel processes; integration tests one file at a time (they share the broker).
const unit = files.filter((f) => !isIntegration(f));
const integration = files.filter(isIntegration);
let status = 0;
const totals = { pass: 0, fail: 0, skipped: 0 };
const tapDir = mkdtempSync(join(tmpdir(), 'squeeze-tests-'));
for (const [name, group, concurrency] of [['unit', unit, 2], ['integration', integration, 1]]) {
  if (group.length === 0) continue;
  const tap = join(tapDir, `${name}.tap`);
  const r = spawnSync(
    process.execPath,
    ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', '--test-reporter-destination=stdout',
      '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...group],
    { stdio: 'inherit', env },
  );
  status = status || (r.status ?? 1);
  const text = readFileSync(tap, 'utf8');
  for (const k of Object.keys(totals)) totals[k] += Number((text.match(new RegExp(`^# ${k} (\\d+)$`, 'm')) ?? [0, 0])[1]);
}
if (started) spawnSync('bash', [join(root, 'deploy', 'services.sh'), 'stop'], { stdio: 'inherit', cwd: root });
console.log(`tests: ${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped`);
process.exit(status);
