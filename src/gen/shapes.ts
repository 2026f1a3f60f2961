/**
 * The visual vocabulary of the synthetic crawl: object kinds, colours, backgrounds, and how one image
 * (a scene) is laid out. Geometry only; `raster.ts` turns a scene into pixels and `sceneToSvg` into SVG.
 */
import { Rng } from './rng';

/** Nameable nouns, one word each, so captions and tag vocabularies can use them as they are. */
export const OBJECT_KINDS = [
  'circle',
  'square',
  'triangle',
  'star',
  'heart',
  'cross',
  'ring',
  'diamond',
  'hexagon',
  'arrow',
  'moon',
  'pentagon',
  'flower',
  'bolt',
] as const;
export type ObjectKind = (typeof OBJECT_KINDS)[number];

export const COLOURS = ['red', 'orange', 'yellow', 'green', 'blue', 'purple', 'pink', 'black'] as const;
export type Colour = (typeof COLOURS)[number];

export type RGB = readonly [number, number, number];

export const COLOUR_RGB: Readonly<Record<Colour, RGB>> = {
  red: [214, 40, 40],
  orange: [245, 130, 20],
  yellow: [250, 210, 20],
  green: [40, 160, 70],
  blue: [35, 90, 215],
  purple: [130, 55, 175],
  pink: [240, 105, 180],
  black: [25, 25, 25],
};

/** Adjectives, as captions say them ("on a striped background"). */
export const BACKGROUND_KINDS = ['plain', 'gradient', 'striped', 'checkered', 'dotted', 'speckled'] as const;
export type BackgroundKind = (typeof BACKGROUND_KINDS)[number];

/** [x, y, width, height] in pixels of the stored image; the object lies inside it. */
export type Box = [number, number, number, number];

/** What the truth attrs record about one object. */
export interface TruthObject {
  kind: ObjectKind;
  colour: Colour;
  box: Box;
}

/** A truth object plus what it takes to draw it. */
export interface DrawnObject extends TruthObject {
  /** closed outlines as flat [x0, y0, x1, y1, ...] in pixels; filled with the even-odd rule */
  rings: number[][];
  rgb: RGB;
}

export interface Background {
  kind: BackgroundKind;
  /** first is the base colour; patterns use the others */
  colours: RGB[];
  /** radians: gradient direction, stripe direction */
  angle: number;
  /** pixels: stripe period, checker cell, dot spacing */
  period: number;
  /** dot radius in pixels; speckle count for 'speckled' */
  detail: number;
  /** seeds the speckle positions */
  seed: number;
}

export interface Scene {
  width: number;
  height: number;
  background: Background;
  objects: DrawnObject[];
}

type Pt = [number, number];

function regular(n: number, r: number, phase: number): Pt[] {
  const pts: Pt[] = [];
  for (let i = 0; i < n; i++) {
    const a = phase + (2 * Math.PI * i) / n;
    pts.push([r * Math.cos(a), r * Math.sin(a)]);
  }
  return pts;
}

const UP = -Math.PI / 2;

/**
 * Outline of one object kind around the origin at roughly unit radius (y points down, as in images),
 * and how far it may be rotated without turning into another kind (a square into a diamond).
 */
