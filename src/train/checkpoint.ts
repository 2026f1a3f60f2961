/**
 * Trainer checkpoints: one file per checkpoint, `step-<step>.ckpt`, written under a temporary name, fsynced
 * and renamed into place, so a SIGKILL at any moment leaves either the previous checkpoint or the new one,
 * never half of one. The file is a magic line, a JSON header (state, blob sizes, SHA-256 of the blobs) and the
 * blobs: the parameters (float32), Adam's two moments (float64). Loading takes the newest file whose checksum
 * holds; a file of another model (different parameter count or base model name) is refused with a reason.
 */
import { createHash } from 'node:crypto';
import { constants as fsc, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir } from '../streams/shards/shard-log';

const MAGIC = 'squeeze-trainer-checkpoint/1\n';
const KEEP = 2;

export interface CheckpointBlobs {
  params: Float32Array;
  adamM: Float64Array;
  adamV: Float64Array;
}

export interface Checkpoint<S> {
  step: number;
  state: S;
  blobs: CheckpointBlobs;
  file: string;
}

const name = (step: number) => `step-${String(step).padStart(10, '0')}.ckpt`;

export async function writeCheckpoint<S>(dir: string, step: number, state: S, blobs: CheckpointBlobs): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  const body = [blobs.params, blobs.adamM, blobs.adamV].map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  const sha = createHash('sha256');
  for (const b of body) sha.update(b);
  const header = JSON.stringify({ step, state, sizes: body.map((b) => b.length), sha256: sha.digest('hex') });
  const head = Buffer.alloc(4);
  head.writeUInt32LE(Buffer.byteLength(header));
  const final = join(dir, name(step));
  const tmp = join(dir, `.tmp-${name(step)}-${process.pid}`);
  const fh = await fs.open(tmp, fsc.O_CREAT | fsc.O_WRONLY | fsc.O_TRUNC, 0o644);
  try {
    await fh.writeFile(Buffer.concat([Buffer.from(MAGIC), head, Buffer.from(header), ...body]));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, final);
  await fsyncDir(dir);
  const all = (await fs.readdir(dir)).filter((n) => /^step-\d+\.ckpt$/.test(n)).sort();
  for (const old of all.slice(0, Math.max(0, all.length - KEEP))) await fs.rm(join(dir, old), { force: true });
  return final;
}

/** Parses one checkpoint file; throws with the reason when it is not a whole checkpoint. */
export async function readCheckpoint<S>(file: string): Promise<Checkpoint<S>> {
  const buf = await fs.readFile(file);
  if (buf.subarray(0, MAGIC.length).toString() !== MAGIC) throw new Error(`${file} is not a squeeze trainer checkpoint`);
  const hl = buf.readUInt32LE(MAGIC.length);
  const at = MAGIC.length + 4;
  const header = JSON.parse(buf.subarray(at, at + hl).toString()) as { step: number; state: S; sizes: number[]; sha256: string };
  let o = at + hl;
  const parts = header.sizes.map((n) => {
    const b = buf.subarray(o, o + n);
    o += n;
    return b;
  });
  const sha = createHash('sha256');
  for (const b of parts) sha.update(b);
  if (o !== buf.length || sha.digest('hex') !== header.sha256) throw new Error(`${file} is damaged (checksum mismatch)`);
  const copy = (b: Buffer) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  return {
    step: header.step,
    state: header.state,
    file,
    blobs: { params: new Float32Array(copy(parts[0]!)), adamM: new Float64Array(copy(parts[1]!)), adamV: new Float64Array(copy(parts[2]!)) },
  };
}

/** The newest whole checkpoint in `dir`, or null; damaged files are reported through `onSkip` and passed over. */
export async function latestCheckpoint<S>(dir: string, onSkip: (file: string, reason: string) => void = () => undefined): Promise<Checkpoint<S> | null> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  for (const n of names.filter((x) => /^step-\d+\.ckpt$/.test(x)).sort().reverse()) {
    try {
      return await readCheckpoint<S>(join(dir, n));
    } catch (e) {
      onSkip(join(dir, n), (e as Error).message);
    }
  }
  return null;
}
