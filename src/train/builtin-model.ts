/**
 * The built-in CLIP as a trainable model: its parameters read back from a bundle's ONNX initializers (the
 * export of export.ts, inverted), and a new bundle version written from trained parameters with the same
 * layout. Reading back is exact up to one reparametrisation: the export folds the patch bias into the
 * position embeddings (pos_bias = patch_b + pos), so the read model has patch_b = 0 and pos = pos_bias, the
 * same function. The logit scale is not in the ONNX files; training restarts it at the clamp (ln 100), where
 * the shipped build ends.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { exportText, exportVision } from './clip/export';
import { type TinyClipConfig, type TinyClipParams, initParams, transpose, view } from './clip/tiny-clip';
import { DEFAULT_CONFIG, MAX_LOGIT_SCALE } from './clip/train';

export interface TrainableBundle {
  dir: string;
  json: BundleJson;
  params: TinyClipParams;
  vocab: Record<string, number>;
}

export interface BundleJson {
  format: string;
  version: string;
  vision: { onnx: string; kind: string; preprocess: { size: [number, number] }; grid: { rows: number; cols: number } };
  text: { onnx: string; tokenizer: { kind: string; vocab: string; context: number } };
  training?: Record<string, unknown>;
  [k: string]: unknown;
}

export class BundleError extends Error {}

function initializers(bytes: Buffer): Map<string, { dims: number[]; data: Float32Array }> {
  const model = onnx.ModelProto.decode(bytes);
  const out = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataType !== onnx.TensorProto.DataType.FLOAT || !t.name) continue;
    const raw = t.rawData && t.rawData.length > 0 ? t.rawData : null;
    const data = raw ? new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)) : Float32Array.from(t.floatData ?? []);
    out.set(t.name, { dims: (t.dims ?? []).map(Number), data });
  }
  return out;
}

/** Loads a built-in-CLIP bundle (vision kind attention-pool, words tokenizer) as trainable parameters. */
export async function loadTrainable(dir: string): Promise<TrainableBundle> {
  let json: BundleJson;
  try {
    json = JSON.parse(await fs.readFile(join(dir, 'bundle.json'), 'utf8')) as BundleJson;
  } catch (e) {
    throw new BundleError(`cannot read ${join(dir, 'bundle.json')}: ${(e as Error).message.split('\n')[0]}`);
  }
  const notBuiltin = () =>
    new BundleError(
      `bundle ${json.version ?? dir} is not a built-in CLIP (vision kind ${json.vision?.kind}, tokenizer ${json.text?.tokenizer?.kind}); ` +
        'squeeze train continues the built-in shapes bundle (--base builtin-shapes, the default, or a bundle it published); training the photo bundle\'s LiT text tower from shards is not built yet',
    );
  if (json.vision?.kind !== 'attention-pool' || json.text?.tokenizer?.kind !== 'words') throw notBuiltin();
  const vocab = JSON.parse(await fs.readFile(join(dir, json.text.tokenizer.vocab), 'utf8')) as Record<string, number>;
  const img = initializers(await fs.readFile(join(dir, json.vision.onnx)));
  const txt = initializers(await fs.readFile(join(dir, json.text.onnx)));
  if (!img.has('img.patch_w_t') || !txt.has('txt.tok')) throw notBuiltin();
  const need = (m: typeof img, name: string) => {
    const t = m.get(name);
    if (!t) throw new BundleError(`bundle ${json.version}: initializer ${name} missing from its ONNX file`);
    return t;
  };
  const patchWT = need(img, 'img.patch_w_t');
  const w2T = need(img, 'img.w2_t');
  const projT = need(img, 'img.proj_t');
  const tok = need(txt, 'txt.tok');
  const txtPos = need(txt, 'txt.pos');
  const S = json.vision.preprocess.size[0];
  const G = json.vision.grid.rows;
  const config: TinyClipConfig = {
    ...DEFAULT_CONFIG,
    image: S,
    patch: S / G,
    hidden: patchWT.dims[1]!,
    width: w2T.dims[1]!,
    embed: projT.dims[1]!,
    vocab: tok.dims[0]!,
    context: txtPos.dims[0]!,
  };
  const p = initParams(config, 0);
  const set = (g: Parameters<typeof view>[1], data: ArrayLike<number>) => {
    const v = view(p, g);
    if (v.length !== data.length) throw new BundleError(`bundle ${json.version}: ${g} has ${data.length} values, the model wants ${v.length}`);
    v.set(data);
  };
  const untranspose = (t: { dims: number[]; data: Float32Array }) => transpose(t.data, t.dims[0]!, t.dims[1]!, new Float32Array(t.data.length));
  const query = (t: { data: Float32Array }) => t.data.map((x) => x * Math.sqrt(config.width));
  set('img.in_shift', need(img, 'img.in_shift').data);
  set('img.in_scale', need(img, 'img.in_scale').data);
  set('img.patch_w', untranspose(patchWT));
  set('img.patch_b', new Float32Array(config.hidden));
  set('img.pos', need(img, 'img.pos_bias').data);
  set('img.w2', untranspose(w2T));
  set('img.b2', need(img, 'img.b2').data);
  set('img.query', query(need(img, 'img.query_scaled')));
  set('img.contrast', need(img, 'img.contrast').data);
  set('img.proj', untranspose(projT));
  set('img.proj_b', need(img, 'img.proj_b').data);
  set('txt.tok', tok.data);
  set('txt.pos', txtPos.data);
  set('txt.query', query(need(txt, 'txt.query_scaled')));
  set('txt.word_bias', need(txt, 'txt.word_bias').data);
  set('txt.proj', untranspose(need(txt, 'txt.proj_t')));
  set('txt.proj_b', need(txt, 'txt.proj_b').data);
  view(p, 'logit_scale')[0] = MAX_LOGIT_SCALE;
  return { dir, json, params: p, vocab };
}

