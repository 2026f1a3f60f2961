#!/usr/bin/env node
// Writes examples/photos/: the MS-COCO val2017 photos under the Creative Commons Attribution licence
// (CC BY 2.0), each resized to at most 480 pixels on its long side, with their five human captions and
// where each came from (captions.jsonl, ATTRIBUTION.md). The output is checked in.
//   node examples/make-photos.js COCO_DIR
// COCO_DIR holds captions.jsonl (one line per photo: file, image_id, captions, license, license_url,
// flickr_url, coco_url) and the image files it names.
'use strict';
const { mkdirSync, readFileSync, rmSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const sharp = require('sharp');

async function main() {
  const coco = process.argv[2];
  if (!coco) throw new Error('usage: node examples/make-photos.js COCO_DIR');
  const out = join(__dirname, 'photos');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const rows = readFileSync(join(coco, 'captions.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l))
    .filter((r) => r.license === 'Attribution License')
    .sort((a, b) => a.image_id - b.image_id);
  const lines = [];
  const credits = [];
  for (const r of rows) {
    const file = `${String(r.image_id).padStart(12, '0')}.jpg`;
    const img = sharp(readFileSync(join(coco, r.file))).rotate().resize(480, 480, { fit: 'inside', withoutEnlargement: true });
    const { data, info } = await img.jpeg({ quality: 82, mozjpeg: true }).toBuffer({ resolveWithObject: true });
    writeFileSync(join(out, file), data);
    lines.push(JSON.stringify({ file, image_id: r.image_id, width: info.width, height: info.height, captions: r.captions, license: 'CC BY 2.0', license_url: r.license_url, flickr_url: r.flickr_url, coco_url: r.coco_url }));
    credits.push(`| ${file} | ${r.flickr_url} | ${r.coco_url} |`);
  }
  writeFileSync(join(out, 'captions.jsonl'), lines.join('\n') + '\n');
  writeFileSync(
    join(out, 'ATTRIBUTION.md'),
    [
      '# Attribution',
      '',
      `These ${rows.length} photos are from the MS-COCO 2017 validation set (https://cocodataset.org), which`,
      'lists each photo with its Flickr source and licence. Every photo here is under the Creative Commons',
      'Attribution 2.0 licence (https://creativecommons.org/licenses/by/2.0/); the photographers are credited',
      'on the Flickr page of each photo. Changes: each photo was resized to at most 480 pixels on its long',
      'side and re-encoded as JPEG (quality 82). The captions are the five human captions of COCO Captions',
      '(https://cocodataset.org, CC BY 4.0).',
      '',
      '| file | Flickr source (photographer and licence) | COCO |',
      '|---|---|---|',
      ...credits,
      '',
    ].join('\n'),
  );
  process.stdout.write(`wrote ${rows.length} photos to ${out}\n`);
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
