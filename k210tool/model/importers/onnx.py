"""A float ``.onnx`` file -> an equivalent tf_keras functional model (NHWC, batch dimension free).

ONNX images are NCHW; Keras is NHWC. Every 4-D value is kept as an NHWC Keras tensor and remembered as
"logically NCHW", so Conv/Pool/BatchNormalization/PRelu/Concat map to channels-last layers with their
weights transposed, and a Transpose that only changes the layout costs nothing. A Flatten of an NCHW map
with more than one pixel reads channels first: when its only readers are Gemm/MatMul the Dense weights'
rows are permuted to NHWC order instead (exact, no extra op), otherwise a Permute layer restores ONNX's
order. Shape arithmetic on constants (``x.view(x.size(0), -1)`` exported as Shape/Gather/Concat/Reshape)
is folded with NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.errors import InputError, ModelError
from k210tool.model.importers.build import KerasBuilder, Pads, f32

PASS_THROUGH = {"Dropout", "Identity"}


@dataclass
class Val:
    """A computed tensor: ``t`` (Keras) is NHWC when ``nchw``; ``perm`` maps a flat Keras index to ONNX's."""

    t: Any
    nchw: bool = False
    perm: np.ndarray | None = None

    def shape(self) -> tuple[int, ...]:
        """The ONNX (logical) shape, batch 1."""
        dims = [1] + [int(d) for d in self.t.shape[1:]]
        return (dims[0], dims[3], dims[1], dims[2]) if self.nchw else tuple(dims)


@dataclass
class OnnxGraph:
    nodes: list[Any]
    consts: dict[str, np.ndarray]
    values: dict[str, Val] = field(default_factory=dict)
    readers: dict[str, list[Any]] = field(default_factory=dict)

    def const(self, name: str, node: Any) -> np.ndarray:
        if name not in self.consts:
            raise ModelError(f"ONNX op {node.op_type} ({label(node)}): input {name!r} must be a constant "
                             "(weights computed at run time are not supported)")
        return self.consts[name]

    def value(self, name: str, node: Any) -> Val:
        if name not in self.values:
            raise ModelError(f"ONNX op {node.op_type} ({label(node)}): input {name!r} is not computed by the graph")
        return self.values[name]

    def optional(self, node: Any, i: int) -> np.ndarray | None:
        return self.const(node.input[i], node) if len(node.input) > i and node.input[i] else None


def label(node: Any) -> str:
    return node.name or node.output[0]


def attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def import_onnx(data: bytes, name: str = "onnx_model", input_size: tuple[int, int] | None = None) -> Any:
    """The tf_keras model computing what the float ONNX model ``data`` computes (input NHWC)."""
    model = _parse(data)
    graph = model.graph
    g = OnnxGraph(list(graph.node), _initializers(graph))
    for node in g.nodes:
        for i in node.input:
            g.readers.setdefault(i, []).append(node)
    ins = [i for i in graph.input if i.name not in g.consts]
    if not g.nodes:
        raise ModelError("the ONNX model has no operators")
    if len(ins) != 1 or len(graph.output) != 1:
        raise ModelError(f"the ONNX model has {len(ins)} inputs and {len(graph.output)} outputs; "
                         "k210tool converts models with one image input and one output")
    b = KerasBuilder()
    inp, val = _input(b, g, ins[0], input_size)
    g.values[ins[0].name] = val
    for node in g.nodes:
        _run(b, g, node)
    out = graph.output[0].name
    if out in g.consts:
        raise ModelError("the ONNX model's output does not depend on its input")
    result = g.value(out, graph.node[-1])
    if result.nchw:  # give back ONNX's own layout
        return b.model(inp, b.permute(result.t, (3, 1, 2), "to_nchw"), name)
    if result.perm is not None:
        raise ModelError("the ONNX model ends in a flattened NCHW map that k210tool reordered (internal error)")
    return b.model(inp, result.t, name)


def _parse(data: bytes) -> Any:
    try:
        import onnx
    except ImportError:
        raise InputError("reading .onnx needs the onnx package", "pip install 'k210tool[onnx]'") from None
    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and friends
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"not a valid ONNX model ({first})") from None