function unitShape(kind: ObjectKind, rng: Rng): { rings: Pt[][]; maxTurn: number } {
  switch (kind) {
    case 'circle':
      return { rings: [regular(48, 1, 0)], maxTurn: 0 };
    case 'ring':
      return { rings: [regular(48, 1, 0), regular(40, 0.58, 0).reverse()], maxTurn: 0 };
    case 'square':
      return { rings: [regular(4, Math.SQRT2, Math.PI / 4)], maxTurn: 0.2 };
    case 'diamond':
      return { rings: [[[0, -1.3], [0.8, 0], [0, 1.3], [-0.8, 0]]], maxTurn: 0.12 };
    case 'triangle':
      return { rings: [regular(3, 1, UP)], maxTurn: 0.3 };
    case 'pentagon':
      return { rings: [regular(5, 1, UP)], maxTurn: 0.3 };
    case 'hexagon':
      return { rings: [regular(6, 1, 0)], maxTurn: Math.PI / 6 };
    case 'star': {
      const pts: Pt[] = [];
      for (let i = 0; i < 10; i++) {
        const r = i % 2 === 0 ? 1 : 0.42;
        const a = UP + (Math.PI * i) / 5;
        pts.push([r * Math.cos(a), r * Math.sin(a)]);
      }
      return { rings: [pts], maxTurn: 0.35 };
    }
    case 'heart': {
      const pts: Pt[] = [];
      for (let i = 0; i < 56; i++) {
        const t = (2 * Math.PI * i) / 56;
        const x = 16 * Math.sin(t) ** 3;
        const y = 13 * Math.cos(t) - 5 * Math.cos(2 * t) - 2 * Math.cos(3 * t) - Math.cos(4 * t);
        pts.push([x / 16, -y / 16]);
      }
      return { rings: [pts], maxTurn: 0.3 };
    }
    case 'cross': {
      const a = 0.34;
      const pts: Pt[] = [
        [-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
        [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a],
      ];
      return { rings: [pts], maxTurn: 0.2 };
    }
    case 'arrow': {
      const pts: Pt[] = [
        [-1, -0.22], [0.15, -0.22], [0.15, -0.6], [1, 0], [0.15, 0.6], [0.15, 0.22], [-1, 0.22],
      ];
      // Any of four directions, plus a little tilt.
      const dir = (rng.int(0, 3) * Math.PI) / 2;
      return { rings: [rotate(pts, dir)], maxTurn: 0.25 };
    }
    case 'moon': {
      // Crescent: the unit disc minus a disc of radius r2 centred at (d, 0).
      const d = 0.5;
      const r2 = 0.82;
      const ix = (1 - r2 * r2 + d * d) / (2 * d);
      const iy = Math.sqrt(1 - ix * ix);
      const outerFrom = Math.atan2(iy, ix);
      const innerFrom = Math.atan2(iy, ix - d);
      const pts: Pt[] = [];
      const steps = 30;
      for (let i = 0; i <= steps; i++) {
        const a = outerFrom + ((2 * Math.PI - 2 * outerFrom) * i) / steps;
        pts.push([Math.cos(a), Math.sin(a)]);
      }
      for (let i = 1; i < steps; i++) {
        const a = 2 * Math.PI - innerFrom - ((2 * Math.PI - 2 * innerFrom) * i) / steps;
        pts.push([d + r2 * Math.cos(a), r2 * Math.sin(a)]);
      }
      return { rings: [pts], maxTurn: Math.PI };
    }
    case 'flower': {
      const pts: Pt[] = [];
      for (let i = 0; i < 90; i++) {
        const a = (2 * Math.PI * i) / 90;
        const r = 0.66 + 0.34 * Math.cos(5 * a);
        pts.push([r * Math.cos(a), r * Math.sin(a)]);
      }
      return { rings: [pts], maxTurn: Math.PI };
    }
    case 'bolt': {
      const pts: Pt[] = [
        [-0.1, -1], [0.55, -1], [0.18, -0.22], [0.6, -0.22], [-0.4, 1], [-0.08, 0.12], [-0.5, 0.12],
      ];
      return { rings: [pts], maxTurn: 0.25 };
    }
  }
}

function rotate(pts: Pt[], a: number): Pt[] {
  const c = Math.cos(a);
  const s = Math.sin(a);
  return pts.map(([x, y]) => [x * c - y * s, x * s + y * c]);
}

function hsl(h: number, s: number, l: number): RGB {
  const k = (n: number) => (n + h * 12) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1));
  return [Math.round(f(0) * 255), Math.round(f(8) * 255), Math.round(f(4) * 255)];
}

