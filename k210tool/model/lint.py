"""Predict, before compiling, what nncase 1.9 will run on the KPU and what falls back to the CPU.

The KPU (nncase's FAQ; docs/backend.md) runs 1x1 and 3x3 convolutions (depthwise too), stride 1 or 2 with
symmetric padding, 1-1024 channels, with a fused batch-norm and a per-layer piecewise-linear activation
(ReLU, ReLU6, LeakyReLU); nncase also lowers Dense (as a 1x1 conv on a 4x4-padded input) and Add (as a
conv over concatenated inputs) onto it. Everything else runs on the CPU, and every CPU result a KPU layer
needs is one upload: a KPU<->CPU round trip. The placement rules here are checked against nncase's own dump
in the tests (``tests/model/test_lint.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from k210tool.model.graph import Graph, Node, Ref
from k210tool.model.rules import CONV_CLASSES, DROPOUT_CLASSES, int_pair, padding_pairs, tf_same_pads

KPU_ACTIVATIONS = {"relu", "relu6", "linear", None, "leaky_relu"}
FUSABLE_ACT_CLASSES = {"ReLU", "LeakyReLU"}
GLUE_CLASSES = {"InputLayer", "Flatten", "Reshape"}


@dataclass
class LayerPlacement:
    layer: str
    class_name: str
    placement: str  # KPU | CPU | CPU+KPU | fused | glue | removed
    reason: str
    output_shape: list[int | None]
    params: int
    macs: int
    upload: bool = False  # a KPU layer whose input comes from the CPU (one round trip)
    fused_into: str | None = None


@dataclass
class CheckResult:
    model: str
    layers: list[LayerPlacement]
    kpu_layers: int
    kpu_uploads: int
    cpu_ops: dict[str, int]  # predicted nncase CPU ops besides glue
    memory_estimate: int
    kmodel_estimate: int
    board: str
    firmware: str
    board_limit: int
    fits_memory: bool
    flash_room: int
    fits_flash: bool
    suggestions: list[str] = field(default_factory=list)
    measured: dict[str, Any] | None = None  # filled by `check --compile`
    backend: str = "nncase (prediction)"  # k210tool: figures of a kmodel the KPU backend generated
    kpu: dict[str, Any] | None = None  # the KPU backend's figures (layers, MACs, weight bytes, KPU RAM)
    fallback: str | None = None  # why the KPU backend could not take the model
    refused: str | None = None  # a layer that cannot fit the KPU's RAM (any compiler), and what to change
    fit: dict[str, Any] | None = None  # board_fit of the kmodel (None for a prediction: no kmodel was made)
    problem: str | None = None  # why convert would refuse the model whatever its size (e.g. no kmodel v4 form)
    problem_hint: str | None = None

    @property
    def fits(self) -> bool:
        return self.fits_memory and self.fits_flash and self.refused is None and self.problem is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fits"] = self.fits
        return d


def _kpu_conv_reason(g: Graph, node: Node) -> str | None:
    """None when a Conv2D/DepthwiseConv2D can run on the KPU, else why not."""
    k = int_pair(node.get("kernel_size", 1))
    s = int_pair(node.get("strides", 1))
    d = int_pair(node.get("dilation_rate", 1))
    if k[0] != k[1] or k[0] not in (1, 3):
        return f"kernel {k[0]}x{k[1]} (the KPU runs 1x1 and 3x3)"
    if s[0] != s[1] or s[0] not in (1, 2):
        return f"stride {s[0]}x{s[1]} (the KPU runs stride 1 or 2)"
    if d != (1, 1):
        return f"dilation {d[0]}x{d[1]}"
    if node.class_name == "DepthwiseConv2D" and int(node.get("depth_multiplier", 1)) != 1:
        return "depth multiplier > 1"
    if node.class_name == "Conv2D" and int(node.get("groups", 1) or 1) != 1:
        return "grouped convolution"
    channels = _out_channels(g, node)
    if channels and channels > 1024:
        return f"{channels} output channels (the KPU takes at most 1024)"
    in_shape = g.full_shape(node.inputs[0]) if node.inputs else None
    if in_shape and in_shape[-1] is not None and int(in_shape[-1]) > 1024:
        return f"{in_shape[-1]} input channels (the KPU takes at most 1024)"
    if node.get("activation") not in KPU_ACTIVATIONS:
        return f"activation {node.get('activation')} (the KPU has piecewise-linear activations only)"
    return None


def _same_stride2_problem(g: Graph, node: Node) -> str | None:
    if node.get("padding") != "same" or int_pair(node.get("strides", 1)) == (1, 1):
        return None
    k = int_pair(node.get("kernel_size", 1))
    hw = g.shape_of(node.inputs[0])
    if hw is None:
        return "TensorFlow 'same' padding on a stride-2 conv"
    pads = [tf_same_pads(hw[i], k[i], 2) for i in range(2)]
    if all(a == b for a, b in pads):
        return None
    return (f"TensorFlow 'same' padding on a stride-2 conv pads {pads[0]} at {hw[0]}x{hw[1]}: "
            "CPU Pad + Slice around the KPU conv")


def _symmetric(node: Node) -> bool:
    (t, b), (le, r) = padding_pairs(node.config)
    return t == b and le == r


def _out_channels(g: Graph, node: Node) -> int | None:
    shape = g.full_shape(Ref(node.name, 0))
    return int(shape[-1]) if shape and shape[-1] is not None else None


def _params(node: Node) -> int:
    return int(sum(np.prod(w.shape) for w in node.weights))


def _macs(g: Graph, node: Node) -> int:
    shape = g.full_shape(Ref(node.name, 0))
    if not shape or not node.weights or any(d is None for d in shape[1:]):
        return 0
    out_elems = int(np.prod(shape[1:]))
    kernel = node.weights[0]
    if node.class_name == "Conv2D":
        return out_elems * int(np.prod(kernel.shape[:3]))
    if node.class_name == "DepthwiseConv2D":
        return out_elems * int(np.prod(kernel.shape[:2]))
    if node.class_name == "Dense":
        return int(np.prod(kernel.shape))
    return 0


@dataclass
class _Walk:
    """What :func:`predict` knows while it walks the graph in order."""

    g: Graph
    places: dict[str, LayerPlacement] = field(default_factory=dict)
    cpu_ops: Counter[str] = field(default_factory=Counter)
    on_kpu: set[str] = field(default_factory=set)  # layers whose output lives in KPU memory
    uploaded: set[str] = field(default_factory=set)  # CPU tensors already uploaded (several KPU convs read one)
    continued: set[str] = field(default_factory=set)  # KPU tensors already read in place by one conv
    by_kpu: set[str] = field(default_factory=set)  # layers the KPU computes (the result may come back via the CPU)


Handler = Callable[[_Walk, Node, LayerPlacement, Node | None], None]


def predict(g: Graph) -> tuple[list[LayerPlacement], Counter[str]]:
    """Per-layer placement and the CPU ops nncase will emit."""
    w = _Walk(g)
    for node in g:
        shape = list(g.full_shape(Ref(node.name, 0)) or [])
        p = LayerPlacement(node.name, node.class_name, "CPU", "", shape, _params(node), _macs(g, node))
        producer = g.nodes[node.inputs[0].layer] if node.inputs else None
        _HANDLERS.get(node.class_name, _on_cpu)(w, node, p, producer)
        w.places[node.name] = p
    return list(w.places.values()), w.cpu_ops


def _on_cpu(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    p.reason = f"{node.class_name} runs on the CPU"
    w.cpu_ops[node.class_name] += 1


def _glue(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    p.placement, p.reason = "glue", "no computation"
    if producer is not None and producer.name in w.on_kpu and node.class_name != "InputLayer":
        w.on_kpu.add(node.name)


def _dropout(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    p.placement, p.reason = "removed", "identity at inference"


def _conv(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    g = w.g
    why = _kpu_conv_reason(g, node)
    if why is not None:
        p.reason = why
        w.cpu_ops["Conv2D"] += 1
        return
    pad_problem = _same_stride2_problem(g, node)
    p.placement = "KPU"
    source = node.inputs[0]
    if producer is not None and producer.class_name == "ZeroPadding2D" and producer.inputs:
        # the padding is folded into the conv: what the KPU reads is the pad's input
        if not _symmetric(producer):
            pad_problem = "asymmetric padding: a stride-1 KPU conv, then a CPU slice"
        source = producer.inputs[0]
        producer = g.nodes[source.layer]
    hw = g.shape_of(source)
    if not pad_problem and hw is not None and int_pair(node.get("strides", 1)) == (2, 2) and (hw[0] % 2 or hw[1] % 2):
        pad_problem = (f"stride 2 on an odd {hw[0]}x{hw[1]} input: a stride-1 KPU conv, then a CPU "
                       "slice (the KPU's 2x2 down-sampling needs even sizes)")
    p.reason = "conv" + (f"; {pad_problem}" if pad_problem else "")
    tiny = hw is not None and min(hw) < 4
    if tiny:
        p.reason += f"; input {hw[0]}x{hw[1]} is padded to 4x4 on the CPU first (KPU minimum)"
    if pad_problem:
        w.cpu_ops["Slice"] += 1
    if tiny:
        w.cpu_ops["Pad"] += 1
    from_cpu = producer is None or producer.name not in w.on_kpu
    key = producer.name if producer is not None else ""
    if from_cpu:
        fresh = key not in w.uploaded
        w.uploaded.add(key)
    else:  # a KPU result feeds the first conv that reads it; nncase re-uploads it for the others
        fresh = key in w.continued
        w.continued.add(key)
    p.upload = tiny or fresh
    w.by_kpu.add(node.name)
    if not pad_problem:  # with a pad problem the result comes back through the CPU
        w.on_kpu.add(node.name)


def _dense(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    in_shape = w.g.full_shape(node.inputs[0]) or (None,)
    widest = max(int(node.get("units", 0)), int(in_shape[-1] or 0))
    if widest > 1024:
        p.reason = f"{widest} features (the KPU takes at most 1024 channels): CPU matrix multiply"
        w.cpu_ops["MatMul"] += 1
        return
    p.placement, p.reason = "KPU", "lowered to a 1x1 conv on a 4x4-padded input"
    w.cpu_ops["Pad"] += 1
    p.upload = True
    w.on_kpu.add(node.name)
    w.by_kpu.add(node.name)


def _batch_norm(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    if producer is not None and producer.class_name in CONV_CLASSES + ("Dense",):
        p.placement, p.fused_into = "fused", producer.name
        p.reason = "folded into the conv's batch-norm table" if producer.name in w.by_kpu else "folded into the CPU conv"
        _follow(node.name, producer.name, w.on_kpu, w.by_kpu)
    else:
        p.reason = "batch-norm not right after a conv: CPU multiply-add"
        w.cpu_ops["Binary"] += 2


def _activation(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    if node.class_name == "Activation" and node.get("activation") not in ("relu", "relu6"):
        _on_cpu(w, node, p, producer)
    elif producer is not None and producer.name in w.by_kpu:
        p.placement, p.reason, p.fused_into = "fused", "KPU activation table", _fused_root(w.places, producer)
        _follow(node.name, producer.name, w.on_kpu, w.by_kpu)
    else:
        p.reason = "activation after a CPU op"
        w.cpu_ops["Clamp" if node.class_name == "ReLU" else "Unary"] += 1


def _prelu(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    # nncase splits x -> relu(x) + a * -relu(-x): lookup tables and a multiply on the CPU, the add
    # as a KPU conv over the concatenated halves (one more upload)
    p.placement = "CPU+KPU"
    p.reason = "PReLU is not a KPU activation: CPU lookup tables and multiply, then a KPU add (upload)"
    p.upload = True
    w.cpu_ops["Binary"] += 1
    w.cpu_ops["TableLookup1D"] += 1  # its result goes back through the CPU: the next conv uploads again


def _zero_padding(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    users = w.g.consumers(node.name)
    if users and all(u.class_name in CONV_CLASSES and _kpu_conv_reason(w.g, u) is None for u in users):
        p.placement = "fused"
        p.reason = ("symmetric padding folded into the KPU conv" if _symmetric(node) else
                    "asymmetric padding: the conv runs at stride 1 on the KPU and is sliced on the CPU")
        if producer is not None and producer.name in w.on_kpu:
            w.on_kpu.add(node.name)
    else:
        p.reason = "padding without a KPU conv after it: CPU Pad"
        w.cpu_ops["Pad"] += 1


def _add(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    hw = w.g.shape_of(Ref(node.name, 0))
    if hw is not None and min(hw) < 4:
        p.reason = f"{hw[0]}x{hw[1]} add (below the KPU's 4x4 minimum): a conv on the CPU"
        w.cpu_ops["Conv2D"] += 1
        return
    p.placement, p.reason = "KPU", "lowered to a conv over the concatenated inputs (CPU concat + upload)"
    p.upload = True
    w.on_kpu.add(node.name)
    w.by_kpu.add(node.name)


def _global_pool(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    p.reason = "global pooling: CPU Reduce"
    w.cpu_ops["Reduce"] += 1


def _pool(w: _Walk, node: Node, p: LayerPlacement, producer: Node | None) -> None:
    pool, stride = int_pair(node.get("pool_size", 2)), int_pair(node.get("strides") or node.get("pool_size", 2))
    if producer is not None and producer.name in w.by_kpu and pool == stride and pool[0] in (2, 4):
        p.placement, p.reason, p.fused_into = "fused", f"KPU {pool[0]}x{pool[1]} pooling", producer.name
        _follow(node.name, producer.name, w.on_kpu, w.by_kpu)
    else:
        p.reason = f"pooling {pool[0]}x{pool[1]} stride {stride[0]} (the KPU pools 2x2/4x4 after a conv)"
        w.cpu_ops["ReduceWindow2D"] += 1


# Keras layer class -> how nncase places it; any other class runs on the CPU (``_on_cpu``)
_HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(GLUE_CLASSES, _glue),
    **dict.fromkeys(DROPOUT_CLASSES, _dropout),
    **dict.fromkeys(CONV_CLASSES, _conv),
    "Dense": _dense,
    "BatchNormalization": _batch_norm,
    **dict.fromkeys((*FUSABLE_ACT_CLASSES, "Activation"), _activation),
    "PReLU": _prelu,
    "ZeroPadding2D": _zero_padding,
    "Add": _add,
    "GlobalAveragePooling2D": _global_pool,
    "GlobalMaxPooling2D": _global_pool,
    "MaxPooling2D": _pool,
    "AveragePooling2D": _pool,
}


def _follow(name: str, producer: str, on_kpu: set[str], by_kpu: set[str]) -> None:
    """A fused layer computes where its producer does, and its result lands where the producer's does."""
    by_kpu.add(name)
    if producer in on_kpu:
        on_kpu.add(name)


