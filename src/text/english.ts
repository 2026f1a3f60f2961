/**
 * Small English helpers for captions: does a caption already mention a class (singular/plural and a
 * few synonyms), "a" or "an", noun phrases for class names, and lists "a, b and c".
 */

const IRREGULAR: Record<string, string> = {
  people: 'person',
  persons: 'person',
  men: 'man',
  women: 'woman',
  children: 'child',
  mice: 'mouse',
  feet: 'foot',
  teeth: 'tooth',
  geese: 'goose',
  oxen: 'ox',
  knives: 'knife',
  wives: 'wife',
  lives: 'life',
  leaves: 'leaf',
  wolves: 'wolf',
  shelves: 'shelf',
  halves: 'half',
  loaves: 'loaf',
  calves: 'calf',
  cacti: 'cactus',
  fungi: 'fungus',
  dice: 'die',
};

/** The word and the singulars it could be the plural of ("boxes" -> box, boxe, boxes). */
export function wordForms(word: string): Set<string> {
  const w = word.toLowerCase();
  const out = new Set([w]);
  if (IRREGULAR[w]) out.add(IRREGULAR[w]);
  if (w.length > 3 && w.endsWith('s') && !w.endsWith('ss')) out.add(w.slice(0, -1));
  if (w.length > 4 && w.endsWith('es')) out.add(w.slice(0, -2));
  if (w.length > 4 && w.endsWith('ies')) out.add(`${w.slice(0, -3)}y`);
  if (w.length > 4 && w.endsWith('ves')) {
    out.add(`${w.slice(0, -3)}f`);
    out.add(`${w.slice(0, -3)}fe`);
  }
  return out;
}

/**
 * Other ways captions name a class (COCO names, the synthetic shapes). Keys and values are lower case;
 * a match of any counts as a mention.
 */
export const SYNONYMS: Readonly<Record<string, readonly string[]>> = {
  person: [
    'people', 'man', 'woman', 'boy', 'girl', 'child', 'kid', 'baby', 'guy', 'lady', 'player', 'human', 'gentleman', 'toddler',
    'teenager', 'teen', 'adult', 'someone', 'somebody', 'crowd', 'family', 'couple', 'team', 'group', 'skier', 'snowboarder',
    'surfer', 'skateboarder', 'skater', 'swimmer', 'climber', 'biker', 'cyclist', 'bicyclist', 'rider', 'runner', 'jogger',
    'dancer', 'hiker', 'worker', 'tourist', 'officer', 'policeman', 'soldier', 'chef', 'cook', 'athlete', 'wrestler', 'boxer',
    'batter', 'pitcher', 'catcher', 'goalie', 'referee', 'fan', 'spectator', 'audience', 'performer', 'singer', 'musician',
    'guitarist', 'drummer', 'student', 'he', 'she', 'his', 'her', 'son', 'daughter', 'mother', 'father', 'mom', 'dad',
    'brother', 'sister', 'friend', 'infant', 'youngster', 'individual', 'pedestrian', 'bride', 'groom', 'priest', 'clown',
    'cowboy', 'motorcyclist', 'photographer', 'artist', 'painter', 'vendor', 'shopper', 'customer', 'waiter', 'waitress',
    'driver', 'passenger', 'baker', 'farmer', 'nurse', 'doctor', 'lifeguard', 'sailor', 'pilot', 'monk', 'model', 'actor',
    'actress', 'competitor', 'racer', 'coach', 'teacher', 'fighter', 'bystander', 'onlooker', 'ballerina', 'grandmother',
    'grandfather', 'toddlers', 'kids', 'babies', 'boys', 'girls', 'persons', 'businessman', 'police', 'skiers', 'surfers', 'kayaker', 'fisherman', 'diver', 'gymnast', 'men', 'women', 'children',
  ],
  bicycle: ['bike', 'cycle'],
  motorcycle: ['motorbike', 'motor bike', 'scooter'],
  airplane: ['plane', 'aeroplane', 'aircraft', 'jet', 'airliner'],
  car: ['automobile', 'sedan', 'hatchback', 'coupe'],
  truck: ['lorry', 'pickup'],
  boat: ['ship', 'yacht', 'sailboat', 'canoe', 'kayak'],
  tv: ['television', 'tv set', 'monitor', 'screen', 'tv monitor'],
  couch: ['sofa', 'settee'],
  'cell phone': ['phone', 'mobile phone', 'smartphone', 'cellphone', 'iphone'],
  laptop: ['notebook computer', 'macbook'],
  'dining table': ['table'],
  'potted plant': ['plant', 'houseplant'],
  'sports ball': ['ball', 'football', 'basketball', 'baseball', 'soccer ball', 'volleyball', 'tennis ball', 'frisbee'],
  frisbee: ['disc', 'flying disc'],
  surfboard: ['surf board', 'board'],
  skateboard: ['skate board', 'board'],
  snowboard: ['snow board', 'board'],
  'baseball bat': ['bat'],
  'baseball glove': ['glove', 'mitt'],
  'tennis racket': ['racket', 'racquet'],
  bench: ['park bench'],
  bird: ['duck', 'goose', 'seagull', 'gull', 'pigeon', 'parrot', 'eagle', 'swan', 'chicken', 'owl', 'crow', 'sparrow'],
  umbrella: ['parasol'],
  bus: ['coach'],
  train: ['locomotive', 'subway', 'tram'],
  cup: ['mug'],
  'wine glass': ['glass'],
  donut: ['doughnut'],
  'hot dog': ['hotdog'],
  'teddy bear': ['teddy'],
  dog: ['puppy', 'pup', 'hound', 'poodle', 'terrier', 'retriever', 'labrador', 'collie', 'spaniel', 'beagle', 'dachshund', 'greyhound', 'shepherd', 'husky', 'pitbull', 'bulldog', 'chihuahua', 'pug', 'boxer', 'dalmatian', 'rottweiler', 'doberman', 'corgi', 'schnauzer', 'sheepdog', 'mutt'],
  cat: ['kitten', 'kitty'],
  horse: ['pony', 'foal'],
  cow: ['cattle', 'calf', 'bull', 'ox'],
  sheep: ['lamb'],
  handbag: ['purse', 'bag'],
  backpack: ['rucksack'],
  suitcase: ['luggage'],
  'fire hydrant': ['hydrant'],
  'traffic light': ['traffic signal', 'stoplight'],
  refrigerator: ['fridge'],
  'hair drier': ['hair dryer', 'hairdryer', 'blow dryer'],
  remote: ['remote control'],
  skis: ['ski'],
  circle: ['disc', 'disk', 'dot'],
  moon: ['crescent'],
  bolt: ['lightning'],
  flower: ['blossom', 'bloom'],
  diamond: ['rhombus', 'lozenge'],
  cross: ['plus sign'],
};

