/**
 * A small ONNX graph writer over the official protobuf definitions (onnx-proto): the project
 * exports its own models with it, and builds test models with the I/O names of real exports.
 *
 * @example
 * const g = new Graph('add');
 * g.input('x', 'float', ['N', 4]);
 * const w = g.initializer('w', Float32Array.from([1, 2, 3, 4]), [4]);
 * g.output(g.node('Add', ['x', w]), 'float', ['N', 4], 'y');
 * writeFileSync('add.onnx', g.toBytes());
 */
import { onnx } from 'onnx-proto';

export type ElemType = 'float' | 'int64' | 'int32' | 'bool';
export type Dim = number | string;
export type AttrValue = number | string | number[] | Float32Array | { float: number } | { floats: number[] } | { tensor: onnx.ITensorProto };

const ELEM: Record<ElemType, onnx.TensorProto.DataType> = {
  float: onnx.TensorProto.DataType.FLOAT,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  bool: onnx.TensorProto.DataType.BOOL,
};

export const OPSET = 17;

function valueInfo(name: string, type: ElemType, dims: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export function tensor(name: string, data: Float32Array | BigInt64Array | Int32Array | number[], dims: number[], type: ElemType = 'float'): onnx.ITensorProto {
  const t: onnx.ITensorProto = { name, dims, dataType: ELEM[type] };
  if (type === 'float') t.rawData = new Uint8Array(Float32Array.from(data as ArrayLike<number>).buffer);
  else if (type === 'int64') {
    const arr = data instanceof BigInt64Array ? data : BigInt64Array.from(Array.from(data as ArrayLike<number>, (v) => BigInt(v)));
    t.rawData = new Uint8Array(arr.buffer);
  } else if (type === 'int32') t.rawData = new Uint8Array(Int32Array.from(data as ArrayLike<number>).buffer);
  else t.rawData = Uint8Array.from(data as ArrayLike<number>);
  return t;
}

function attribute(name: string, v: AttrValue): onnx.IAttributeProto {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: A.INT, i: v };
  if (typeof v === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  if (v instanceof Float32Array) return { name, type: A.FLOATS, floats: Array.from(v) };
  if ('float' in v) return { name, type: A.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: A.FLOATS, floats: v.floats };
  return { name, type: A.TENSOR, t: v.tensor };
}

export class Graph {
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly inits: onnx.ITensorProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  initializer(name: string, data: Float32Array | BigInt64Array | Int32Array | number[], dims: number[], type: ElemType = 'float'): string {
    this.inits.push(tensor(name, data, dims, type));
    return name;
  }

  /** A constant int64 tensor, e.g. a shape for Reshape or axes for Unsqueeze. */
  ints(values: number[], name = `c${this.counter++}`): string {
    return this.initializer(name, values, [values.length], 'int64');
  }

  /** Adds a node and returns the name of its (first) output; `outputs` names them explicitly. */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs?: string[]): string {
    const outs = outputs ?? [`${op.toLowerCase()}_${this.counter++}`];
    this.nodes.push({
      opType: op,
      input: inputs,
      output: outs,
      name: `${op}_${this.nodes.length}`,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs[0];
  }

  /** Marks `value` as a graph output named `name` (an Identity node renames it when needed). */
  output(value: string, type: ElemType, dims: Dim[], name = value): string {
    if (value !== name) this.node('Identity', [value], {}, [name]);
    this.outputs.push(valueInfo(name, type, dims));
    return name;
  }

  toModel(metadata: Record<string, string> = {}): onnx.IModelProto {
    return {
      irVersion: 8,
      producerName: 'squeeze',
      producerVersion: '0.1',
      opsetImport: [{ domain: '', version: OPSET }],
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: { name: this.name, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs },
    };
  }

  toBytes(metadata: Record<string, string> = {}): Buffer {
    return Buffer.from(onnx.ModelProto.encode(onnx.ModelProto.create(this.toModel(metadata))).finish());
  }
}
