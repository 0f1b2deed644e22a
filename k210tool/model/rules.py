"""The KPU rewrite rules: small, named graph transforms, each saying whether it is exact.

Shaped like tfmot's graph transforms: a rule finds its pattern in a :class:`Graph` and replaces it, working
on the graph's copies of configs and weights (the input model is never touched). The registry
:data:`RULES` is an explicit ordered tuple; :mod:`k210tool.model.rewrite` applies it until nothing changes.

Exact rules run by default; approximate ones only when asked (``--prelu relu|leaky``, ``--approximate``),
because a trained network does not survive them: on a real trained MobileFaceNet PReLU -> ReLU leaves an
embedding cosine of 0.03 against the original, the symmetric stride-2 padding 0.15 (benchmarks/real_fidelity.py).
The exact lowering of TensorFlow-"same" stride 2 is :mod:`k210tool.model.rotate`; per-channel PReLU stays in
the graph and the KPU backend (:mod:`k210tool.compile.kmodel.gen`) runs it on the KPU exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from k210tool.model.graph import Graph, Node, Ref, make_layer_config

CONV_CLASSES = ("Conv2D", "DepthwiseConv2D")
DROPOUT_CLASSES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                   "AlphaDropout", "ActivityRegularization")


@dataclass
class Change:
    rule: str
    layer: str
    exact: bool
    detail: str


@dataclass(frozen=True)
class RuleOptions:
    prelu: str = "keep"  # keep (exact) | relu | leaky
    leaky_alpha: float | None = None  # None: the mean PReLU slope


@dataclass(frozen=True)
class Rule:
    name: str
    matches: str
    produces: str
    exact: str  # "yes", "no", or a condition ("for odd input sizes")
    apply: Callable[[Graph, RuleOptions], list[Change]]
    approximate: bool = False  # runs only when asked for

    @property
    def default(self) -> bool:
        return not self.approximate


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def int_pair(v: Any) -> tuple[int, int]:
    """A Keras size/stride setting (an int or a pair) as (rows, columns)."""
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


def padding_pairs(cfg: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """A ZeroPadding2D config's padding as ((top, bottom), (left, right))."""
    p = cfg.get("padding", 1)
    if isinstance(p, int):
        return (p, p), (p, p)
    a, b = p
    a = (a, a) if isinstance(a, int) else (int(a[0]), int(a[1]))
    b = (b, b) if isinstance(b, int) else (int(b[0]), int(b[1]))
    return a, b


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _new_node(g: Graph, class_name: str, base: str, inputs: list[Ref], **kwargs: Any) -> Node:
    name = g.unique_name(base)
    cfg = make_layer_config(g.flavour, class_name, name=name, **kwargs)
    module = "keras.layers" if g.flavour == "keras3" else None
    return Node(name, class_name, cfg, [inputs[0]] if len(inputs) == 1 else [inputs], {}, [], module, None)


def _replace_node(g: Graph, old: str, new: Node) -> None:
    """Put ``new`` where ``old`` was (same inputs are the caller's job) and point consumers at it."""
    items = [(new.name if k == old else k, new if k == old else v) for k, v in g.nodes.items()]
    g.nodes = dict(items)
    g.rewire(Ref(old, 0), Ref(new.name, 0))


# --------------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------------
def remove_dropout(g: Graph, opts: RuleOptions) -> list[Change]:
    changes = []
    for node in list(g):
        if node.class_name in DROPOUT_CLASSES and len(node.inputs) == 1:
            g.remove(node.name)
            changes.append(Change("dropout", node.name, True, f"removed {node.class_name} (inference is identity)"))
    return changes


def replace_prelu(g: Graph, opts: RuleOptions) -> list[Change]:
    if opts.prelu == "keep":
        return []
    changes = []
    for node in list(g):
        if node.class_name != "PReLU":
            continue
        alpha = node.weights[0] if node.weights else np.zeros(1, np.float32)
        if opts.prelu == "leaky":
            slope = float(np.mean(alpha)) if opts.leaky_alpha is None else float(opts.leaky_alpha)
            new = _new_node(g, "LeakyReLU", node.name + "_leaky", node.inputs,
                            **({"negative_slope": slope} if g.flavour == "keras3" else {"alpha": slope}))
            exact = bool(np.allclose(alpha, slope))
            detail = f"PReLU (slopes {float(alpha.min()):.3g}..{float(alpha.max()):.3g}) -> LeakyReLU({slope:.3g})"
        else:
            new = _new_node(g, "ReLU", node.name + "_relu", node.inputs)
            exact = bool(np.all(alpha == 0))
            detail = f"PReLU (slopes {float(alpha.min()):.3g}..{float(alpha.max()):.3g}) -> ReLU"
        new.args = node.args
        _replace_node(g, node.name, new)
        changes.append(Change("prelu", node.name, exact, detail))
    return changes