def _initializers(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _input(b: KerasBuilder, g: OnnxGraph, inp: Any, size: tuple[int, int] | None) -> tuple[Any, Val]:
    dims = [d.dim_value or -1 for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelError(f"the ONNX model's input shape {dims} is not an image (N, C, H, W)")
    nhwc = _feeds_nhwc_transposes(g.readers.get(inp.name, []))
    h, w, c = dims[1:] if nhwc else (dims[2], dims[3], dims[1])
    if size is not None:
        h, w = size
    if min(h, w, c) <= 0:
        raise ModelError(f"the ONNX model's input size is not fixed ({dims})",
                         "pass --input-size HEIGHT WIDTH, or export with a fixed input size")
    t = b.input((h, w, c), inp.name or "input")
    return t, Val(t, nchw=not nhwc)


def _feeds_nhwc_transposes(readers: list[Any]) -> bool:
    """An ONNX image input is NCHW unless all its readers transpose it from NHWC (tf2onnx's graphs)."""
    return bool(readers) and all(n.op_type == "Transpose" and list(attrs(n).get("perm", [])) == [0, 3, 1, 2]
                                 for n in readers)


def input_is_nhwc(data: bytes) -> bool:
    """Whether the model's image input is NHWC (see :func:`_feeds_nhwc_transposes`)."""
    graph = _parse(data).graph
    inits = {t.name for t in graph.initializer}
    name = next(i.name for i in graph.input if i.name not in inits)
    return _feeds_nhwc_transposes([n for n in graph.node if name in n.input])


def _run(b: KerasBuilder, g: OnnxGraph, node: Any) -> None:
    op = node.op_type
    if op == "Constant":
        g.consts[node.output[0]] = _constant_node(node)
        return
    if op == "Shape" and node.input[0] in g.values:
        g.consts[node.output[0]] = np.array(g.values[node.input[0]].shape(), np.int64)
        return
    live = [i for i in node.input if i and i not in g.consts]
    if not live and op in _FOLD:
        g.consts[node.output[0]] = _FOLD[op](node, [g.consts[i] if i else None for i in node.input])
        return
    if op in PASS_THROUGH:
        g.values[node.output[0]] = g.value(node.input[0], node)
        return
    handler = _HANDLERS.get(op)
    if handler is None:
        raise ModelError(f"ONNX op {op} ({label(node)}) is not supported by k210tool's importer",
                         "replace it with standard layers (Conv, BatchNormalization, PRelu, Add, Gemm, pooling)")
    g.values[node.output[0]] = handler(b, g, node)


def _constant_node(node: Any) -> np.ndarray:
    from onnx import numpy_helper

    a = {x.name: x for x in node.attribute}
    if "value" in a:
        return numpy_helper.to_array(a["value"].t)
    v = attrs(node)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in v:
            return np.array(v[key], dtype)
    raise ModelError(f"ONNX op Constant ({label(node)}) holds a kind of value k210tool cannot read")


# ---------------------------------------------------------------------------------------------------
# constant folding (shape arithmetic)
# ---------------------------------------------------------------------------------------------------
def _axes(node: Any, ins: list[np.ndarray | None]) -> list[int]:
    a = attrs(node).get("axes")
    return [int(x) for x in (a if a is not None else (ins[1] if len(ins) > 1 and ins[1] is not None else []))]


def _unsqueeze(node: Any, ins: list[np.ndarray | None]) -> np.ndarray:
    out = np.asarray(ins[0])
    for ax in sorted(a % (out.ndim + len(_axes(node, ins))) for a in _axes(node, ins)):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(node: Any, ins: list[np.ndarray | None]) -> np.ndarray:
    x = np.asarray(ins[0])
    axes = _axes(node, ins)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in axes)) if axes else np.squeeze(x)


def _fold_reshape(node: Any, ins: list[np.ndarray | None]) -> np.ndarray:
    x, shape = np.asarray(ins[0]), [int(d) for d in np.asarray(ins[1])]
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


def _cast(node: Any, ins: list[np.ndarray | None]) -> np.ndarray:
    from onnx import helper

    return np.asarray(ins[0]).astype(helper.tensor_dtype_to_np_dtype(attrs(node)["to"]))