/** The version name of trained parameters: the base model's name, the step and a hash of the ONNX bytes. */
function versionOf(base: string, step: number, vision: Buffer, text: Buffer): string {
  const name = base.replace(/-[0-9a-f]{8}$/, '').replace(/-t\d+$/, '');
  const hash = createHash('sha256').update(vision).update(text).digest('hex').slice(0, 8);
  return `${name}-t${step}-${hash}`;
}

/**
 * Writes a bundle of the trained parameters under `root/<version>` (a temporary directory renamed into
 * place, so a curator never loads half a bundle) and returns its version and directory.
 */
export async function publishBundle(root: string, base: TrainableBundle, params: TinyClipParams, step: number, training: Record<string, unknown>): Promise<{ version: string; dir: string }> {
  const meta = { version: base.json.version, step: String(step) };
  const vision = exportVision(params, meta);
  const text = exportText(params, meta);
  const version = versionOf(base.json.version, step, vision, text);
  const dir = join(root, version);
  try {
    await fs.access(join(dir, 'bundle.json'));
    return { version, dir };
  } catch {
    // not published yet
  }
  await fs.mkdir(root, { recursive: true });
  const tmp = join(root, `.tmp-${version}-${process.pid}`);
  await fs.rm(tmp, { recursive: true, force: true });
  await fs.mkdir(tmp);
  const json = { ...base.json, version, training: { ...(base.json.training ?? {}), continued: { from: base.json.version, step, ...training } } };
  await fs.writeFile(join(tmp, base.json.vision.onnx), vision);
  await fs.writeFile(join(tmp, base.json.text.onnx), text);
  await fs.writeFile(join(tmp, base.json.text.tokenizer.vocab), JSON.stringify(base.vocab, null, 2) + '\n');
  await fs.writeFile(join(tmp, 'bundle.json'), JSON.stringify(json, null, 2) + '\n');
  try {
    await fs.rename(tmp, dir);
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true });
    if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return { version, dir };
}
