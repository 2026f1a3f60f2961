/**
 * The photo bundle's image tower: the real pretrained SqueezeNet 1.1 (ImageNet, the fp16 ONNX export
 * under models/photo), locked, with a head the project adds around it in ONNX (LiT: the image network
 * is frozen, only the projection and the text tower are trained).
 *
 * Graph (opset 11; the SqueezeNet nodes are copied unchanged, their fp16 weights stay fp16):
 *   pixel_values float32 [N, 3, 224, 224] (BGR 0..255 minus the Caffe mean) -> Cast fp16 -> conv1 ..
 *   fire9 -> F [N, 512, 13, 13] and the class maps C = relu(conv10(F)) [N, 1000, 13, 13], cast to float32.
 *   patch_mask float32 [N, 169] (the 13 x 13 cells of F, 1 keep / 0 drop):
 *     pooled  = sum_j m_j F_j / sum_j m_j                     [N, 512]   (masked mean of fire9)
 *     logits  = sum_j m_j C_j / sum_j m_j                     [N, 1000]  (SqueezeNet's own global pool)
 *     probs   = softmax(logits)
 *     cam_j   = m_j * sum_c probs_c C_cj                      [N, 169]   (class-activation map of the
 *                                                                         predicted classes: the saliency)
 *     feature = [pooled, log(probs + 1e-4)]                   [N, 1512]
 *   Features mode outputs `features` (used by the trainer); the bundle mode standardises the feature with
 *   the trainer's shift and scale, projects it (W, b) and L2-normalises: `image_embeds` [N, E], plus
 *   `patch_attention` = cam (the bundle renormalises it).
 *
 * The 13 x 13 cells of fire9 tile the 224 x 224 input (stride about 17 px), so the grid spans the whole
 * (squashed) image as condense assumes.
 */
import { onnx } from 'onnx-proto';
import { tensor } from '../../models/onnx/graph';

export const PHOTO_VISION_IO = { pixels: 'pixel_values', mask: 'patch_mask', embeds: 'image_embeds', attention: 'patch_attention', features: 'features' } as const;
export const SQUEEZENET = { input: 'data_0', fire9: 'fire9/concat_1', classMaps: 'conv10_2', size: 224, grid: 13, channels: 512, classes: 1000 } as const;
/** SqueezeNet's Caffe preprocessing: BGR, 0..255, minus this per-channel mean, no scaling */
export const SQUEEZENET_MEAN: [number, number, number] = [104, 117, 123];
export const FEATURE_DIM = SQUEEZENET.channels + SQUEEZENET.classes;
const PROB_EPS = 1e-4;
const T = onnx.TensorProto.DataType;

export interface Projection {
  /** standardisation of the feature: (f - shift) * scale, [FEATURE_DIM] each */
  shift: Float32Array;
  scale: Float32Array;
  /** row-major [E, FEATURE_DIM] */
  weight: Float32Array;
  /** [E] */
  bias: Float32Array;
  embed: number;
}

function dims(type: number, shape: (number | string)[]): onnx.ITypeProto {
  return { tensorType: { elemType: type, shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } };
}

/**
 * Builds the tower from the SqueezeNet ONNX bytes: with `projection`, the bundle's vision.onnx; without,
 * the features graph the trainer runs. Throws one line when the bytes are not the expected SqueezeNet.
 */