def _fused_root(places: dict[str, LayerPlacement], producer: Node) -> str:
    p = places.get(producer.name)
    return p.fused_into if p is not None and p.fused_into else producer.name


def estimate_memory(g: Graph, layers: list[LayerPlacement]) -> tuple[int, int]:
    """(nncase TOTAL estimate, kmodel size estimate) in bytes.

    Weights are uint8 on the KPU (plus ~25% for batch-norm/activation tables and alignment); the CPU side
    keeps float32 copies of every tensor it touches, and the peak of two live float tensors dominates.
    """
    weights = sum(p.params for p in layers if p.placement in ("KPU", "fused"))
    cpu_weights = sum(p.params * 4 for p in layers if p.placement == "CPU")
    kmodel = int(weights * 1.25 + cpu_weights + 4096 * sum(1 for p in layers if p.placement == "KPU"))
    peak = 0
    for p in layers:
        out = _elems(p.output_shape)
        inp = _elems(list(g.full_shape(g.nodes[p.layer].inputs[0]) or [])) if g.nodes[p.layer].inputs else 0
        if p.placement == "CPU":
            need = 4 * (inp + out)  # float32 input and output
        elif p.placement == "CPU+KPU":
            need = 20 * out  # PReLU: both halves in float32, tables, uint8 staging
        elif p.class_name == "Add":
            need = 12 * out  # float32 concat of both inputs + two uint8 copies
        elif p.placement == "KPU" and p.upload:
            need = 5 * inp  # float32 + uint8 copy of what is uploaded
        else:
            need = 0
        peak = max(peak, need)
    shape = g.input_shape()
    input_bytes = _elems(list(shape))
    output_bytes = 4 * sum(_elems(list(g.full_shape(r) or [])) for r in g.outputs)
    return kmodel + peak + input_bytes + output_bytes, kmodel


