"""The exact stride-2 lowering: turn the network by 180 degrees so TensorFlow's stride-2 grid is the KPU's.

A stride-2 3x3 convolution with TensorFlow "same" padding on an even size pads (0, 1) and centres output
``i`` on input row ``2i + 1``; the KPU pads symmetrically and keeps the top-left pixel of each 2x2 block,
centre ``2i``. Turning the picture by 180 degrees maps row ``r`` to ``H - 1 - r``, which swaps the two
parities. So if every kernel is turned too (``w[::-1, ::-1]``) and the input is turned, the network computes
the same embedding with every stride-2 convolution in the KPU's form (``ZeroPadding2D(1)`` + "valid"):
stride-1 "same" convolutions pad symmetrically and commute with the turn, so do element-wise layers, adds,
batch norm, global pooling and the 7x7 "valid" GDConv (its kernel turns too). Checked on a real trained
MobileFaceNet: cosine 1.000000 on real faces.

Two things follow: a 1x1 stride-2 convolution (ResNet shortcuts) samples the even rows, which turn into odd
ones; it becomes a 3x3 stride-2 convolution whose only non-zero tap is the bottom-right one. And the model
must be fed the turned image: the graph records ``input_rotation = 180``, and k210tool puts the turn inside
the kmodel (one CPU slice on the uint8 input), so nothing outside the kmodel has to know.

The rule applies only when it helps and is exact: every stride-2 3x3 convolution on an even size is
misaligned (TF "same" or MobileNetV2's ((0,1),(0,1)) padding), and every layer of the model is one whose
behaviour under the turn is known (the table below). Otherwise the model is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.model.graph import Graph, Node, Ref
from k210tool.model.rules import int_pair, padding_pairs

CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
# Layers that act on every pixel alike (or on channels only): turning the input turns their output.
POINTWISE = {
    "InputLayer", "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Add",
    "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Rescaling", "Identity", "Dense", "Softmax",
    "LayerNormalization", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "UpSampling2D", "Dropout",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
}


@dataclass(frozen=True)
class Stride2:
    node: str
    kernel: int
    size: tuple[int, int]  # input (H, W)
    top_left: tuple[int, int]  # padding before the first row/column (TF "same" or a ZeroPadding2D)
    pad_node: str | None  # the ZeroPadding2D that provides it, if any

    @property
    def even(self) -> bool:
        return self.size[0] % 2 == 0 and self.size[1] % 2 == 0

    @property
    def aligned(self) -> bool:
        """Centres on even rows/columns (the KPU's): top/left padding equals the kernel's half width."""
        half = (self.kernel - 1) // 2
        return self.top_left == (half, half)


def stride2_convs(g: Graph) -> list[Stride2]:
    """Every square stride-2 convolution with where its sampling grid starts."""
    found = []
    for node in g:
        if node.class_name not in CONVS or int_pair(node.get("strides", 1)) != (2, 2):
            continue
        k = int_pair(node.get("kernel_size", 1))
        (t, _b, le, _r), pad, src = conv_padding(g, node)
        hw = g.shape_of(src)
        if hw is not None and k[0] == k[1]:
            found.append(Stride2(node.name, k[0], hw, (t, le), pad))
    return found


def conv_padding(g: Graph, node: Node) -> tuple[tuple[int, int, int, int], str | None, Ref]:
    """(top, bottom, left, right) padding a convolution sees, the ZeroPadding2D giving it (if any), and the
    tensor before that padding."""
    k = int_pair(node.get("kernel_size", 1))
    s = int_pair(node.get("strides", 1))
    src = node.inputs[0]
    if node.get("padding") == "same":
        hw = g.shape_of(src) or (0, 0)
        ph = _tf_same_total(hw[0], k[0], s[0])
        pw = _tf_same_total(hw[1], k[1], s[1])
        return (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2), None, src
    prev = g.nodes[src.layer]
    if prev.class_name == "ZeroPadding2D" and len(g.consumers(prev.name)) == 1:
        (t, b), (le, r) = padding_pairs(prev.config)
        return (t, b, le, r), prev.name, prev.inputs[0]
    return (0, 0, 0, 0), None, src


def _tf_same_total(size: int, kernel: int, stride: int) -> int:
    out = -(-size // stride)
    return max((out - 1) * stride + kernel - size, 0)


def turned_padding(g: Graph, node: Node) -> tuple[int, int, int, int] | str | None:
    """The padding that makes the turned convolution compute the turned output: the sides swap when the
    windows tile the padded map exactly; "corner" for a 1x1 stride-2 convolution whose grid moves by one
    (made a 3x3 with its tap in the corner); None when no padding can do it."""
    k = int_pair(node.get("kernel_size", 1))
    s = int_pair(node.get("strides", 1))
    (t, b, le, r), _pad, src = conv_padding(g, node)
    hw = g.shape_of(src)
    if hw is None:
        return None
    rest = ((hw[0] + t + b - k[0]) % s[0], (hw[1] + le + r - k[1]) % s[1])
    if rest == (0, 0):
        return (b, t, r, le)
    if k == (1, 1) and s == (2, 2) and (t, b, le, r) == (0, 0, 0, 0) and rest == (1, 1):
        return "corner"
    return None


def blocking_layer(g: Graph) -> str | None:
    """The first layer whose behaviour under the turn is not known, or an output that is a map (it would come
    out turned); None: the whole model can turn."""
    for ref in g.outputs:
        full = g.full_shape(ref)
        if full is not None and len(full) == 4 and (full[1], full[2]) != (1, 1):
            return ref.layer
    for node in g:
        c = node.class_name
        if c in POINTWISE or c in ("ZeroPadding2D", "Cropping2D", "PReLU"):
            continue
        if c in CONVS:
            if int_pair(node.get("dilation_rate", 1)) != (1, 1) or turned_padding(g, node) is None:
                return node.name
            continue
        if c in ("MaxPooling2D", "AveragePooling2D"):
            pool, strides = int_pair(node.get("pool_size", 2)), int_pair(node.get("strides") or node.get("pool_size", 2))
            hw = g.shape_of(node.inputs[0])
            if pool != strides or hw is None or hw[0] % pool[0] or hw[1] % pool[1]:
                return node.name  # windows would not tile the map, so the turn moves them
            continue
        if c in ("Flatten", "Reshape"):
            hw = g.shape_of(node.inputs[0])
            if hw is None or hw == (1, 1):
                continue
            users = g.consumers(node.name)
            if c == "Flatten" and users and all(u.class_name == "Dense" for u in users):
                continue
            return node.name
        if c == "Concatenate" and node.get("axis", -1) in (-1, 3):
            continue
        return node.name
    return None


def wants_rotation(g: Graph) -> bool:
    """True when every stride-2 3x3 convolution on an even size is off the KPU's grid (and there is one)."""
    if g.input_rotation:
        return False
    threes = [s for s in stride2_convs(g) if s.kernel == 3 and s.even]
    return bool(threes) and not any(s.aligned for s in threes)


def rotate(g: Graph) -> list[tuple[str, str]]:
    """Turn ``g`` by 180 degrees in place (check :func:`blocking_layer` first); returns (layer, what
    changed) for the report."""
    plans = {n.name: turned_padding(g, n) for n in g if n.class_name in CONVS}
    pads_of = {n.name: conv_padding(g, n) for n in g if n.class_name in CONVS}
    padded_by = {pad for _p, pad, _s in pads_of.values() if pad is not None}
    changes: list[tuple[str, str]] = []
    for node in list(g):
        c = node.class_name
        if c in CONVS:
            one = int_pair(node.get("kernel_size", 1)) == (1, 1) and plans[node.name] != "corner"
            _turn_kernel(node)
            detail = _turned_conv(g, node, plans[node.name], pads_of[node.name])
            if not one or "padding" in detail:
                changes.append((node.name, detail))
        elif c in ("ZeroPadding2D", "Cropping2D") and node.name not in padded_by:
            key = "padding" if c == "ZeroPadding2D" else "cropping"
            (t, b), (le, r) = padding_pairs({"padding": node.config.get(key, 0)})
            node.config[key] = ((b, t), (r, le))
        elif c == "PReLU" and node.weights and np.ndim(node.weights[0]) == 3:
            alpha = node.weights[0]
            if alpha.shape[0] > 1 or alpha.shape[1] > 1:
                node.weights = [alpha[::-1, ::-1].copy()]
        elif c == "Flatten":
            _permute_dense_rows(g, node)
    g.input_rotation = 180
    return changes


def _turn_kernel(node: Node) -> None:
    w = list(node.weights)
    if w:
        w[0] = np.ascontiguousarray(np.asarray(w[0])[::-1, ::-1])
    node.weights = w


def _turned_conv(g: Graph, node: Node, plan: tuple[int, int, int, int] | str | None,
                 before: tuple[tuple[int, int, int, int], str | None, Ref]) -> str:
    """Give a turned convolution the padding of the turned grid (the KPU's for stride 2 on even sizes)."""
    from k210tool.model.rules import _new_node

    _old, pad_node, src = before
    if plan == "corner":
        # sampled rows turn odd: a 3x3 kernel whose bottom-right tap holds the 1x1 weights, padded by 1
        w = list(node.weights)
        k = np.zeros((3, 3, *w[0].shape[2:]), w[0].dtype)
        k[2, 2] = w[0][0, 0]
        node.weights = [k, *w[1:]]
        node.config["kernel_size"] = (3, 3)
        plan = (1, 1, 1, 1)
        detail = "1x1 stride 2 -> 3x3 with the weights in the bottom-right tap"
    else:
        detail = "kernel turned 180 degrees"
    assert isinstance(plan, tuple)
    t, b, le, r = plan
    k = int_pair(node.get("kernel_size", 1))
    if int_pair(node.get("strides", 1)) == (2, 2) and k == (3, 3) and (t, le) == (1, 1) and (b, r) in ((0, 0), (1, 1)):
        b, r = 1, 1  # the same windows: the extra bottom/right row is never reached (KPU form)
    hw = g.shape_of(src) or (0, 0)
    s = int_pair(node.get("strides", 1))
    same = (_tf_same_total(hw[0], k[0], s[0]), _tf_same_total(hw[1], k[1], s[1]))
    if pad_node is None and (t, b, le, r) == (same[0] // 2, same[0] - same[0] // 2, same[1] // 2,
                                                 same[1] - same[1] // 2) and node.get("padding") == "same":
        return detail
    if pad_node is not None:
        g.nodes[pad_node].config["padding"] = ((t, b), (le, r))
    elif (t, b, le, r) != (0, 0, 0, 0):
        pnode = _new_node(g, "ZeroPadding2D", node.name + "_pad", [src], padding=((t, b), (le, r)))
        g.insert_before(pnode, node.name)
        node.args = [Ref(pnode.name, 0)]
    node.config["padding"] = "valid"
    return detail + f"; padding ((top {t}, bottom {b}), (left {le}, right {r})) + 'valid'"


def _permute_dense_rows(g: Graph, flat: Node) -> None:
    """A Flatten of an HxW map reads the pixels in turned order: reorder the next Dense's kernel rows."""
    shape = g.full_shape(flat.inputs[0])
    if not shape or len(shape) != 4 or (shape[1], shape[2]) == (1, 1):
        return
    _, h, w, c = shape
    for dense in g.consumers(flat.name):
        kernel = np.asarray(dense.weights[0])
        rows = kernel.reshape(h, w, c, -1)[::-1, ::-1].reshape(h * w * c, -1)
        dense.weights = [np.ascontiguousarray(rows), *dense.weights[1:]]
