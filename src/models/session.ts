/**
 * Small onnxruntime-node helpers: opening a session with the thread settings of the config, and
 * checking a model's input/output names and shapes with one-line errors that name the file.
 *
 * onnxruntime-node runs `session.run` synchronously on the calling thread (its promise only defers the
 * call with setImmediate), so a session on the main thread stalls decoding, hashing and Parquet encoding
 * for the length of every model call. `offThread: true` opens the session in a worker thread instead
 * (session-worker.ts): feeds are copied to it, outputs transferred back, and the main thread keeps
 * working while the model runs. Calls on one session still run one at a time, in order.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

export interface SessionOptions {
  /** intra-op threads (the operators' own parallelism); inter-op is 1 because execution is sequential */
  threads: number;
  /** run the session in a worker thread (default false; the curator's bundles turn it on) */
  offThread?: boolean;
}

/** What the bundle code needs of a session; an `ort.InferenceSession` is one, so is an off-thread session. */
export interface ModelSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly ort.InferenceSession.ValueMetadata[];
  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>;
  release(): Promise<void>;
}

/** A tensor as it crosses the thread boundary. */
export interface WireTensor {
  type: string;
  data: Float32Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Float64Array;
  dims: number[];
}

export type WorkerRequest = { kind: 'run'; id: number; feeds: Record<string, WireTensor> } | { kind: 'release' };
export type WorkerReply =
  | { kind: 'ready'; inputNames: string[]; outputNames: string[]; inputMetadata: ort.InferenceSession.ValueMetadata[]; outputMetadata: ort.InferenceSession.ValueMetadata[] }
  | { kind: 'result'; id: number; outputs: Record<string, WireTensor> }
  | { kind: 'error'; id: number; message: string };

const WORKER_SCRIPT = join(__dirname, 'session-worker.js');

/** Whether sessions can run off-thread here (the compiled worker script exists: not under a TypeScript loader). */
export const offThreadAvailable = (): boolean => existsSync(WORKER_SCRIPT);

/** Opens an ONNX model from a path or its bytes on the CPU, with all graph optimisations on. */
export async function openSession(pathOrBytes: string | Uint8Array, opts: SessionOptions): Promise<ModelSession> {
  const options = sessionOptions(opts);
  if (opts.offThread && offThreadAvailable()) return OffThreadSession.open(pathOrBytes, options);
  return typeof pathOrBytes === 'string' ? ort.InferenceSession.create(pathOrBytes, options) : ort.InferenceSession.create(pathOrBytes, options);
}

function sessionOptions(opts: SessionOptions): ort.InferenceSession.SessionOptions {
  const threads = Math.max(1, Math.floor(opts.threads || 1));
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // errors only: onnxruntime's warnings (shape-merge fallbacks, unused initialisers) are noise for users
    logSeverityLevel: 3,
    // idle intra-op threads sleep instead of spinning: on a machine whose cores also decode images,
    // spinning burns the CPU the decoders need
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

/**
 * A session living in a worker thread. The worker is unreferenced while no call is pending, so a
 * forgotten release never keeps the process alive; if the worker dies, pending and later calls fail
 * with one line instead of hanging.
 */
class OffThreadSession implements ModelSession {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (r: Record<string, ort.Tensor>) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly inputNames: string[],
    readonly outputNames: string[],
    readonly inputMetadata: ort.InferenceSession.ValueMetadata[],
    readonly outputMetadata: ort.InferenceSession.ValueMetadata[],
  ) {
    worker.on('message', (m: WorkerReply) => {
      if (m.kind === 'ready') return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.kind === 'error') p.reject(new Error(m.message));
      else {
        const out: Record<string, ort.Tensor> = {};
        for (const [name, t] of Object.entries(m.outputs)) out[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
        p.resolve(out);
      }
    });
    const die = (e: Error) => {
      this.dead = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', (e) => die(new Error(`model worker failed: ${e.message}`)));
    worker.on('exit', () => die(this.dead ?? new Error('model worker has exited')));
    worker.unref();
  }

  static open(model: string | Uint8Array, options: ort.InferenceSession.SessionOptions): Promise<OffThreadSession> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_SCRIPT, { workerData: { model, options } });
      const fail = (e: Error) => {
        void worker.terminate();
        reject(e);
      };
      worker.once('error', fail);
      worker.once('message', (m: WorkerReply) => {
        worker.off('error', fail);
        if (m.kind === 'ready') resolve(new OffThreadSession(worker, m.inputNames, m.outputNames, m.inputMetadata, m.outputMetadata));
        else fail(new Error(m.kind === 'error' ? m.message : 'model worker sent an unexpected first message'));
      });
    });
  }

  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    const wire: Record<string, WireTensor> = {};
    for (const [name, t] of Object.entries(feeds)) wire[name] = { type: t.type, data: t.data as WireTensor['data'], dims: [...t.dims] };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      // feeds are copied (structured clone): callers may reuse their arrays once run resolves
      this.worker.postMessage({ kind: 'run', id, feeds: wire } satisfies WorkerRequest);
    });
  }

  async release(): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
    this.worker.ref();
    this.worker.postMessage({ kind: 'release' } satisfies WorkerRequest);
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }
}