def _elems(shape: list[Any]) -> int:
    dims = shape[1:]
    if not dims or any(d is None for d in dims):
        return 0
    return int(np.prod(dims))


def suggestions_for(layers: list[LayerPlacement], cpu_ops: Counter[str]) -> list[str]:
    tips = []
    if any(p.class_name == "PReLU" for p in layers):
        tips.append("PReLU runs on the CPU with nncase: k210tool's KPU backend (convert's default) runs it exactly on "
                    "the KPU, per channel (--prelu relu|leaky would approximate it)")
    if any("TensorFlow 'same'" in p.reason for p in layers):
        tips.append("stride-2 'same' convs need CPU Pad+Slice as they are: convert's exact lowering (rotate180) puts "
                    "them on the KPU's sampling grid")
    if any(p.class_name == "ZeroPadding2D" and p.placement == "CPU" for p in layers):
        tips.append("asymmetric ZeroPadding2D runs on the CPU as it is: before a stride-2 conv convert's exact "
                    "lowering (rotate180) makes it symmetric")
    big = [p.layer for p in layers if p.class_name in CONV_CLASSES and p.placement == "CPU"]
    if big:
        tips.append(f"{len(big)} conv(s) stay on the CPU ({', '.join(big[:3])}...): KPU kernels are 1x1/3x3 "
                    "(a 7x7 global depthwise conv is cheap there; larger spatial convs are not)")
    return tips


def dump_placement(dump: Any, g: Graph) -> dict[str, str]:
    """From nncase's dump: for each conv/dense/add layer of ``g``, "KPU" when a KPUConv2D carries its name.

    nncase names a KPU conv after the TensorFlow ops it fused (``model/<layer>/Conv2D...;model/<bn>/...``),
    and TensorFlow names ops after the Keras layers.
    """
    segments: set[str] = set()
    for op in dump.kpu_ops:
        if op.kind == "KPUConv2D":
            for part in op.name.replace(";", "/").split("/"):
                segments.add(part)
    out = {}
    for node in g:
        if node.class_name in CONV_CLASSES + ("Dense", "Add"):
            out[node.name] = "KPU" if node.name in segments else "CPU"
    return out
