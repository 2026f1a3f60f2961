/**
 * Captions of the synthetic crawl and the kind of noise each one carries (`truth_noise`). Web alt text gets
 * things wrong in a handful of recurring ways; each kind below is one of them.
 */
import { Rng } from './rng';
import { OBJECT_KINDS, COLOURS, type BackgroundKind, type Colour, type ObjectKind, type TruthObject } from './shapes';

export const NOISE_KINDS = [
  'correct',
  'partial',
  'mismatched',
  'boilerplate',
  'filename',
  'html',
  'foreign',
  'empty',
] as const;
export type NoiseKind = (typeof NOISE_KINDS)[number];

/** Share of each caption kind among ordinary samples. */
export const NOISE_MIX: readonly (readonly [NoiseKind, number])[] = [
  ['correct', 0.45],
  ['partial', 0.15],
  ['mismatched', 0.1],
  ['boilerplate', 0.08],
  ['filename', 0.07],
  ['html', 0.07],
  ['foreign', 0.06],
  ['empty', 0.02],
];

/** How a `partial` caption is wrong (`truth_noise_detail`). */
export const PARTIAL_KINDS = ['omit', 'colour', 'kind', 'extra'] as const;

export const LANGUAGES = ['de', 'fr', 'es', 'it'] as const;
export type Language = (typeof LANGUAGES)[number];

type Described = Pick<TruthObject, 'kind' | 'colour'>;

function article(word: string): string {
  return /^[aeiou]/.test(word) ? 'an' : 'a';
}

