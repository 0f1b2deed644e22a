"""A float ``.tflite`` file -> an equivalent tf_keras functional model (NHWC, batch dimension free).

The flatbuffer is read with TensorFlow's own schema bindings (``tensorflow.lite.tools.flatbuffer_utils``);
constant tensors (and DEQUANTIZE of constant float16/int8 weights) become the Keras layers' weights.
Each operator maps to standard Keras layers (:class:`~k210tool.model.importers.build.KerasBuilder`);
fused activations become a separate activation layer, as a Keras model would have them. PReLU that an
exporter spelled out as ``relu(x) + c * (x - |x|)`` (sirius-ai's MobileFaceNet) or ``relu(x) + c * relu(-x)``
becomes a PReLU layer again, so the KPU rewrite sees the same network as the ``.h5``. Quantized models are
refused: nncase quantizes the float model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.errors import ModelError
from k210tool.model.importers.build import KerasBuilder, f32

# TFLite TensorType values that k210tool reads as constants (schema.fbs)
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
           9: np.int8, 10: np.float64}
_QUANTIZED = {3, 7, 9}  # uint8, int16, int8 activations
_FUSED = {0: "linear", 1: "relu", 3: "relu6", 4: "tanh"}  # ActivationFunctionType
_PADDING = {0: "same", 1: "valid"}
_TF_OP_SUFFIXES = {"BiasAdd", "Conv2D", "Relu", "Relu6", "FusedBatchNorm", "FusedBatchNormV3", "MatMul",
                   "depthwise", "Add", "AddV2", "add", "Mul", "mul", "Sub", "sub", "Reshape", "Mean", "Pad",
                   "MaxPool", "AvgPool", "Sigmoid", "Tanh", "Prelu", "Abs", "LeakyRelu", "concat", "Squeeze",
                   "Softmax", "Identity", "Neg"}


@dataclass
class Op:
    kind: str  # builtin operator name, e.g. CONV_2D
    inputs: list[int]  # tensor indices (-1: optional input left out)
    outputs: list[int]
    options: Any = None


@dataclass
class TfliteGraph:
    names: list[str]
    shapes: list[tuple[int, ...]]
    types: list[int]
    consts: dict[int, np.ndarray]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    values: dict[int, Any] = field(default_factory=dict)  # tensor -> Keras tensor

    def const(self, t: int, op: Op) -> np.ndarray:
        if t not in self.consts:
            raise ModelError(f"TFLite op {op.kind} ({self.layer_name(op)}): input {self.names[t]!r} must be a "
                             "constant (weights computed at run time are not supported)")
        return self.consts[t]

    def value(self, t: int) -> Any:
        if t not in self.values:
            raise ModelError(f"TFLite tensor {self.names[t]!r} is used before it is computed")
        return self.values[t]

    def layer_name(self, op: Op) -> str:
        """A readable layer name from the op's output tensor ("model/conv1/BiasAdd;..." -> "conv1")."""
        parts = [p for p in self.names[op.outputs[0]].split(";")[0].split(":")[0].split("/") if p]
        parts = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
        if len(parts) >= 2 and parts[-1] in _TF_OP_SUFFIXES:
            parts = parts[:-1]
        if len(parts) >= 2:
            parts = parts[1:]
        return "_".join(parts) or op.kind.lower()


def import_tflite(data: bytes, name: str = "tflite_model") -> Any:
    """The tf_keras model computing what the float TFLite flatbuffer ``data`` computes."""
    g = read_tflite(data)
    if len(g.inputs) != 1:
        raise ModelError(f"the TFLite model has {len(g.inputs)} inputs; k210tool converts models with one image input")
    if len(g.outputs) != 1:
        raise ModelError(f"the TFLite model has {len(g.outputs)} outputs; k210tool converts models with one output",
                         "export the model with the embedding as its only output")
    shape = g.shapes[g.inputs[0]]
    if len(shape) != 4:
        raise ModelError(f"the TFLite model's input shape {list(shape)} is not an image (N, H, W, C)")
    b = KerasBuilder()
    inp = b.input(tuple(int(d) for d in shape[1:]), g.names[g.inputs[0]] or "input")  # type: ignore[arg-type]
    g.values[g.inputs[0]] = inp
    for op in g.ops:
        handler = _HANDLERS.get(op.kind)
        if handler is None:
            raise ModelError(f"TFLite op {op.kind} ({g.layer_name(op)}) is not supported by k210tool's importer",
                             "replace it with standard layers (Conv2D, DepthwiseConv2D, PReLU, Add, Dense, pooling)")
        g.values[op.outputs[0]] = handler(b, g, op)
    return b.model(inp, g.value(g.outputs[0]), name)