const words = (text: string): string[] => text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];

function containsPhrase(tokens: string[][], phrase: string[]): boolean {
  if (phrase.length === 0) return false;
  const last = wordForms(phrase[phrase.length - 1]);
  outer: for (let i = 0; i + phrase.length <= tokens.length; i++) {
    for (let k = 0; k < phrase.length - 1; k++) if (!tokens[i + k].includes(phrase[k])) continue outer;
    if (tokens[i + phrase.length - 1].some((f) => last.has(f))) return true;
  }
  return false;
}

/** Whether `text` already names `label` (or its plural, or a synonym). */
export function mentions(text: string, label: string): boolean {
  const tokens = words(text).map((w) => [...wordForms(w)]);
  const name = label.toLowerCase().replace(/_/g, ' ');
  const alternatives = [name, ...(SYNONYMS[name] ?? [])];
  return alternatives.some((a) => containsPhrase(tokens, words(a)));
}

/** Words that read as plural or uncountable and take no article ("with scissors", "with broccoli"). */
const NO_ARTICLE = new Set([
  'skis', 'scissors', 'glasses', 'sunglasses', 'jeans', 'pants', 'trousers', 'shorts', 'binoculars', 'headphones',
  'earphones', 'pliers', 'tongs', 'broccoli', 'grass', 'water', 'snow', 'sand', 'rice', 'food', 'hair', 'smoke',
  'furniture', 'luggage', 'people',
]);
const ACRONYMS: Record<string, string> = { tv: 'TV', suv: 'SUV', atv: 'ATV', ufo: 'UFO', dvd: 'DVD', cd: 'CD' };

/** "a" or "an" by sound, for the usual cases (an hour, a unicorn, an SUV, a TV). */
export function article(phrase: string): 'a' | 'an' {
  const first = phrase.trim().split(/\s+/)[0] ?? '';
  if (/^[A-Z]{2,}$/.test(first)) return /^[AEFHILMNORSX]/.test(first) ? 'an' : 'a';
  const w = first.toLowerCase();
  if (/^(hour|honest|honou?r|heir)/.test(w)) return 'an';
  if (/^(uni|use|usu|usa|ute|uti|uro|eu|ewe|one|once|ubiq|uk)/.test(w)) return 'a';
  if (/^8/.test(w) || /^(11|18)(\D|$)/.test(w)) return 'an';
  return /^[aeiou]/.test(w) ? 'an' : 'a';
}

/** A class name as a noun phrase: "a ring", "an apple", "a TV", "scissors". */
export function nounPhrase(label: string): string {
  const name = label.trim().replace(/_/g, ' ');
  const display = name
    .split(/\s+/)
    .map((w) => ACRONYMS[w.toLowerCase()] ?? (w === w.toUpperCase() && w.length > 1 ? w : w.toLowerCase()))
    .join(' ');
  const last = display.split(' ').pop()!.toLowerCase();
  if (NO_ARTICLE.has(last) || NO_ARTICLE.has(display.toLowerCase())) return display;
  return `${article(display)} ${display}`;
}

/** "a", "a and b", "a, b and c". */
export function englishList(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? '';
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** Upper-cases the first letter. */
export const capitalise = (s: string): string => s.replace(/^(\P{L}*)(\p{L})/u, (_, pre: string, c: string) => pre + c.toUpperCase());
