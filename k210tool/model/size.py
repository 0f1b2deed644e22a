"""Floors on what a model needs on the K210, from its layers alone: checked before any slow stage.

:func:`weight_floor`: the kmodel's size. :func:`nncase_kpu_ram` (below): the KPU RAM a layer nncase
gives the KPU needs.

Every convolution and dense weight becomes at least one byte of the kmodel file (uint8 on the KPU, float32
on the CPU), and the firmware reads the whole file into RAM, so ``weights`` bytes is a floor of both the
flash and the RAM the model needs. The floor is kept below what either compiler can reach:

- depthwise weights are not counted (nncase folds a linear 1x1 conv and a depthwise conv into one conv,
  which can hold fewer weights than the two; they are a few bytes per channel anyway);
- biases, batch norms and PReLU slopes are not counted (they fold into tables);
- a chain of linear 1x1 convolutions / dense layers may be multiplied out into fewer weights (k210tool's
  backend merges back-to-back linear dense layers of the embedding): such a chain counts the cheapest way
  of merging it (``in x out`` for each merged run).

Once the KPU backend has declined a model, nncase compiles it, and nncase's own rules give a higher floor
(``nncase=True``): layers its K210 target never puts on the KPU keep float32 weights, and it merges nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from k210tool.model.graph import Graph, Node, Ref

_PASS_THROUGH = {"BatchNormalization", "Flatten", "Reshape", "Dropout", "GaussianNoise", "GaussianDropout",
                 "SpatialDropout1D", "SpatialDropout2D", "AlphaDropout", "Permute", "InputLayer"}


@dataclass
class WeightFloor:
    bytes: int
    largest: list[tuple[str, int]] = field(default_factory=list)  # (layer, bytes) biggest first
    cpu: list[str] = field(default_factory=list)  # layers nncase keeps in float32 (nncase=True)

    def describe_largest(self, n: int = 3) -> str:
        """The biggest layers (those with at least a tenth of the biggest one's weights)."""
        top = self.largest[0][1] if self.largest else 0
        shown = [(name, c) for name, c in self.largest[:n] if c * 10 >= top]
        return ", ".join(f"{name} ({c / 2**20:.2f} MiB)" for name, c in shown)


def weight_floor(g: Graph, nncase: bool = False) -> WeightFloor:
    """The fewest bytes of weights any kmodel of ``g`` can hold; with ``nncase``, any kmodel nncase 1.9 makes:
    a convolution its K210 target never gives the KPU (more than 1024 input or output channels, a kernel
    other than 1x1/3x3, dilation, groups that are not depthwise) keeps float32 weights, 4 bytes each
    (``modules/k210/src/transforms/k210/fake_kpu_conv2d.cpp``, ``kpu_utils.h``)."""
    cpu = [node.name for node in g if nncase and _never_on_kpu(node)]
    counts = {node.name: _kernel_count(node) * (4 if node.name in cpu else 1) for node in g}
    # nncase multiplies no layers out (the one such pass of 1.9, fold_1x1_conv2d_depthwise_conv2d, is not run)
    child = {} if nncase else {node.name: _chain_child(g, node) for node in g if _is_dense(node)}
    has_parent = {c.name for c in child.values() if c is not None}
    total = 0
    chained: set[str] = set()
    for name, nxt in child.items():
        if name in has_parent or nxt is None:  # a chain of one is counted as a layer
            continue
        chain = [g.nodes[name]]
        while nxt is not None and nxt.name not in chained and nxt not in chain:
            chain.append(nxt)
            nxt = child.get(nxt.name)
        chained.update(n.name for n in chain)
        total += _cheapest_merge([_in_out(n) for n in chain])
    total += sum(c for name, c in counts.items() if name not in chained)
    largest = sorted(((n, c) for n, c in counts.items() if c), key=lambda t: -t[1])
    return WeightFloor(int(total), largest, [n for n in cpu if n not in chained])


def _kernel_count(node: Node) -> int:
    if not node.weights:
        return 0
    kind = node.class_name
    if kind in ("Conv2D", "Conv2DTranspose", "Conv1D", "Dense"):
        return int(np.prod(node.weights[0].shape))
    if kind == "SeparableConv2D" and len(node.weights) > 1:
        return int(np.prod(node.weights[1].shape))  # the pointwise part
    return 0


def _never_on_kpu(node: Node) -> bool:
    """nncase 1.9 keeps this layer off the KPU whatever the map sizes (its channel and kernel conditions)."""
    if node.class_name not in ("Conv2D", "Dense") or not node.weights:
        return False
    shape = node.weights[0].shape
    cin, cout = int(shape[-2]), int(shape[-1])
    groups = int(node.get("groups", 1) or 1)
    if cin * groups > 1024 or cout > 1024:
        return True
    if node.class_name == "Dense":
        return False
    kh, kw = int(shape[0]), int(shape[1])
    dilation = node.get("dilation_rate", 1)
    dilated = any(int(d) != 1 for d in (dilation if isinstance(dilation, (list, tuple)) else (dilation,)))
    return kh != kw or kh not in (1, 3) or dilated or groups not in (1, cin * groups)


def _is_dense(node: Node) -> bool:
    """A dense layer or a 1x1 convolution: a matrix, which a neighbour in a linear chain can multiply into."""
    if node.class_name == "Dense":
        return bool(node.weights)
    if node.class_name != "Conv2D" or not node.weights:
        return False
    shape = node.weights[0].shape
    return len(shape) == 4 and shape[0] == shape[1] == 1 and int(node.get("groups", 1) or 1) == 1


def _linear(node: Node) -> bool:
    return node.get("activation") in (None, "linear")


def _in_out(node: Node) -> tuple[int, int]:
    shape = node.weights[0].shape
    return int(shape[-2]), int(shape[-1])


def _chain_child(g: Graph, node: Node) -> Node | None:
    """The dense layer ``node`` feeds through pass-through layers only, when ``node`` is linear."""
    if not _linear(node):
        return None
    current = node
    while True:
        users = g.consumers(current.name)
        if len(users) != 1 or g.is_output(current.name):
            return None
        user = users[0]
        if _is_dense(user):
            return user
        if user.class_name not in _PASS_THROUGH and not (user.class_name == "Activation" and _linear(user)):
            return None
        current = user


def _cheapest_merge(dims: list[tuple[int, int]]) -> int:
    """Fewest weights of a chain of matrices (in_i, out_i) multiplied out in consecutive runs."""
    best = [0] + [0] * len(dims)
    for j in range(len(dims)):
        best[j + 1] = min(best[i] + dims[i][0] * dims[j][1] for i in range(j + 1))
    return best[-1]


KPU_RAM = 2 * 1024 * 1024


def nncase_kpu_ram(g: Graph) -> tuple[str, str, int] | None:
    """The layer nncase 1.9 would put on the KPU whose maps need the most KPU RAM: (layer, what, bytes).

    nncase gives the KPU every 1x1/3x3 convolution with at most 1024 channels and a map of 4..256 x 4..512
    (``fake_kpu_conv2d``), whatever the RAM; its input and output maps are in KPU RAM together, in the row
    layout. It runs a depthwise conv at stride 1 and slices afterwards (only a dense stride-2 conv folds into
    the KPU's 2x2 pool), so a depthwise output has its input's height and width. Counted from the maps before
    nncase's padding: a floor. None when no layer qualifies."""
    from k210tool.compile.kmodel.layout import kpu_bytes

    worst: tuple[str, str, int] | None = None
    for node in g:
        shapes = _kpu_conv_maps(g, node)
        if shapes is None:
            continue
        (h, w, cin), (oh, ow, cout) = shapes
        need = kpu_bytes(cin, h, w) + kpu_bytes(cout, oh, ow)
        if worst is None or need > worst[2]:
            what = f"{node.class_name} on {h}x{w}x{cin} -> {oh}x{ow}x{cout}"
            worst = (node.name, what, need)
    return worst


def _kpu_conv_maps(g: Graph, node: Node) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(input h, w, c), (KPU output h, w, c) of a convolution nncase surely gives the KPU, else None."""
    if node.class_name not in ("Conv2D", "DepthwiseConv2D") or not node.weights or not node.inputs:
        return None
    shape_in, shape_out = g.full_shape(node.inputs[0]), g.full_shape(Ref(node.name, 0))
    if not shape_in or not shape_out or len(shape_in) != 4 or len(shape_out) != 4 or None in shape_in[1:]:
        return None
    h, w, cin = (int(d) for d in shape_in[1:])
    cout = int(shape_out[3])
    kernel = node.weights[0].shape
    depthwise = node.class_name == "DepthwiseConv2D"
    if depthwise and cout != cin:  # a depth multiplier: not nncase's depthwise
        return None
    groups = int(node.get("groups", 1) or 1)
    dilation = node.get("dilation_rate", 1)
    if (kernel[0] != kernel[1] or kernel[0] not in (1, 3) or max(cin, cout) > 1024 or groups not in (1, cin)
            or any(int(d) != 1 for d in (dilation if isinstance(dilation, (list, tuple)) else (dilation,)))
            or not (4 <= h and h + 2 <= 256 and 4 <= w and w + 2 <= 512)):
        return None
    strides = node.get("strides", 1)
    strided = any(int(s) != 1 for s in (strides if isinstance(strides, (list, tuple)) else (strides,)))
    if depthwise or groups == cin > 1 or not strided:
        return (h, w, cin), (h, w, cout)
    return (h, w, cin), (h // 2, w // 2, cout)  # the 2x2 pool of a dense stride-2 conv
