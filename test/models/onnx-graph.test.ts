import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../src/models/onnx/graph';

test('a graph written with the project writer runs in onnxruntime-node with the expected values', async () => {
  const g = new Graph('tiny');
  g.input('x', 'float', ['N', 3]);
  const w = g.initializer('w', Float32Array.from([1, 0, 2, 0, 1, 3]), [3, 2]);
  const y = g.node('MatMul', ['x', w]);
  const s = g.node('Softmax', [y], { axis: -1 });
  g.output(s, 'float', ['N', 2], 'probs');
  g.output(y, 'float', ['N', 2], 'logits');
  const session = await ort.InferenceSession.create(g.toBytes({ purpose: 'test' }));
  assert.deepEqual(session.inputNames, ['x']);
  assert.deepEqual(session.outputNames, ['probs', 'logits']);
  const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 0, 0, 0]), [2, 3]) });
  const logits = Array.from(out.logits.data as Float32Array);
  assert.deepEqual(logits, [1 * 1 + 2 * 2 + 3 * 1, 3 * 3, 0, 0]);
  const p = out.probs.data as Float32Array;
  assert.ok(Math.abs(p[0] - 1 / (1 + Math.exp(1))) < 1e-6);
  assert.ok(Math.abs(p[2] - 0.5) < 1e-6);
});