def symmetric_stride2(g: Graph, opts: RuleOptions) -> list[Change]:
    """TF "same" on a stride-2 conv pads bottom/right only for even sizes; the KPU pads symmetrically."""
    changes = []
    for node in list(g):
        if node.class_name not in CONV_CLASSES or node.get("padding") != "same":
            continue
        strides = int_pair(node.get("strides", 1))
        if strides == (1, 1):
            continue
        kernel = int_pair(node.get("kernel_size", 1))
        hw = g.shape_of(node.inputs[0])
        if hw is None:
            continue
        pads = [tf_same_pads(hw[i], kernel[i], strides[i]) for i in range(2)]
        sym = [((k - 1) // 2, (k - 1) // 2) for k in kernel]
        exact = pads == sym
        inputs = node.inputs
        if any(sum(p) for p in sym):
            pad = _new_node(g, "ZeroPadding2D", node.name + "_pad", inputs, padding=(tuple(sym[0]), tuple(sym[1])))
            g.insert_before(pad, node.name)
            node.args = [Ref(pad.name, 0)]
        node.config["padding"] = "valid"
        detail = (f"TF 'same' pads {pads[0]}x{pads[1]} at {hw[0]}x{hw[1]} -> ZeroPadding2D({sym[0]}, {sym[1]}) + 'valid'")
        changes.append(Change("symmetric-stride2", node.name, exact, detail))
    return changes


def symmetric_zeropad(g: Graph, opts: RuleOptions) -> list[Change]:
    """Asymmetric ZeroPadding2D (MobileNetV2's ((0,1),(0,1))) before a stride-2 conv -> symmetric."""
    changes = []
    for node in list(g):
        if node.class_name != "ZeroPadding2D":
            continue
        (t, b), (le, r) = padding_pairs(node.config)
        if (t, le) == (b, r):
            continue
        users = g.consumers(node.name)
        if not users or not all(u.class_name in CONV_CLASSES and int_pair(u.get("strides", 1)) == (2, 2)
                                and u.get("padding") == "valid" for u in users):
            continue
        k = int_pair(users[0].get("kernel_size", 3))
        sym = ((k[0] - 1) // 2, (k[0] - 1) // 2), ((k[1] - 1) // 2, (k[1] - 1) // 2)
        if (t + b, le + r) != (sum(sym[0]) - 1, sum(sym[1]) - 1) and (t + b, le + r) != (sum(sym[0]), sum(sym[1])):
            continue
        node.config["padding"] = sym
        changes.append(Change("symmetric-zeropad", node.name, False,
                              f"ZeroPadding2D(({t},{b}),({le},{r})) -> {sym} (output size unchanged, grid shifted)"))
    return changes


def fold_batchnorm(g: Graph, opts: RuleOptions) -> list[Change]:
    """BN after a Dense, or after Flatten/Reshape of a 1x1 conv, stays on the CPU: fold it into the weights."""
    changes = []
    for node in list(g):
        if node.class_name != "BatchNormalization" or len(node.inputs) != 1 or len(node.weights) < 4:
            continue
        prev = g.nodes[node.inputs[0].layer]
        hops: list[Node] = []
        while prev.class_name in ("Flatten", "Reshape") and len(g.consumers(prev.name)) == 1:
            hops.append(prev)
            prev = g.nodes[prev.inputs[0].layer]
        if prev.class_name not in ("Dense", "Conv2D") or len(g.consumers(prev.name)) != 1:
            continue
        if prev.class_name == "Conv2D" and not hops and _bn_axis_ok(node):
            continue  # nncase fuses BN right after a conv itself: nothing to gain
        if prev.get("activation") not in (None, "linear"):
            continue
        _fold_bn_into(prev, node)
        g.remove(node.name)
        changes.append(Change("fold-batchnorm", node.name, True, f"folded into {prev.class_name} {prev.name}"))
    return changes


def _bn_axis_ok(node: Node) -> bool:
    axis = node.get("axis", -1)
    return axis in (-1, 3, [3], [-1])


def _fold_bn_into(layer: Node, bn: Node) -> None:
    cfg = bn.config
    scale_on, center_on = cfg.get("scale", True), cfg.get("center", True)
    w = list(bn.weights)
    gamma = w.pop(0) if scale_on else 1.0
    beta = w.pop(0) if center_on else 0.0
    mean, var = w[0], w[1]
    factor = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(cfg.get("epsilon", 1e-3)))
    kernel = np.asarray(layer.weights[0], np.float64)
    bias = np.asarray(layer.weights[1], np.float64) if layer.get("use_bias", True) and len(layer.weights) > 1 else 0.0
    new_kernel = kernel * factor  # broadcasts over the last (output) axis of Dense/Conv2D kernels
    new_bias = (bias - mean) * factor + beta
    layer.config["use_bias"] = True
    layer.weights = [new_kernel.astype(np.float32), np.asarray(new_bias, np.float32)]


def rotate180(g: Graph, opts: RuleOptions) -> list[Change]:
    """TensorFlow-"same" stride 2 on the KPU exactly: turn the network (and its input) by 180 degrees."""
    from k210tool.model import rotate

    if not rotate.wants_rotation(g) or rotate.blocking_layer(g) is not None:
        return []
    changes = [Change("rotate180", name, True, detail) for name, detail in rotate.rotate(g)]
    changes.append(Change("rotate180", g.inputs[0], True, "the input is turned by 180 degrees (inside the kmodel)"))
    return changes


def dense_to_conv(g: Graph, opts: RuleOptions) -> list[Change]:
    """Flatten of a 1x1 feature -> Dense  becomes  1x1 Conv2D -> Flatten (exact; runs as a KPU conv)."""
    changes = []
    for node in list(g):
        if node.class_name != "Dense" or len(node.inputs) != 1 or not node.weights:
            continue
        flat = g.nodes[node.inputs[0].layer]
        if flat.class_name != "Flatten" or len(g.consumers(flat.name)) != 1:
            continue
        hw = g.shape_of(flat.inputs[0])
        if hw != (1, 1):
            continue
        kernel = node.weights[0]
        conv = _new_node(g, "Conv2D", node.name + "_conv", flat.inputs, filters=int(node.get("units")),
                         kernel_size=1, use_bias=bool(node.get("use_bias", True)),
                         activation=node.get("activation") or "linear")
        conv.weights = [kernel.reshape(1, 1, *kernel.shape)] + list(node.weights[1:])
        g.insert_before(conv, flat.name)
        flat.args = [Ref(conv.name, 0)]
        g.rewire(Ref(node.name, 0), Ref(flat.name, 0))
        del g.nodes[node.name]
        changes.append(Change("dense-to-conv", node.name, True, f"Dense({node.get('units')}) on a 1x1 feature -> "
                              f"Conv2D 1x1 {conv.name}"))
    return changes


RULES: tuple[Rule, ...] = (
    Rule("dropout", "Dropout / GaussianNoise / SpatialDropout", "nothing (identity at inference)", "yes",
         remove_dropout),
    # approximate rules first: the float model they leave is what the kmodel is measured against
    Rule("prelu", "PReLU (per-channel or shared)", "ReLU (--prelu relu) or LeakyReLU(mean slope) (--prelu leaky)",
         "no (exact only when every slope is 0, or equal for leaky)", replace_prelu, approximate=True),
    Rule("symmetric-stride2", "Conv2D/DepthwiseConv2D stride 2, padding 'same'",
         "ZeroPadding2D(symmetric) + padding 'valid' (moves the sampling grid by one pixel)",
         "only for odd input sizes", symmetric_stride2, approximate=True),
    Rule("symmetric-zeropad", "asymmetric ZeroPadding2D before a stride-2 'valid' conv",
         "symmetric ZeroPadding2D", "no (the sampling grid moves by one pixel)", symmetric_zeropad,
         approximate=True),
    # exact lowering
    Rule("rotate180", "stride-2 convs off the KPU's sampling grid (TF 'same' or ((0,1),(0,1)) padding on even sizes)",
         "the whole network and its input turned by 180 degrees: the same grid as the KPU's", "yes", rotate180),
    Rule("dense-to-conv", "Flatten of a 1x1 feature -> Dense", "1x1 Conv2D -> Flatten", "yes", dense_to_conv),
    Rule("fold-batchnorm", "BatchNormalization after Dense or Flatten-of-conv (left on the CPU by nncase)",
         "the BN folded into the preceding weights", "yes (within float rounding)", fold_batchnorm),
)