_FOLD: dict[str, Callable[[Any, list[Any]], np.ndarray]] = {
    "Gather": lambda n, i: np.take(i[0], np.asarray(i[1]).astype(np.int64), axis=attrs(n).get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda n, i: np.concatenate([np.atleast_1d(a) for a in i], axis=attrs(n)["axis"]),
    "Cast": _cast,
    "Identity": lambda n, i: i[0],
    "Reshape": _fold_reshape,
    "Transpose": lambda n, i: np.transpose(i[0], attrs(n).get("perm")),
    "Add": lambda n, i: i[0] + i[1],
    "Sub": lambda n, i: i[0] - i[1],
    "Mul": lambda n, i: i[0] * i[1],
    "Div": lambda n, i: i[0] / i[1] if np.asarray(i[0]).dtype.kind == "f" else i[0] // i[1],
    "Sqrt": lambda n, i: np.sqrt(i[0]),
}


# ---------------------------------------------------------------------------------------------------
# layout helpers
# ---------------------------------------------------------------------------------------------------
def _channels_last(v: Val, node: Any) -> None:
    """ONNX's channel axis (1) must be the Keras tensor's last axis: an NCHW map or an (N, C) matrix."""
    rank = len(v.t.shape)
    if not ((rank == 4 and v.nchw) or rank == 2):
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}) on a tensor of shape {list(v.shape())} "
                         "is not supported (expected an NCHW image or an (N, C) matrix)")


def _per_channel(k: np.ndarray, v: Val, node: Any) -> np.ndarray:
    """A constant broadcasting over ONNX axis 1 only (or a scalar) -> one value per Keras channel."""
    shape = v.shape()
    c = shape[1]
    k = f32(k)
    if k.size == 1:
        vec = np.full(c, k.reshape(()), np.float32)
    else:
        full = (1,) * (len(shape) - k.ndim) + tuple(k.shape)
        if len(full) != len(shape) or full[1] != c or k.size != c:
            raise ModelError(f"ONNX op {node.op_type} ({label(node)}): constant of shape {list(k.shape)} is not one "
                             f"value per channel of {list(shape)}")
        vec = k.reshape(c)
    return vec[v.perm] if v.perm is not None else vec


def _spatial(a: dict[str, Any], node: Any, x: Val) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], Pads]:
    """(kernel, strides, dilations, pads) of a Conv/Pool node, pads as ((top, bottom), (left, right))."""
    kernel = tuple(a.get("kernel_shape", ())) or None
    if kernel is None or len(kernel) != 2:
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}): only 2-D windows are supported")
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        hw = x.shape()[2:]
        pads = []
        for i in range(2):
            out = -(-hw[i] // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - hw[i], 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return kernel, strides, dil, (pads[0], pads[1])  # type: ignore[return-value]
    p = list(a.get("pads", (0, 0, 0, 0))) if auto != "VALID" else [0, 0, 0, 0]
    return kernel, strides, dil, ((p[0], p[2]), (p[1], p[3]))  # type: ignore[return-value]


def _need_nchw(v: Val, node: Any) -> None:
    if not (len(v.t.shape) == 4 and v.nchw):
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}) needs an NCHW image, got shape {list(v.shape())}")


