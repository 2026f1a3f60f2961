#!/usr/bin/env node
// Writes examples/crawl.jsonl and the two small PNGs it names (examples/images/), from SVG drawings.
// The output is checked in; re-run with `node examples/make-example.js` after changing a drawing.
'use strict';
const { mkdirSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const sharp = require('sharp');

const svg = (body) => Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#fff"/>${body}</svg>`);
const png = (body) => sharp(svg(body)).png({ compressionLevel: 9, palette: true }).toBuffer();

async function main() {
  const dir = __dirname;
  mkdirSync(join(dir, 'images'), { recursive: true });
  writeFileSync(join(dir, 'images', 'red-circle.png'), await png('<circle cx="22" cy="30" r="16" fill="#d22"/>'));
  writeFileSync(join(dir, 'images', 'blue-bars.png'), await png('<rect x="6" y="8" width="52" height="10" fill="#23c"/><rect x="6" y="40" width="30" height="10" fill="#23c"/>'));
  const triangle = await png('<polygon points="10,54 54,54 32,10" fill="#1a4"/>');
  const events = [
    { id: 'example-1', url: 'https://shop.example/item/1', image_path: 'images/red-circle.png', caption: 'a red circle on a white background',
      crawl_time: '2024-05-01T12:00:00Z', source: 'example', attrs: { lang: 'en' } },
    { id: 'example-2', url: 'https://blog.example/post/2', image_path: 'images/blue-bars.png', caption: 'two blue bars',
      crawl_time: 1714564800000, attrs: { lang: 'en', width_hint: 64 } },
    { id: 'example-3', url: null, image_b64: `data:image/png;base64,${triangle.toString('base64')}`, caption: 'a green triangle',
      crawl_time: 1714568400000, source: 'example' },
  ];
  writeFileSync(join(dir, 'crawl.jsonl'), events.map((e) => JSON.stringify(e)).join('\n') + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