const list = (names: readonly string[]) => (names.length ? names.map((n) => `"${n}"`).join(', ') : 'none');

/**
 * Throws `where: expected input "pixel_values", the model has "x"` when a named input or output is
 * missing from the session.
 */
export function checkIo(session: ModelSession, io: { inputs: string[]; outputs: string[] }, where: string): void {
  for (const name of io.inputs) {
    if (!session.inputNames.includes(name)) throw new Error(`${where}: expected input "${name}", the model has ${list(session.inputNames)}`);
  }
  for (const name of io.outputs) {
    if (!session.outputNames.includes(name)) throw new Error(`${where}: expected output "${name}", the model has ${list(session.outputNames)}`);
  }
}

/** The declared shape of an input or output (numbers for static dims, strings for symbolic ones), or null when unknown. */
export function declaredShape(session: ModelSession, name: string, kind: 'input' | 'output'): { shape: ReadonlyArray<number | string>; type: string } | null {
  const metas = kind === 'input' ? session.inputMetadata : session.outputMetadata;
  const m = metas?.find((v) => v.name === name);
  if (!m || !m.isTensor) return null;
  return { shape: m.shape, type: m.type };
}

/**
 * Checks the rank, element type and the static dims that are given (null = any) of one input or
 * output, when the model declares them. Throws e.g.
 * `vision.onnx: input "pixel_values" must have rank 4 [N, 3, 224, 224], the model has rank 3 [N, 3, 224]`.
 */
export function checkShape(
  session: ModelSession,
  name: string,
  kind: 'input' | 'output',
  expect: { dims: (number | null)[]; types?: string[]; show?: string },
  where: string,
): void {
  const d = declaredShape(session, name, kind);
  if (!d) return;
  const show = (s: ReadonlyArray<number | string>) => `[${s.map((x) => (typeof x === 'number' && x >= 0 ? String(x) : typeof x === 'string' && x ? x : '?')).join(', ')}]`;
  const wanted = expect.show ?? `[${expect.dims.map((x) => (x === null ? '?' : String(x))).join(', ')}]`;
  if (expect.types && d.type && !expect.types.includes(d.type)) {
    throw new Error(`${where}: ${kind} "${name}" must be ${expect.types.join(' or ')}, the model has ${d.type}`);
  }
  if (d.shape.length === 0) return;
  if (d.shape.length !== expect.dims.length) {
    throw new Error(`${where}: ${kind} "${name}" must have rank ${expect.dims.length} ${wanted}, the model has rank ${d.shape.length} ${show(d.shape)}`);
  }
  expect.dims.forEach((want, i) => {
    const got = d.shape[i];
    if (want !== null && typeof got === 'number' && got > 0 && got !== want) {
      throw new Error(`${where}: ${kind} "${name}" must be ${wanted}, the model has ${show(d.shape)} (dim ${i} is ${got}, expected ${want})`);
    }
  });
}