# ---------------------------------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------------------------------
def _conv(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    _need_nchw(x, node)
    a = attrs(node)
    w = f32(g.const(node.input[1], node))  # (out, in / group, kh, kw)
    bias = g.optional(node, 2)
    group, cin = int(a.get("group", 1)), x.shape()[1]
    a.setdefault("kernel_shape", list(w.shape[2:]))
    kernel, strides, dil, pads = _spatial(a, node, x)
    t, padding = b.explicit_padding(x.t, pads, kernel, strides, dil, label(node))
    bias = f32(bias) if bias is not None else None
    if group == 1:
        y = b.conv2d(t, w.transpose(2, 3, 1, 0), bias, strides, padding, dil, label(node))
    elif group == cin and w.shape[1] == 1:
        kern = w.transpose(2, 3, 0, 1).reshape(w.shape[2], w.shape[3], cin, w.shape[0] // cin)
        y = b.depthwise(t, kern, bias, strides, padding, dil, label(node))
    else:
        raise ModelError(f"ONNX op Conv ({label(node)}): grouped convolution ({group} groups) is not supported",
                         "use depthwise (group = channels) or ordinary convolutions")
    return Val(y, nchw=True)


def _batchnorm(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    _channels_last(x, node)
    gamma, beta, mean, var = (f32(g.const(i, node)) for i in node.input[1:5])
    if x.perm is not None:
        gamma, beta, mean, var = gamma[x.perm], beta[x.perm], mean[x.perm], var[x.perm]
    y = b.batchnorm(x.t, gamma, beta, mean, var, float(attrs(node).get("epsilon", 1e-5)), label(node))
    return Val(y, x.nchw, x.perm)


def _prelu(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    _channels_last(x, node)
    slope = _per_channel(g.const(node.input[1], node), x, node)
    return Val(b.prelu(x.t, slope, label(node)), x.nchw, x.perm)


def _activation(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    kind = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}[node.op_type]
    alpha = float(attrs(node).get("alpha", 0.01))
    return Val(b.activation(x.t, kind, label(node), alpha), x.nchw, x.perm)


def _clip(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    a = attrs(node)
    lo, hi = g.optional(node, 1), g.optional(node, 2)
    low = float(lo) if lo is not None else a.get("min", -np.inf)
    high = float(hi) if hi is not None else a.get("max", np.inf)
    if low != 0.0 or high not in (6.0, np.inf) or (lo is None and "min" not in a):
        raise ModelError(f"ONNX op Clip ({label(node)}) to [{low}, {high}] is not supported",
                         "only Clip(0, 6) (ReLU6) and Clip(0, inf) (ReLU) are")
    return Val(b.activation(x.t, "relu6" if high == 6.0 else "relu", label(node)), x.nchw, x.perm)


def _softmax(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    if len(x.t.shape) != 2 or int(attrs(node).get("axis", -1)) not in (1, -1):
        raise ModelError(f"ONNX op Softmax ({label(node)}) on shape {list(x.shape())} is not supported",
                         "only a softmax over the features of an (N, C) matrix is")
    return Val(b.activation(x.t, "softmax", label(node)), False, x.perm)


def _elementwise(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    kind = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min"}[node.op_type]
    first, second = node.input[0], node.input[1]
    if first in g.consts or second in g.consts:
        return _with_constant(b, g, node, kind)
    x, y = g.value(first, node), g.value(second, node)
    if not _broadcastable(x, y) or kind == "div":
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}) of shapes {list(x.shape())} and {list(y.shape())} "
                         "is not supported (elementwise ops need equal or per-channel shapes of one layout)")
    return Val(b.merge(kind, [x.t, y.t], label(node)), x.nchw, x.perm)


def _broadcastable(x: Val, y: Val) -> bool:
    """Same layout and rank, and shapes that broadcast (an SE block's (N, C, H, W) * (N, C, 1, 1))."""
    if len(x.t.shape) != len(y.t.shape) or x.nchw != y.nchw or not _same_perm(x.perm, y.perm):
        return False
    try:
        np.broadcast_shapes(x.shape(), y.shape())
    except ValueError:
        return False
    return True


def _same_perm(p: np.ndarray | None, q: np.ndarray | None) -> bool:
    return (p is None and q is None) or (p is not None and q is not None and np.array_equal(p, q))


def _with_constant(b: KerasBuilder, g: OnnxGraph, node: Any, kind: str) -> Val:
    const_first = node.input[0] in g.consts
    x = g.value(node.input[1 if const_first else 0], node)
    _channels_last(x, node)
    k = _per_channel(g.consts[node.input[0 if const_first else 1]], x, node)
    y = b.with_constant(x.t, kind, k, const_first, label(node))
    if y is None:
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}) with a constant operand is not supported")
    return Val(y, x.nchw, x.perm)


def _dense(b: KerasBuilder, x: Val, kernel: np.ndarray, bias: np.ndarray | None, node: Any) -> Val:
    if len(x.t.shape) != 2 or int(x.t.shape[1]) != kernel.shape[0]:
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}): input {list(x.shape())} does not fit weights "
                         f"{list(kernel.shape)}")
    if x.perm is not None:
        kernel = kernel[x.perm]  # the input's values are in NHWC order: take the matching weight rows
    return Val(b.dense(x.t, kernel, bias, label(node)))


