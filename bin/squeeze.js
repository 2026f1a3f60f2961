#!/usr/bin/env node
'use strict';
const path = require('node:path');
const entry = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
let main;
try {
  main = require(entry);
} catch (e) {
  if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('main.js')) {
    process.stderr.write('squeeze: error: not built yet; run `npm install` (or `npm run build`) in the project first\n');
    process.exit(2);
  }
  throw e;
}
main.cli(process.argv.slice(2)).then(() => {
  // kafkajs and sharp may keep handles open; the command is done.
  process.exit(process.exitCode ?? 0);
});