# ---------------------------------------------------------------------------------------------------
# reading the flatbuffer
# ---------------------------------------------------------------------------------------------------
def read_tflite(data: bytes) -> TfliteGraph:
    """Subgraph 0 as plain data; constants decoded, DEQUANTIZE of constants folded, PReLU patterns fused."""
    from k210tool.tfutil import import_tf

    import_tf()
    from tensorflow.lite.tools import flatbuffer_utils as fu

    try:
        model = fu.read_model_from_bytearray(bytearray(data))
    except Exception:  # flatbuffers raises IndexError, struct.error...
        raise ModelError("not a valid TFLite flatbuffer (truncated or corrupt)",
                         "re-export or re-download the model") from None
    if not model.subgraphs:
        raise ModelError("the TFLite file has no subgraph")
    sg = model.subgraphs[0]
    tensors = sg.tensors or []
    names = [(t.name or b"").decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")
             for t in tensors]
    shapes = [tuple(int(d) for d in (t.shape if t.shape is not None else ())) for t in tensors]
    types = [int(t.type) for t in tensors]
    consts = {i: c for i, t in enumerate(tensors) if (c := _constant(model, data, t, shapes[i])) is not None}
    ops = [Op(fu.opcode_to_name(model, op.opcodeIndex), [int(i) for i in (op.inputs if op.inputs is not None else [])],
              [int(i) for i in op.outputs], op.builtinOptions) for op in (sg.operators or [])]
    g = TfliteGraph(names, shapes, types, consts, ops, [int(i) for i in sg.inputs], [int(i) for i in sg.outputs])
    _fold_dequantize(g)
    _refuse_quantized(g)
    fuse_prelu(g)
    return g


def _constant(model: Any, data: bytes, t: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    buf = model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(model.buffers) else None
    if buf is None:
        return None
    raw: bytes | None = None
    if buf.data is not None and len(buf.data):
        raw = bytes(bytearray(buf.data))
    elif getattr(buf, "offset", 0) and buf.offset > 1:  # weights stored after the flatbuffer (files > 2 GB)
        raw = data[buf.offset:buf.offset + buf.size]
    if raw is None:
        return None
    dtype = _DTYPES.get(int(t.type))
    if dtype is None:
        raise ModelError(f"TFLite constant {t.name!r} has a tensor type ({t.type}) k210tool cannot read")
    try:
        value = np.frombuffer(raw, dtype=dtype).reshape(shape)
    except ValueError:
        raise ModelError(f"TFLite constant {t.name!r}: {len(raw)} bytes do not hold shape {list(shape)} "
                         "(a corrupt file?)") from None
    q = t.quantization
    if dtype in (np.int8, np.uint8, np.int16) and q is not None and q.scale is not None and len(q.scale):
        value = _dequantize(value, q)  # int8 weights of a "dynamic range" model, float activations
    return value


def _dequantize(value: np.ndarray, q: Any) -> np.ndarray:
    scale = f32(q.scale)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0], np.float32)
    if scale.size > 1:  # per-channel along quantizedDimension
        shape = [1] * value.ndim
        shape[int(q.quantizedDimension)] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
    return f32((value.astype(np.float32) - zero) * scale)


def _fold_dequantize(g: TfliteGraph) -> None:
    """DEQUANTIZE of a constant (float16 or int8 weights) is a float constant."""
    kept = []
    for op in g.ops:
        if op.kind == "DEQUANTIZE" and op.inputs[0] in g.consts:
            g.consts[op.outputs[0]] = f32(g.consts[op.inputs[0]])
        else:
            kept.append(op)
    g.ops = kept


