/**
 * The worker side of an off-thread onnxruntime session (see session.ts): opens the model named in
 * workerData and answers `run` messages one at a time, so inference never blocks the main event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { WireTensor, WorkerReply, WorkerRequest } from './session';

interface Init {
  model: string | Uint8Array;
  options: ort.InferenceSession.SessionOptions;
}

const port = parentPort!;
const init = workerData as Init;

const toWire = (t: ort.Tensor): WireTensor => ({ type: t.type, data: t.data as WireTensor['data'], dims: [...t.dims] });

async function main(): Promise<void> {
  let session: ort.InferenceSession;
  try {
    session = typeof init.model === 'string' ? await ort.InferenceSession.create(init.model, init.options) : await ort.InferenceSession.create(init.model, init.options);
  } catch (e) {
    port.postMessage({ kind: 'error', id: -1, message: String((e as Error).message ?? e) } satisfies WorkerReply);
    return;
  }
  port.postMessage({
    kind: 'ready',
    inputNames: [...session.inputNames],
    outputNames: [...session.outputNames],
    inputMetadata: [...session.inputMetadata],
    outputMetadata: [...session.outputMetadata],
  } satisfies WorkerReply);
  port.on('message', async (m: WorkerRequest) => {
    if (m.kind === 'release') {
      await session.release().catch(() => undefined);
      port.close();
      return;
    }
    try {
      const feeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(m.feeds)) feeds[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
      const res = await session.run(feeds);
      const outputs: Record<string, WireTensor> = {};
      const transfer: ArrayBuffer[] = [];
      for (const [name, t] of Object.entries(res)) {
        outputs[name] = toWire(t);
        const buf = (t.data as ArrayBufferView).buffer;
        if (buf instanceof ArrayBuffer && !transfer.includes(buf)) transfer.push(buf);
      }
      port.postMessage({ kind: 'result', id: m.id, outputs } satisfies WorkerReply, transfer);
    } catch (e) {
      port.postMessage({ kind: 'error', id: m.id, message: String((e as Error).message ?? e) } satisfies WorkerReply);
    }
  });
}

void main();