function dist(a: RGB, b: RGB): number {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

function planBackground(rng: Rng, width: number, height: number): Background {
  const kind = rng.pick(BACKGROUND_KINDS);
  const dark = rng.chance(0.15);
  const light = (h: number): RGB =>
    dark ? hsl(h, rng.float(0.1, 0.4), rng.float(0.13, 0.27)) : hsl(h, rng.float(0.2, 0.65), rng.float(0.78, 0.93));
  const h0 = rng.next();
  const colours: RGB[] = [light(h0)];
  const others = kind === 'speckled' ? 2 : kind === 'plain' ? 0 : 1;
  for (let i = 0; i < others; i++) colours.push(light(rng.chance(0.5) ? h0 : (h0 + rng.float(0.08, 0.5)) % 1));
  const minSide = Math.min(width, height);
  let angle = 0;
  let period = 0;
  let detail = 0;
  switch (kind) {
    case 'gradient':
      angle = rng.float(0, 2 * Math.PI);
      break;
    case 'striped':
      angle = rng.pick([0, Math.PI / 2, Math.PI / 4, (3 * Math.PI) / 4]);
      period = rng.int(10, Math.max(12, Math.round(minSide / 6)));
      break;
    case 'checkered':
      period = rng.int(12, Math.max(14, Math.round(minSide / 5)));
      break;
    case 'dotted':
      period = rng.int(14, Math.max(16, Math.round(minSide / 5)));
      detail = period * rng.float(0.18, 0.34);
      break;
    case 'speckled':
      detail = Math.round((width * height) / rng.float(60, 200));
      break;
    case 'plain':
      break;
  }
  return { kind, colours, angle, period, detail, seed: rng.u32() };
}

function overlaps(a: Box, b: Box, gap: number): boolean {
  return a[0] < b[0] + b[2] + gap && b[0] < a[0] + a[2] + gap && a[1] < b[1] + b[3] + gap && b[1] < a[1] + a[3] + gap;
}

/**
 * Lays out one image: a background and one to three objects of distinct kinds, each 15%..45% of the
 * smaller side, inside the image, not touching each other, in colours that stand out from the background.
 */
export function planScene(rng: Rng, width: number, height: number): Scene {
  const background = planBackground(rng, width, height);
  const minSide = Math.min(width, height);
  const count = rng.weighted([[1, 0.45], [2, 0.35], [3, 0.2]] as const);
  const kinds = rng.shuffle([...OBJECT_KINDS]).slice(0, count);
  const usable = COLOURS.filter((c) => background.colours.every((b) => dist(COLOUR_RGB[c], b) >= 100));
  const palette = usable.length > 0 ? usable : COLOURS;
  const objects: DrawnObject[] = [];
  for (const kind of kinds) {
    const shape = unitShape(kind, rng);
    const turn = shape.maxTurn === 0 ? 0 : rng.float(-shape.maxTurn, shape.maxTurn);
    const rings = shape.rings.map((r) => rotate(r, turn));
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (const r of rings) {
      for (const [x, y] of r) {
        minX = Math.min(minX, x);
        maxX = Math.max(maxX, x);
        minY = Math.min(minY, y);
        maxY = Math.max(maxY, y);
      }
    }
    const extent = Math.max(maxX - minX, maxY - minY);
    let size = rng.float(0.15, 0.45) * minSide;
    let placed: { box: Box; scale: number; ox: number; oy: number } | null = null;
    for (let attempt = 0; attempt < 60 && !placed; attempt++) {
      if (attempt > 0 && attempt % 15 === 0) size = Math.max(0.15 * minSide, size * 0.8);
      const scale = size / extent;
      const w = (maxX - minX) * scale;
      const h = (maxY - minY) * scale;
      const ox = rng.float(1, Math.max(1, width - 1 - w));
      const oy = rng.float(1, Math.max(1, height - 1 - h));
      const x0 = Math.floor(ox);
      const y0 = Math.floor(oy);
      const box: Box = [x0, y0, Math.min(width, Math.ceil(ox + w)) - x0, Math.min(height, Math.ceil(oy + h)) - y0];
      if (objects.every((o) => !overlaps(o.box, box, 3))) placed = { box, scale, ox, oy };
    }
    if (!placed) continue;
    const { box, scale, ox, oy } = placed;
    const colour = rng.pick(palette);
    const base = COLOUR_RGB[colour];
    const jitter = (v: number) => Math.max(0, Math.min(255, v + rng.int(-12, 12)));
    const flat = rings.map((r) => {
      const out: number[] = [];
      for (const [x, y] of r) out.push(ox + (x - minX) * scale, oy + (y - minY) * scale);
      return out;
    });
    objects.push({ kind, colour, box, rings: flat, rgb: [jitter(base[0]), jitter(base[1]), jitter(base[2])] });
  }
  return { width, height, background, objects };
}

/** Only the truth part of the objects, as stored in `truth_objects`. */
export function truthOf(objects: readonly TruthObject[]): TruthObject[] {
  return objects.map((o) => ({ kind: o.kind, colour: o.colour, box: [...o.box] as Box }));
}

function hex(c: RGB): string {
  return '#' + c.map((v) => v.toString(16).padStart(2, '0')).join('');
}

/** The scene as an SVG document (flat background, same objects): the generator's unsupported-format input. */
export function sceneToSvg(scene: Scene): string {
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${scene.width}" height="${scene.height}" viewBox="0 0 ${scene.width} ${scene.height}">`,
    `<rect width="${scene.width}" height="${scene.height}" fill="${hex(scene.background.colours[0]!)}"/>`,
  ];
  for (const o of scene.objects) {
    const d = o.rings
      .map((r) => {
        let s = '';
        for (let i = 0; i < r.length; i += 2) s += `${i === 0 ? 'M' : 'L'}${r[i]!.toFixed(1)} ${r[i + 1]!.toFixed(1)}`;
        return s + 'Z';
      })
      .join('');
    parts.push(`<path d="${d}" fill="${hex(o.rgb)}" fill-rule="evenodd"><title>${o.colour} ${o.kind}</title></path>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}
