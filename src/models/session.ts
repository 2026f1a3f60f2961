/**
 * Small onnxruntime-node helpers: opening a session with the thread settings of the config, and
 * checking a model's input/output names and shapes with one-line errors that name the file.
 */
import * as ort from 'onnxruntime-node';

export interface SessionOptions {
  /** intra-op threads (the operators' own parallelism); inter-op is 1 because execution is sequential */
  threads: number;
}

/** Opens an ONNX model from a path or its bytes on the CPU, with all graph optimisations on. */
export async function openSession(pathOrBytes: string | Uint8Array, opts: SessionOptions): Promise<ort.InferenceSession> {
  const threads = Math.max(1, Math.floor(opts.threads || 1));
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // errors only: onnxruntime's warnings (shape-merge fallbacks, unused initialisers) are noise for users
    logSeverityLevel: 3,
  };
  return typeof pathOrBytes === 'string' ? ort.InferenceSession.create(pathOrBytes, options) : ort.InferenceSession.create(pathOrBytes, options);
}

const list = (names: readonly string[]) => (names.length ? names.map((n) => `"${n}"`).join(', ') : 'none');

/**
 * Throws `where: expected input "pixel_values", the model has "x"` when a named input or output is
 * missing from the session.
 */
export function checkIo(session: ort.InferenceSession, io: { inputs: string[]; outputs: string[] }, where: string): void {
  for (const name of io.inputs) {
    if (!session.inputNames.includes(name)) throw new Error(`${where}: expected input "${name}", the model has ${list(session.inputNames)}`);
  }
  for (const name of io.outputs) {
    if (!session.outputNames.includes(name)) throw new Error(`${where}: expected output "${name}", the model has ${list(session.outputNames)}`);
  }
}

/** The declared shape of an input or output (numbers for static dims, strings for symbolic ones), or null when unknown. */
export function declaredShape(session: ort.InferenceSession, name: string, kind: 'input' | 'output'): { shape: ReadonlyArray<number | string>; type: string } | null {
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
  session: ort.InferenceSession,
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