export function buildSqueezeNetTower(squeezenet: Uint8Array, projection: Projection | null, metadata: Record<string, string> = {}): Buffer {
  const src = onnx.ModelProto.decode(squeezenet);
  const g = src.graph as onnx.GraphProto | null;
  if (!g) throw new Error('squeezenet: the ONNX file has no graph');
  const produced = new Set(g.node.flatMap((n) => n.output ?? []));
  for (const name of [SQUEEZENET.fire9, SQUEEZENET.classMaps]) if (!produced.has(name)) throw new Error(`squeezenet: the ONNX file has no value "${name}" (expected the SqueezeNet 1.1 export)`);
  if (!g.input.some((i) => i.name === SQUEEZENET.input)) throw new Error(`squeezenet: the ONNX file has no input "${SQUEEZENET.input}"`);

  // the body up to the class maps: drop Dropout (identity at inference), the global pool and the softmax
  const nodes: onnx.INodeProto[] = [];
  for (const n of g.node) {
    if (n.opType === 'GlobalAveragePool' || n.opType === 'Softmax') continue;
    if (n.opType === 'Dropout') {
      nodes.push({ opType: 'Identity', input: [n.input![0]], output: [n.output![0]], name: `${n.name || 'dropout'}_identity` });
      continue;
    }
    nodes.push({ ...n, input: (n.input ?? []).map((i) => (i === SQUEEZENET.input ? 'pixels_fp16' : i)) });
  }
  const inits: onnx.ITensorProto[] = [...g.initializer];
  let k = 0;
  const node = (op: string, inputs: string[], attrs: onnx.IAttributeProto[] = []): string => {
    const out = `head_${op.toLowerCase()}_${k++}`;
    nodes.push({ opType: op, input: inputs, output: [out], name: out, attribute: attrs });
    return out;
  };
  const ints = (name: string, values: number[]) => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values });
  const int = (name: string, value: number) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
  const init = (name: string, data: Float32Array | number[], shape: number[], type: 'float' | 'int64' = 'float') => {
    inits.push(tensor(name, data, shape, type));
    return name;
  };

  const G2 = SQUEEZENET.grid * SQUEEZENET.grid;
  nodes.unshift({ opType: 'Cast', input: [PHOTO_VISION_IO.pixels], output: ['pixels_fp16'], name: 'cast_in', attribute: [int('to', T.FLOAT16)] });
  const F = node('Reshape', [node('Cast', [SQUEEZENET.fire9], [int('to', T.FLOAT)]), init('head.f_shape', [0, SQUEEZENET.channels, G2], [3], 'int64')]);
  const C = node('Reshape', [node('Cast', [SQUEEZENET.classMaps], [int('to', T.FLOAT)]), init('head.c_shape', [0, SQUEEZENET.classes, G2], [3], 'int64')]);
  const m = node('Unsqueeze', [PHOTO_VISION_IO.mask], [ints('axes', [1])]);
  const msum = node('Add', [node('ReduceSum', [PHOTO_VISION_IO.mask], [ints('axes', [1]), int('keepdims', 1)]), init('head.mask_eps', [1e-6], [])]);
  const pooled = node('Div', [node('ReduceSum', [node('Mul', [F, m])], [ints('axes', [2]), int('keepdims', 0)]), msum]);
  const logits = node('Div', [node('ReduceSum', [node('Mul', [C, m])], [ints('axes', [2]), int('keepdims', 0)]), msum]);
  const probs = node('Softmax', [logits], [int('axis', 1)]);
  const cam = node('Reshape', [node('MatMul', [node('Unsqueeze', [probs], [ints('axes', [1])]), C]), init('head.cam_shape', [-1, G2], [2], 'int64')]);
  const attention = node('Mul', [cam, PHOTO_VISION_IO.mask]);
  const feature = node('Concat', [pooled, node('Log', [node('Add', [probs, init('head.prob_eps', [PROB_EPS], [])])])], [int('axis', 1)]);

  const outputs: onnx.IValueInfoProto[] = [];
  const output = (value: string, name: string, shape: (number | string)[]) => {
    nodes.push({ opType: 'Identity', input: [value], output: [name], name: `out_${name}` });
    outputs.push({ name, type: dims(T.FLOAT, shape) });
  };
  if (projection) {
    const { shift, scale, weight, bias, embed } = projection;
    if (shift.length !== FEATURE_DIM || scale.length !== FEATURE_DIM || weight.length !== embed * FEATURE_DIM || bias.length !== embed) {
      throw new Error('squeezenet: projection sizes do not match the feature');
    }
    const wt = new Float32Array(FEATURE_DIM * embed);
    for (let e = 0; e < embed; e++) for (let d = 0; d < FEATURE_DIM; d++) wt[d * embed + e] = weight[e * FEATURE_DIM + d];
    const standard = node('Mul', [node('Sub', [feature, init('head.shift', shift, [FEATURE_DIM])]), init('head.scale', scale, [FEATURE_DIM])]);
    const raw = node('Add', [node('MatMul', [standard, init('head.proj_t', wt, [FEATURE_DIM, embed])]), init('head.proj_b', bias, [embed])]);
    const norm = node('Add', [node('Sqrt', [node('ReduceSum', [node('Mul', [raw, raw])], [ints('axes', [1]), int('keepdims', 1)])]), init('head.norm_eps', [1e-12], [])]);
    output(node('Div', [raw, norm]), PHOTO_VISION_IO.embeds, ['N', embed]);
    output(attention, PHOTO_VISION_IO.attention, ['N', G2]);
  } else {
    output(feature, PHOTO_VISION_IO.features, ['N', FEATURE_DIM]);
    output(attention, PHOTO_VISION_IO.attention, ['N', G2]);
  }

  const model: onnx.IModelProto = {
    irVersion: 7,
    producerName: 'squeeze',
    producerVersion: '0.1',
    opsetImport: [{ domain: '', version: 11 }],
    metadataProps: Object.entries({ model: 'squeeze photo tower (SqueezeNet 1.1, locked)', ...metadata }).map(([key, value]) => ({ key, value })),
    graph: {
      name: 'squeeze_photo_vision',
      node: nodes,
      initializer: inits,
      input: [
        { name: PHOTO_VISION_IO.pixels, type: dims(T.FLOAT, ['N', 3, SQUEEZENET.size, SQUEEZENET.size]) },
        { name: PHOTO_VISION_IO.mask, type: dims(T.FLOAT, ['N', G2]) },
      ],
      output: outputs,
    },
  };
  return Buffer.from(onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish());
}