function englishList(objects: readonly Described[]): string {
  const phrases = objects.map((o) => `${article(o.colour)} ${o.colour} ${o.kind}`);
  if (phrases.length <= 1) return phrases[0] ?? '';
  return `${phrases.slice(0, -1).join(', ')} and ${phrases[phrases.length - 1]}`;
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** A plain English description of exactly these objects; mentions the background sometimes. */
export function correctCaption(rng: Rng, objects: readonly Described[], background: BackgroundKind): string {
  const list = englishList(objects);
  const bg = `${background} background`;
  const one = objects.length === 1;
  const templates = [
    `${list} on ${article(background)} ${bg}`,
    `${list}`,
    `a photo of ${list}`,
    `${list} against ${article(background)} ${bg}`,
    `illustration of ${list} on ${article(background)} ${bg}`,
    one ? `close-up of ${list}` : `${list} side by side`,
    `picture showing ${list}`,
  ];
  let s = rng.pick(templates);
  if (rng.chance(0.5)) s = capitalise(s);
  if (rng.chance(0.25)) s += '.';
  return s;
}

/** A caption that gets part of the picture wrong, and how. */
export function partialCaption(
  rng: Rng,
  objects: readonly Described[],
  background: BackgroundKind,
): { caption: string; detail: (typeof PARTIAL_KINDS)[number] } {
  const options = objects.length >= 2 ? PARTIAL_KINDS : PARTIAL_KINDS.filter((k) => k !== 'omit');
  const detail = rng.pick(options);
  let told: Described[] = objects.map((o) => ({ kind: o.kind, colour: o.colour }));
  const i = rng.int(0, told.length - 1);
  switch (detail) {
    case 'omit':
      told = rng.shuffle(told).slice(0, rng.int(1, told.length - 1));
      break;
    case 'colour':
      told[i] = { kind: told[i]!.kind, colour: rng.pick(COLOURS.filter((c) => c !== told[i]!.colour)) };
      break;
    case 'kind': {
      const present = new Set(objects.map((o) => o.kind));
      told[i] = { kind: rng.pick(OBJECT_KINDS.filter((k) => !present.has(k))), colour: told[i]!.colour };
      break;
    }
    case 'extra': {
      const present = new Set(objects.map((o) => o.kind));
      told.push({ kind: rng.pick(OBJECT_KINDS.filter((k) => !present.has(k))), colour: rng.pick(COLOURS) });
      break;
    }
  }
  return { caption: correctCaption(rng, told, background), detail };
}

const BOILERPLATE = [
  'click to enlarge',
  'Click to enlarge',
  'image',
  'Image',
  'photo',
  'Buy now - free shipping!',
  'Add to cart',
  'thumbnail',
  'placeholder',
  'untitled',
  'banner',
  'logo',
  'Click here',
  'product image',
  'View larger image',
  'Sponsored',
  'spacer',
  'no description available',
  'Loading...',
  'Zoom',
  'Share on Facebook',
  '© 2023 All rights reserved',
  'see more',
  'undefined',
  'null',
  'alt',
];

export function boilerplateCaption(rng: Rng): string {
  return rng.pick(BOILERPLATE);
}

export function filenameCaption(rng: Rng): string {
  const d = (n: number) => String(rng.int(0, 10 ** n - 1)).padStart(n, '0');
  const date = () => `20${rng.int(15, 24)}-${String(rng.int(1, 12)).padStart(2, '0')}-${String(rng.int(1, 28)).padStart(2, '0')}`;
  const time = (sep: string) =>
    [rng.int(0, 23), rng.int(0, 59), rng.int(0, 59)].map((v) => String(v).padStart(2, '0')).join(sep);
  const forms = [
    () => `IMG_${d(4)}.JPG`,
    () => `IMG_${d(4)}.jpg`,
    () => `DSC${d(5)}.jpg`,
    () => `DSCN${d(4)}.JPG`,
    () => `P${d(7)}.JPG`,
    () => `image-${rng.int(1, 99)}.png`,
    () => `photo_${date()}_${time('-')}.jpg`,
    () => `Screenshot ${date()} at ${time('.')}.png`,
    () => `${date().replace(/-/g, '')}_${time('')}.jpg`,
    () => `sku_${d(5)}_large.jpg`,
    () => `banner-final-v${rng.int(2, 9)}.png`,
    () => `WhatsApp Image ${date()} at ${time('.')}.jpeg`,
    () => `${rng.u32().toString(16).padStart(8, '0')}${d(4)}.webp`,
  ];
  return rng.pick(forms)();
}

/**
 * The correct caption as a careless CMS would emit it: entities, tags, escaped tags. Unescaping and
 * stripping tags gives back a correct caption.
 */
export function htmlCaption(rng: Rng, correct: string, objects: readonly Described[]): string {
  let s = correct;
  const edits = rng.shuffle([0, 1, 2, 3, 4, 5]).slice(0, rng.int(2, 3));
  for (const e of edits) {
    switch (e) {
      case 0:
        s = s.includes(' and ')
          ? s.replace(' and ', rng.pick([' &amp; ', ' &amp;amp; ', ' &#38; ']))
          : s.replace(' ', '&nbsp;');
        break;
      case 1: {
        const noun = rng.pick(objects).kind;
        const [open, close] = rng.pick([
          ['<b>', '</b>'],
          ['<strong>', '</strong>'],
          ['&lt;b&gt;', '&lt;/b&gt;'],
          ['<em>', '</em>'],
        ] as const);
        s = s.replace(noun, `${open}${noun}${close}`);
        break;
      }
      case 2: {
        const nbsp = rng.pick(['&nbsp;', '&#160;', '&#xA0;']);
        s = s.replace(/ /g, () => (rng.chance(0.4) ? nbsp : ' '));
        break;
      }
      case 3: {
        const [open, close] = rng.pick([
          ['<span class="caption">', '</span>'],
          ['<p>', '</p>'],
          ['<div class="alt">', '</div>'],
          ['&lt;p&gt;', '&lt;/p&gt;'],
        ] as const);
        s = `${open}${s}${close}`;
        break;
      }
      case 4: {
        const [open, close] = rng.pick([
          ['&quot;', '&quot;'],
          ['&ldquo;', '&rdquo;'],
          ['&#39;', '&#39;'],
          ['&laquo;', '&raquo;'],
        ] as const);
        s = `${open}${s}${close}`;
        break;
      }
      case 5:
        s += rng.pick(['<br>', '<br/>', '<br />', '&lt;br&gt;']);
        break;
    }
  }
  return s;
}

type Gender = 'm' | 'f' | 'n';

interface LanguagePack {
  nouns: Record<ObjectKind, [string, Gender]>;
  /** colour word by gender */
  colour: (c: Colour, g: Gender) => string;
  article: Record<Gender, string>;
  adjectiveFirst: boolean;
  and: string;
  backgrounds: Record<BackgroundKind, string>;
  prefixes: string[];
}

const DE_STEMS: Record<Colour, string> = {
  red: 'rot',
  orange: 'orangefarben',
  yellow: 'gelb',
  green: 'grün',
  blue: 'blau',
  purple: 'violett',
  pink: 'pink',
  black: 'schwarz',
};

/** [masculine, feminine] */
const FR_COLOURS: Record<Colour, [string, string]> = {
  red: ['rouge', 'rouge'],
  orange: ['orange', 'orange'],
  yellow: ['jaune', 'jaune'],
  green: ['vert', 'verte'],
  blue: ['bleu', 'bleue'],
  purple: ['violet', 'violette'],
  pink: ['rose', 'rose'],
  black: ['noir', 'noire'],
};
const ES_COLOURS: Record<Colour, [string, string]> = {
  red: ['rojo', 'roja'],
  orange: ['naranja', 'naranja'],
  yellow: ['amarillo', 'amarilla'],
  green: ['verde', 'verde'],
  blue: ['azul', 'azul'],
  purple: ['morado', 'morada'],
  pink: ['rosa', 'rosa'],
  black: ['negro', 'negra'],
};
const IT_COLOURS: Record<Colour, [string, string]> = {
  red: ['rosso', 'rossa'],
  orange: ['arancione', 'arancione'],
  yellow: ['giallo', 'gialla'],
  green: ['verde', 'verde'],
  blue: ['blu', 'blu'],
  purple: ['viola', 'viola'],
  pink: ['rosa', 'rosa'],
  black: ['nero', 'nera'],
};

const PACKS: Record<Language, LanguagePack> = {
  de: {
    nouns: {
      circle: ['Kreis', 'm'],
      square: ['Quadrat', 'n'],
      triangle: ['Dreieck', 'n'],
      star: ['Stern', 'm'],
      heart: ['Herz', 'n'],
      cross: ['Kreuz', 'n'],
      ring: ['Ring', 'm'],
      diamond: ['Raute', 'f'],
      hexagon: ['Sechseck', 'n'],
      arrow: ['Pfeil', 'm'],
      moon: ['Mond', 'm'],
      pentagon: ['Fünfeck', 'n'],
      flower: ['Blume', 'f'],
      bolt: ['Blitz', 'm'],
    },
    colour: (c, g) => DE_STEMS[c] + (g === 'm' ? 'er' : g === 'f' ? 'e' : 'es'),
    article: { m: 'ein', f: 'eine', n: 'ein' },
    adjectiveFirst: true,
    and: 'und',
    backgrounds: {
      plain: 'auf einfarbigem Hintergrund',
      gradient: 'auf Hintergrund mit Farbverlauf',
      striped: 'auf gestreiftem Hintergrund',
      checkered: 'auf kariertem Hintergrund',
      dotted: 'auf gepunktetem Hintergrund',
      speckled: 'auf gesprenkeltem Hintergrund',
    },
    prefixes: ['', '', 'Foto: ', 'Bild: '],
  },
  fr: {
    nouns: {
      circle: ['cercle', 'm'],
      square: ['carré', 'm'],
      triangle: ['triangle', 'm'],
      star: ['étoile', 'f'],
      heart: ['cœur', 'm'],
      cross: ['croix', 'f'],
      ring: ['anneau', 'm'],
      diamond: ['losange', 'm'],
      hexagon: ['hexagone', 'm'],
      arrow: ['flèche', 'f'],
      moon: ['lune', 'f'],
      pentagon: ['pentagone', 'm'],
      flower: ['fleur', 'f'],
      bolt: ['éclair', 'm'],
    },
    colour: (c, g) => FR_COLOURS[c][g === 'f' ? 1 : 0],
    article: { m: 'un', f: 'une', n: 'un' },
    adjectiveFirst: false,
    and: 'et',
    backgrounds: {
      plain: 'sur fond uni',
      gradient: 'sur fond dégradé',
      striped: 'sur fond rayé',
      checkered: 'sur fond à carreaux',
      dotted: 'sur fond à pois',
      speckled: 'sur fond moucheté',
    },
    prefixes: ['', '', 'Photo : ', 'Image : '],
  },
  es: {
    nouns: {
      circle: ['círculo', 'm'],
      square: ['cuadrado', 'm'],
      triangle: ['triángulo', 'm'],
      star: ['estrella', 'f'],
      heart: ['corazón', 'm'],
      cross: ['cruz', 'f'],
      ring: ['anillo', 'm'],
      diamond: ['rombo', 'm'],
      hexagon: ['hexágono', 'm'],
      arrow: ['flecha', 'f'],
      moon: ['luna', 'f'],
      pentagon: ['pentágono', 'm'],
      flower: ['flor', 'f'],
      bolt: ['rayo', 'm'],
    },
    colour: (c, g) => ES_COLOURS[c][g === 'f' ? 1 : 0],
    article: { m: 'un', f: 'una', n: 'un' },
    adjectiveFirst: false,
    and: 'y',
    backgrounds: {
      plain: 'sobre fondo liso',
      gradient: 'sobre fondo degradado',
      striped: 'sobre fondo a rayas',
      checkered: 'sobre fondo a cuadros',
      dotted: 'sobre fondo de lunares',
      speckled: 'sobre fondo moteado',
    },
    prefixes: ['', '', 'Foto de ', 'Imagen de '],
  },
  it: {
    nouns: {
      circle: ['cerchio', 'm'],
      square: ['quadrato', 'm'],
      triangle: ['triangolo', 'm'],
      star: ['stella', 'f'],
      heart: ['cuore', 'm'],
      cross: ['croce', 'f'],
      ring: ['anello', 'm'],
      diamond: ['rombo', 'm'],
      hexagon: ['esagono', 'm'],
      arrow: ['freccia', 'f'],
      moon: ['luna', 'f'],
      pentagon: ['pentagono', 'm'],
      flower: ['fiore', 'm'],
      bolt: ['fulmine', 'm'],
    },
    colour: (c, g) => IT_COLOURS[c][g === 'f' ? 1 : 0],
    article: { m: 'un', f: 'una', n: 'un' },
    adjectiveFirst: false,
    and: 'e',
    backgrounds: {
      plain: 'su sfondo in tinta unita',
      gradient: 'su sfondo sfumato',
      striped: 'su sfondo a righe',
      checkered: 'su sfondo a scacchi',
      dotted: 'su sfondo a pois',
      speckled: 'su sfondo maculato',
    },
    prefixes: ['', '', 'Foto di ', 'Immagine di '],
  },
};

/** A correct description in another language, object and colour words translated. */
export function foreignCaption(
  rng: Rng,
  objects: readonly Described[],
  background: BackgroundKind,
): { caption: string; lang: Language } {
  const lang = rng.pick(LANGUAGES);
  const p = PACKS[lang];
  const phrases = objects.map((o) => {
    const [noun, g] = p.nouns[o.kind];
    const adj = p.colour(o.colour, g);
    return `${p.article[g]} ${p.adjectiveFirst ? `${adj} ${noun}` : `${noun} ${adj}`}`;
  });
  let list = phrases.length <= 1 ? (phrases[0] ?? '') : `${phrases.slice(0, -1).join(', ')} ${p.and} ${phrases[phrases.length - 1]}`;
  if (rng.chance(0.5)) list += ` ${p.backgrounds[background]}`;
  const prefix = rng.pick(p.prefixes);
  return { caption: prefix === '' ? capitalise(list) : prefix + list, lang };
}

export function emptyCaption(rng: Rng): string {
  return rng.pick(['', '', ' ', '\n', '  \t ']);
}
