/** The documentation a user reads: links that resolve, and formats that name every column and reason the code has. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { DEAD_REASONS } from '../src/records';
import { CURATED_ROW_COLUMNS } from '../src/streams/shards/parquet-rows';
import { readSchema } from '../src/streams/kafka/registry-codec';
import { ROOT } from './helpers/cli';

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes */
const anchor = (heading: string): string => heading.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-');

test('README and docs/FORMATS.md link only to files and headings that exist', () => {
  for (const doc of ['README.md', 'docs/FORMATS.md']) {
    const file = join(ROOT, doc);
    const text = readFileSync(file, 'utf8');
    const links = [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]).filter((l) => !/^[a-z]+:/.test(l));
    assert.ok(links.length > 0, `${doc} has links`);
    for (const link of links) {
      const [path, hash] = link.split('#');
      const target = path ? resolve(dirname(file), path) : file;
      assert.ok(existsSync(target), `${doc} links to ${link}, which does not exist`);
      if (hash) {
        const headings = [...readFileSync(target, 'utf8').matchAll(/^#+ (.+)$/gm)].map((m) => anchor(m[1]));
        assert.ok(headings.includes(hash), `${doc} links to ${link}: no heading #${hash} (${headings.join(', ')})`);
      }
    }
    assert.doesNotMatch(text, /DESIGN \d/, `${doc} cites sections of a document users do not have`);
  }
});

test('docs/FORMATS.md names every output column, dead-letter field and reason, and every JSONL field', () => {
  const text = readFileSync(join(ROOT, 'docs', 'FORMATS.md'), 'utf8');
  const section = (title: string): string => text.split(/^## /m).find((s) => s.startsWith(title)) ?? '';
  const rows = section('Output rows');
  for (const c of CURATED_ROW_COLUMNS) assert.ok(rows.includes(`\`${c}\``), `output column ${c} is documented`);
  const dead = section('Dead letters');
  for (const r of DEAD_REASONS) assert.ok(dead.includes(`\`${r}\``), `reason ${r} is documented`);
  for (const f of (JSON.parse(readSchema('dead-letter')) as { fields: { name: string }[] }).fields) assert.ok(dead.includes(`\`${f.name}\``), `dead-letter field ${f.name}`);
  const jsonl = section('JSONL events');
  for (const f of ['id', 'url', 'image_url', 'image_b64', 'image_path', 'caption', 'crawl_time', 'source', 'attrs']) assert.ok(jsonl.includes(`| \`${f}\` |`), `JSONL field ${f}`);
  // the example shown is the example file
  for (const line of readFileSync(join(ROOT, 'examples', 'crawl.jsonl'), 'utf8').trim().split('\n')) {
    const shown = line.replace(/(base64,[A-Za-z0-9+/]{10})[A-Za-z0-9+/=]+/, '$1...');
    assert.ok(jsonl.includes(shown), `FORMATS.md shows ${shown.slice(0, 60)}...`);
  }
});