def _gemm(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    a = attrs(node)
    if int(a.get("transA", 0)):
        raise ModelError(f"ONNX op Gemm ({label(node)}) with transA=1 is not supported")
    w = f32(g.const(node.input[1], node))
    kernel = (w.T if int(a.get("transB", 0)) else w) * np.float32(a.get("alpha", 1.0))
    c = g.optional(node, 2)
    bias = np.broadcast_to(f32(c) * np.float32(a.get("beta", 1.0)), (kernel.shape[1],)).copy() if c is not None else None
    return _dense(b, g.value(node.input[0], node), kernel, bias, node)


def _matmul(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    return _dense(b, g.value(node.input[0], node), f32(g.const(node.input[1], node)), None, node)


def _flatten(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    if int(attrs(node).get("axis", 1)) != 1:
        raise ModelError(f"ONNX op Flatten ({label(node)}) with axis != 1 is not supported")
    return _to_matrix(b, g, node, x)


def _to_matrix(b: KerasBuilder, g: OnnxGraph, node: Any, x: Val) -> Val:
    """(N, C, H, W) -> (N, C*H*W) in ONNX's order (or in NHWC order with the Dense rows permuted)."""
    if len(x.t.shape) == 2:
        return x
    shape = x.shape()
    if not x.nchw or shape[2] * shape[3] == 1:
        return Val(b.flatten(x.t, label(node)))
    if _only_dense_reads(g, node.output[0]):
        c, h, w = shape[1:]
        perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        return Val(b.flatten(x.t, label(node)), perm=perm)
    return Val(b.flatten(b.permute(x.t, (3, 1, 2), label(node) + "_nchw"), label(node)))


def _only_dense_reads(g: OnnxGraph, name: str) -> bool:
    readers = g.readers.get(name, [])
    if not readers:
        return False
    for r in readers:
        if r.op_type in PASS_THROUGH:
            if not _only_dense_reads(g, r.output[0]):
                return False
        elif r.op_type not in ("Gemm", "MatMul") or r.input[0] != name:
            return False
    return True


def _reshape(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    src = x.shape()
    target = [src[i] if d == 0 else int(d) for i, d in enumerate(g.const(node.input[1], node))]
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(src)) // max(known, 1)
    return _reshape_to(b, g, node, x, target)


def _squeeze(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    src = x.shape()
    axes = [a % len(src) for a in _axes(node, [None, g.optional(node, 1)])]
    axes = axes or [i for i, d in enumerate(src) if d == 1 and i > 0]  # never the batch (1 here, free really)
    return _reshape_to(b, g, node, x, [d for i, d in enumerate(src) if i not in axes])


def _unsqueeze(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    target = list(x.shape())
    axes = _axes(node, [None, g.optional(node, 1)])
    for a in sorted(a % (len(target) + len(axes)) for a in axes):
        target.insert(a, 1)
    return _reshape_to(b, g, node, x, target)


def _reshape_to(b: KerasBuilder, g: OnnxGraph, node: Any, x: Val, target: list[int]) -> Val:
    """Reshape/Squeeze/Unsqueeze/Flatten: an image to (N, C*H*W), (N, C) to (N, C, 1, 1), or nothing."""
    src = x.shape()
    if target[0] != 1 or int(np.prod(target)) != int(np.prod(src)):
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}) from {list(src)} to {target} mixes the batch "
                         "dimension")
    if tuple(target) == src:
        return x
    if len(target) == 2 and len(src) == 4:
        return _to_matrix(b, g, node, x)
    if len(src) == 2 and len(target) == 4 and target[2] * target[3] == 1 and x.perm is None:
        return Val(b.reshape(x.t, (1, 1, target[1]), label(node)), nchw=True)
    raise ModelError(f"ONNX op {node.op_type} ({label(node)}) from {list(src)} to {target} is not supported",
                     "only flattening an image and (N, C) <-> (N, C, 1, 1) are")


def _transpose(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    perm = list(attrs(node).get("perm", []))
    if len(x.t.shape) == 4 and x.nchw and perm == [0, 2, 3, 1]:
        return Val(x.t, nchw=False)  # NCHW -> NHWC: the Keras tensor already is
    if len(x.t.shape) == 4 and not x.nchw and perm == [0, 3, 1, 2]:
        return Val(x.t, nchw=True)
    if perm == list(range(len(x.t.shape))):
        return x
    raise ModelError(f"ONNX op Transpose ({label(node)}) with perm {perm} is not supported",
                     "only NCHW <-> NHWC layout changes are")


def _global_pool(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    _need_nchw(x, node)
    keep = node.op_type != "ReduceMean" or bool(int(attrs(node).get("keepdims", 1)))
    if node.op_type == "ReduceMean":
        axes = sorted(a % 4 for a in _axes(node, [None, g.optional(node, 1)]))
        if axes != [2, 3]:
            raise ModelError(f"ONNX op ReduceMean ({label(node)}) over axes {axes} is not supported",
                             "only a mean over height and width (a global average pool) is")
    kind = "max" if node.op_type == "GlobalMaxPool" else "avg"
    return Val(b.global_pool(x.t, kind, keep, label(node)), nchw=keep)


def _pool(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    _need_nchw(x, node)
    a = attrs(node)
    kernel, strides, dil, pads = _spatial(a, node, x)
    if dil != (1, 1) or int(a.get("ceil_mode", 0)):
        raise ModelError(f"ONNX op {node.op_type} ({label(node)}) with dilations or ceil_mode is not supported")
    kind = "max" if node.op_type == "MaxPool" else "avg"
    if kind == "avg" and int(a.get("count_include_pad", 0)) and any(sum(p) for p in pads):
        t, padding = b.zero_pad(x.t, pads, label(node) + "_pad"), "valid"  # the zeros count: pad explicitly
    else:
        t, padding = b.explicit_padding(x.t, pads, kernel, strides, dil, label(node), pool=node.op_type)
    return Val(b.pool(t, kind, kernel, strides, padding, label(node)), nchw=True)


def _pad(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    x = g.value(node.input[0], node)
    _need_nchw(x, node)
    a = attrs(node)
    p = [int(v) for v in (g.const(node.input[1], node) if len(node.input) > 1 else a.get("pads", []))]
    value = g.optional(node, 2)
    fill = float(value) if value is not None else float(a.get("value", 0.0))
    if a.get("mode", "constant") != "constant" or fill != 0.0:
        raise ModelError(f"ONNX op Pad ({label(node)}): only zero padding is supported "
                         f"(mode {a.get('mode', 'constant')}, value {fill})")
    if len(p) != 8 or any(p[i] for i in (0, 1, 4, 5)) or min(p) < 0:
        raise ModelError(f"ONNX op Pad ({label(node)}): pads {p} are not spatial paddings of an NCHW image")
    return Val(b.zero_pad(x.t, ((p[2], p[6]), (p[3], p[7])), label(node)), nchw=True)


def _concat(b: KerasBuilder, g: OnnxGraph, node: Any) -> Val:
    xs = [g.value(i, node) for i in node.input]
    rank = len(xs[0].t.shape)
    axis = int(attrs(node)["axis"]) % rank
    if any(v.nchw != xs[0].nchw or v.perm is not None for v in xs) or axis == 0:
        raise ModelError(f"ONNX op Concat ({label(node)}) of these inputs is not supported")
    keras_axis = {1: 3, 2: 1, 3: 2}[axis] if xs[0].nchw else axis
    return Val(b.concat([v.t for v in xs], keras_axis, label(node)), xs[0].nchw)


Handler = Callable[[KerasBuilder, OnnxGraph, Any], Val]
_HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "PRelu": _prelu,
    **dict.fromkeys(("Relu", "LeakyRelu", "Sigmoid", "Tanh"), _activation),
    "Clip": _clip,
    "Softmax": _softmax,
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Max", "Min"), _elementwise),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    **dict.fromkeys(("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"), _global_pool),
    "MaxPool": _pool,
    "AveragePool": _pool,
    "Pad": _pad,
    "Concat": _concat,
}
