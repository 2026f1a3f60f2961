/**
 * The floor plan of src/ (docs/ARCHITECTURE.md), checked on the imports themselves: no import cycles; each
 * folder imports only the folders below it; nothing at run time imports the bundle builders; kafkajs and the
 * schema-registry client are imported in src/streams/kafka only; the file mode reaches no Avro codec.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';

const ROOT = join(__dirname, '..', '..');
const SRC = join(ROOT, 'src');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

/** file (relative to src, without .ts) -> its imports: other src files, and packages by name */
function imports(): Map<string, { files: string[]; packages: string[] }> {
  const graph = new Map<string, { files: string[]; packages: string[] }>();
  const spec = /(?:\bfrom\s+|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm;
  for (const file of walk(SRC)) {
    const rel = relative(SRC, file).replace(/\.ts$/, '');
    const files: string[] = [];
    const packages: string[] = [];
    for (const m of readFileSync(file, 'utf8').matchAll(spec)) {
      const s = m[1];
      if (s.startsWith('.')) {
        const target = normalize(join(dirname(rel), s));
        files.push(statSync(join(SRC, target), { throwIfNoEntry: false })?.isDirectory() ? join(target, 'index') : target);
      } else packages.push(s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]);
    }
    graph.set(rel, { files, packages });
  }
  return graph;
}

const graph = imports();
const folderOf = (f: string): string => (f.includes('/') ? f.split('/')[0] : f);

/** Each folder may import the folders listed after it (and itself). */
const FLOORS = [['cli'], ['builders'], ['train', 'report', 'export'], ['curate'], ['streams'], ['operators'], ['gen', 'telemetry'], ['models', 'text', 'util', 'config', 'records', 'types']];
const floor = (folder: string): number => FLOORS.findIndex((f) => f.includes(folder));

test('every src file is read and every relative import resolves to one', () => {
  assert.ok(graph.size > 80, `${graph.size} files`);
  for (const [file, { files }] of graph) for (const t of files) assert.ok(graph.has(t), `${file} imports ${t}, which is not a file of src/`);
});

test('no import cycles', () => {
  const state = new Map<string, 'open' | 'done'>();
  const visit = (f: string, path: string[]): void => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') assert.fail(`import cycle: ${[...path.slice(path.indexOf(f)), f].join(' -> ')}`);
    state.set(f, 'open');
    for (const t of graph.get(f)?.files ?? []) visit(t, [...path, f]);
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f, []);
});

test('folders import only the folders below them; nothing at run time imports the bundle builders', () => {
  for (const [file, { files }] of graph) {
    const from = folderOf(file);
    assert.ok(floor(from) >= 0, `${from} has no place in the floor plan`);
    for (const t of files) {
      const to = folderOf(t);
      assert.ok(floor(to) >= floor(from), `${file} imports ${t}: ${from} sits above ${to}`);
      if (to === 'builders') assert.ok(from === 'builders' || file === 'cli/build-model', `${file} imports the builder ${t}`);
    }
  }
});

test('kafkajs and the schema-registry client are imported in src/streams/kafka only', () => {
  for (const [file, { packages }] of graph) {
    for (const p of packages.filter((x) => x === 'kafkajs' || x === '@confluentinc')) {
      assert.ok(file.startsWith('streams/kafka/'), `${file} imports ${p}`);
    }
  }
});

test('the file mode reaches no Avro codec', () => {
  const seen = new Set<string>();
  const reach = (f: string): void => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const t of graph.get(f)?.files ?? []) reach(t);
  };
  reach('curate/run-files');
  assert.ok(seen.has('streams/files/file-source'));
  assert.ok(![...seen].some((f) => f.startsWith('streams/kafka/')), [...seen].filter((f) => f.startsWith('streams/kafka/')).join(', '));
});