def _refuse_quantized(g: TfliteGraph) -> None:
    for op in g.ops:
        for t in op.inputs + op.outputs:
            if t >= 0 and t not in g.consts and g.types[t] in _QUANTIZED:
                raise ModelError(f"the TFLite model is quantized ({_type_name(g.types[t])} tensor {g.names[t]!r} "
                                 f"in op {op.kind}): a float model is needed",
                                 "give k210tool the float .tflite (or the Keras model); nncase quantizes it itself")


def _type_name(t: int) -> str:
    dtype = _DTYPES.get(t)
    return np.dtype(dtype).name if dtype is not None else f"type {t}"


# ---------------------------------------------------------------------------------------------------
# PReLU spelled out with elementwise ops
# ---------------------------------------------------------------------------------------------------
def fuse_prelu(g: TfliteGraph) -> int:
    """Replace ``relu(x) + c * (x - abs(x))`` (slope 2c) and ``relu(x) + c * relu(-x)`` (slope -c) by one
    PRELU op each; every intermediate must feed nothing else. Returns how many were fused."""
    producer = {t: op for op in g.ops for t in op.outputs}
    uses: dict[int, int] = {}
    for op in g.ops:
        for t in op.inputs:
            uses[t] = uses.get(t, 0) + 1
    for t in g.outputs:
        uses[t] = uses.get(t, 0) + 1
    dead: set[int] = set()
    fused = 0
    for op in g.ops:
        if op.kind != "ADD" or _fused(op) != "linear" or len(op.inputs) != 2:
            continue
        for relu_t, mul_t in (op.inputs, op.inputs[::-1]):
            match = _prelu_match(g, producer, uses, relu_t, mul_t)
            if match is not None:
                x, alpha, gone = match
                alpha_t = len(g.names) + fused  # a new constant tensor
                g.consts[alpha_t] = alpha
                op.kind, op.inputs, op.options = "PRELU", [x, alpha_t], None
                dead |= {id(o) for o in gone}
                fused += 1
                break
    g.ops = [o for o in g.ops if id(o) not in dead]
    return fused


def _prelu_match(g: TfliteGraph, producer: dict[int, Op], uses: dict[int, int], relu_t: int,
                 mul_t: int) -> tuple[int, np.ndarray, list[Op]] | None:
    relu, mul = producer.get(relu_t), producer.get(mul_t)
    if relu is None or mul is None or relu.kind != "RELU" or mul.kind != "MUL" or _fused(mul) != "linear":
        return None
    x = relu.inputs[0]
    consts = [t for t in mul.inputs if t in g.consts]
    others = [t for t in mul.inputs if t not in g.consts]
    if len(consts) != 1 or len(others) != 1:
        return None
    c, inner_t = g.consts[consts[0]], others[0]
    inner = producer.get(inner_t)
    if inner is None:
        return None
    chain: list[Op] = [relu, mul, inner]
    if inner.kind == "SUB" and _fused(inner) == "linear" and inner.inputs[0] == x:  # c * (x - |x|)
        absop = producer.get(inner.inputs[1])
        if absop is None or absop.kind != "ABS" or absop.inputs[0] != x:
            return None
        chain.append(absop)
        alpha = 2.0 * f32(c)
    elif inner.kind == "RELU":  # c * relu(-x)
        neg = producer.get(inner.inputs[0])
        if neg is None or neg.kind != "NEG" or neg.inputs[0] != x:
            return None
        chain.append(neg)
        alpha = -f32(c)
    else:
        return None
    if any(uses.get(o.outputs[0], 0) != 1 for o in chain):
        return None
    return x, alpha, chain


# ---------------------------------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------------------------------
def _fused(op: Op) -> str:
    code = int(getattr(op.options, "fusedActivationFunction", 0) or 0)
    if code not in _FUSED:
        raise ModelError(f"TFLite op {op.kind}: fused activation {code} is not supported")
    return _FUSED[code]


def _with_fused(b: KerasBuilder, g: TfliteGraph, op: Op, y: Any) -> Any:
    kind = _fused(op)
    return y if kind == "linear" else b.activation(y, kind, g.layer_name(op) + "_" + kind)


def _bias(g: TfliteGraph, op: Op) -> np.ndarray | None:
    return f32(g.const(op.inputs[2], op)) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None


