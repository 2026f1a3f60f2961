/**
 * The worker thread of parallel.ts (WorkerShards): serves crawl parts (train.ts crawlPart: generation,
 * decoding, stems) and stem, forward and backward requests for one pool.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { serveShards, type ShardReply, type ShardRequest, type ShardWorkerData } from './parallel';
import { crawlPart } from './train';

if (!parentPort) throw new Error('shard-worker.js runs as a worker thread of parallel.ts');
const port = parentPort;
const data = workerData as ShardWorkerData;
const post = (m: ShardReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
const handle = serveShards(data, post);

async function crawl(req: Extract<ShardRequest, { op: 'crawl' }>): Promise<void> {
  try {
    const part = await crawlPart(data.config, req.n, req.seed, (done) => post({ id: req.id, progress: done }));
    const per = part.samples[0]?.pixels.length ?? 0;
    const pixels = new Float32Array(part.samples.length * per);
    part.samples.forEach((s, i) => pixels.set(s.pixels, i * per));
    const samples = part.samples.map(({ pixels: _, ...meta }) => meta);
    post({ id: req.id, out: [pixels, part.X, part.prior], samples }, [pixels.buffer, part.X.buffer as ArrayBuffer, part.prior.buffer as ArrayBuffer]);
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    post({ id: req.id, error: err.message, stack: err.stack });
  }
}

port.on('message', (req: ShardRequest) => {
  if (req.op === 'crawl') void crawl(req);
  else handle(req);
});