def _conv(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    x, o = g.value(op.inputs[0]), op.options
    w = f32(g.const(op.inputs[1], op))  # (out, kh, kw, in / groups)
    cin, cout = int(x.shape[-1]), w.shape[0]
    strides, dilation = (o.strideH, o.strideW), (o.dilationHFactor or 1, o.dilationWFactor or 1)
    name = g.layer_name(op)
    if w.shape[3] == cin:
        y = b.conv2d(x, w.transpose(1, 2, 3, 0), _bias(g, op), strides, _PADDING[o.padding], dilation, name)
    elif w.shape[3] == 1 and cout % cin == 0:  # one input channel per group: a depthwise conv
        kernel = w.transpose(1, 2, 0, 3).reshape(w.shape[1], w.shape[2], cin, cout // cin)
        y = b.depthwise(x, kernel, _bias(g, op), strides, _PADDING[o.padding], dilation, name)
    else:
        raise ModelError(f"TFLite op CONV_2D ({name}): grouped convolution ({cin // w.shape[3]} groups) is not "
                         "supported", "use depthwise or ordinary convolutions")
    return _with_fused(b, g, op, y)


def _depthwise(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    x, o = g.value(op.inputs[0]), op.options
    w = f32(g.const(op.inputs[1], op))  # (1, kh, kw, in * multiplier)
    cin = int(x.shape[-1])
    kernel = w.reshape(w.shape[1], w.shape[2], cin, w.shape[3] // cin)
    y = b.depthwise(x, kernel, _bias(g, op), (o.strideH, o.strideW), _PADDING[o.padding],
                    (o.dilationHFactor or 1, o.dilationWFactor or 1), g.layer_name(op))
    return _with_fused(b, g, op, y)


def _fully_connected(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    x, o = g.value(op.inputs[0]), op.options
    if o is not None and int(getattr(o, "weightsFormat", 0) or 0) != 0:
        raise ModelError(f"TFLite op FULLY_CONNECTED ({g.layer_name(op)}): shuffled weights are not supported")
    w = f32(g.const(op.inputs[1], op))  # (units, in)
    if len(x.shape) > 2:  # TFLite flattens every batch row; NHWC order is Keras's Flatten order
        x = b.flatten(x, g.layer_name(op) + "_flatten")
    if int(x.shape[-1]) != w.shape[1]:
        raise ModelError(f"TFLite op FULLY_CONNECTED ({g.layer_name(op)}): input of {x.shape[-1]} values, "
                         f"weights for {w.shape[1]}")
    return _with_fused(b, g, op, b.dense(x, w.T, _bias(g, op), g.layer_name(op)))


def _elementwise(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    kind = {"ADD": "add", "SUB": "sub", "MUL": "mul", "DIV": "div", "MAXIMUM": "max", "MINIMUM": "min"}[op.kind]
    a, c = op.inputs
    name = g.layer_name(op)
    if a not in g.consts and c not in g.consts:
        if kind == "div":
            raise ModelError(f"TFLite op DIV ({name}) of two computed tensors is not supported")
        y = b.merge(kind, [g.value(a), g.value(c)], name)
    else:
        y = _with_constant(b, g, op, kind, name)
    return _with_fused(b, g, op, y)


def _with_constant(b: KerasBuilder, g: TfliteGraph, op: Op, kind: str, name: str) -> Any:
    a, c = op.inputs
    const_first = a in g.consts
    x = g.value(c if const_first else a)
    y = b.with_constant(x, kind, _channel_vector(f32(g.consts[a if const_first else c]), x, op, g), const_first, name)
    if y is None:
        raise ModelError(f"TFLite op {op.kind} ({name}) with a constant operand is not supported")
    return y


def _channel_vector(k: np.ndarray, x: Any, op: Op, g: TfliteGraph) -> np.ndarray:
    """A constant that broadcasts along the last axis only: one value per channel."""
    c = int(x.shape[-1])
    if k.size == 1:
        return np.full(c, k.reshape(()), np.float32)
    if k.shape[-1] == c and k.size == c:
        return k.reshape(c)
    raise ModelError(f"TFLite op {op.kind} ({g.layer_name(op)}): constant of shape {list(k.shape)} is not one "
                     f"value per channel of {list(x.shape)}")


def _prelu(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    return b.prelu(g.value(op.inputs[0]), f32(g.const(op.inputs[1], op)), g.layer_name(op))


def _activation(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    kind = {"RELU": "relu", "RELU6": "relu6", "LEAKY_RELU": "leaky_relu", "LOGISTIC": "sigmoid",
            "TANH": "tanh"}[op.kind]
    alpha = float(getattr(op.options, "alpha", 0.2) or 0.0)
    return b.activation(g.value(op.inputs[0]), kind, g.layer_name(op), alpha)


def _softmax(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    beta = float(getattr(op.options, "beta", 1.0))
    if beta != 1.0:
        raise ModelError(f"TFLite op SOFTMAX ({g.layer_name(op)}) with beta {beta} is not supported")
    return b.activation(g.value(op.inputs[0]), "softmax", g.layer_name(op))


def _pad(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    x = g.value(op.inputs[0])
    pads = g.const(op.inputs[1], op).astype(int)
    if op.kind == "PADV2" and len(op.inputs) > 2 and float(g.const(op.inputs[2], op).reshape(())) != 0.0:
        raise ModelError(f"TFLite op PADV2 ({g.layer_name(op)}) pads with a non-zero value")
    if pads.shape != (4, 2) or pads[0].any() or pads[3].any():
        raise ModelError(f"TFLite op {op.kind} ({g.layer_name(op)}): paddings {pads.tolist()} are not "
                         "spatial paddings of an NHWC image")
    return b.zero_pad(x, ((pads[1, 0], pads[1, 1]), (pads[2, 0], pads[2, 1])), g.layer_name(op))


def _pool(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    o = op.options
    kind = "max" if op.kind == "MAX_POOL_2D" else "avg"
    y = b.pool(g.value(op.inputs[0]), kind, (o.filterHeight, o.filterWidth), (o.strideH, o.strideW),
               _PADDING[o.padding], g.layer_name(op))
    return _with_fused(b, g, op, y)


def _reduce(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    x = g.value(op.inputs[0])
    axes = sorted(int(a) % len(x.shape) for a in np.atleast_1d(g.const(op.inputs[1], op)))
    if len(x.shape) != 4 or axes != [1, 2]:
        raise ModelError(f"TFLite op {op.kind} ({g.layer_name(op)}) over axes {axes} is not supported",
                         "only a global pooling over height and width (axes 1, 2) is")
    keep = bool(getattr(op.options, "keepDims", False))
    return b.global_pool(x, "max" if op.kind == "REDUCE_MAX" else "avg", keep, g.layer_name(op))


def _reshape(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    x = g.value(op.inputs[0])
    src, out = g.shapes[op.inputs[0]], g.shapes[op.outputs[0]]
    if not out or not src or out[0] != src[0] or int(np.prod(out[1:])) != int(np.prod(src[1:])):
        raise ModelError(f"TFLite op {op.kind} ({g.layer_name(op)}) from {list(src)} to {list(out)} mixes the "
                         "batch dimension with the others")
    if len(out) == 2 and len(x.shape) > 2:
        return b.flatten(x, g.layer_name(op))
    return b.reshape(x, tuple(int(d) for d in out[1:]), g.layer_name(op))


def _concat(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    y = b.concat([g.value(t) for t in op.inputs], int(op.options.axis), g.layer_name(op))
    return _with_fused(b, g, op, y)


def _l2norm(b: KerasBuilder, g: TfliteGraph, op: Op) -> Any:
    return _with_fused(b, g, op, b.l2_normalize(g.value(op.inputs[0]), g.layer_name(op)))


Handler = Callable[[KerasBuilder, TfliteGraph, Op], Any]
_HANDLERS: dict[str, Handler] = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "FULLY_CONNECTED": _fully_connected,
    **dict.fromkeys(("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"), _elementwise),
    "PRELU": _prelu,
    **dict.fromkeys(("RELU", "RELU6", "LEAKY_RELU", "LOGISTIC", "TANH"), _activation),
    "SOFTMAX": _softmax,
    "PAD": _pad,
    "PADV2": _pad,
    "MAX_POOL_2D": _pool,
    "AVERAGE_POOL_2D": _pool,
    "MEAN": _reduce,
    "REDUCE_MAX": _reduce,
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "CONCATENATION": _concat,
    "L2_NORMALIZATION": _l2norm,
}
