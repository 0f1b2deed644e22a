"""The float network as the KPU backend sees it: convolutions with their activation, adds, a CPU tail.

:func:`plan_from_graph` reads a lowered Keras graph (after the exact rewrite rules: stride 2 already in the
KPU's form, see :mod:`k210tool.model.rotate`) into a :class:`NetPlan` of plain NumPy data: every
convolution with batch norm folded in and the activation that follows fused (per-channel PReLU slopes kept),
residual adds, and the layers after the last KPU-sized map (the 7x7 global depthwise "GDConv", the
embedding) as a float CPU tail. :func:`place` decides what runs on the KPU. Anything the backend cannot
express raises :class:`PlanError` naming the layer, so ``convert`` can fall back to compiling with nncase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from k210tool.errors import DoesNotFitError, K210ToolError
from k210tool.model.graph import Graph, Node, Ref
from k210tool.model.rules import int_pair, padding_pairs, tf_same_pads

KPU_MIN_SIZE = 4  # every KPU output is at least 4x4 (nncase pads smaller ones; we keep them on the CPU)
KPU_MAX_CHANNELS = 1024
KPU_MAX_WIDTH = 1024


class PlanError(K210ToolError):
    """The network has a layer the KPU backend does not express (convert then compiles with nncase)."""


class KpuRamError(PlanError, DoesNotFitError):
    """A layer whose input and output maps cannot be in the KPU's 2 MiB of RAM at once, even in the most
    compact storage, and which cannot be split: nncase fails on it too, so it is refused, not compiled."""


class BackendTooBig(PlanError, DoesNotFitError):
    """k210tool's backend can express the model, but none of its layouts fits the board: ``convert`` (auto)
    then tries nncase, whose kmodel of the same model may be smaller (a CPU tail it keeps off the KPU)."""


@dataclass
class Act:
    """An activation fused after a convolution or add: ``slopes`` is the per-channel slope for negative
    inputs (PReLU; 0 for ReLU, alpha for LeakyReLU, 1 for none), ``clip`` an upper bound (ReLU6)."""

    kind: str  # linear | relu | leaky | prelu
    slopes: np.ndarray  # float64 (C,)
    clip: float | None = None

    @staticmethod
    def linear(c: int) -> Act:
        return Act("linear", np.ones(c))

    def apply(self, v: np.ndarray, axis: int = 1) -> np.ndarray:
        shape = [1] * v.ndim
        shape[axis] = -1
        a = self.slopes.reshape(shape)
        out = np.where(v >= 0, v, v * a)
        return np.minimum(out, self.clip) if self.clip is not None else out


@dataclass
class Conv:
    """One convolution, NCHW semantics: ``weights`` (O, I, k, k) dense or (C, 1, k, k) depthwise."""

    name: str
    src: str
    dst: str
    weights: np.ndarray
    bias: np.ndarray
    depthwise: bool
    stride: int
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    act: Act
    pre: str = ""  # tensor name of the pre-activation values (for calibration)
    kpu: bool = False
    head: bool = False  # a dense layer on a 1x1 map after the CPU ops: run on the KPU, its input padded to 4x4

    @property
    def kernel(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[0])

    def macs(self, out_hw: tuple[int, int]) -> int:
        return int(np.prod(self.weights.shape)) * out_hw[0] * out_hw[1]


@dataclass
class Add:
    name: str
    a: str
    b: str
    dst: str
    act: Act
    pre: str = ""
    kpu: bool = False


Op = Conv | Add


@dataclass
class NetPlan:
    input: str
    input_shape: tuple[int, int, int]  # C, H, W
    ops: list[Op]
    output: str
    output_shape: tuple[int, ...]  # the model's output without the batch dimension
    shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tensor -> C, H, W
    rotation: int = 0  # the model takes its input turned by this many degrees
    keras_outputs: dict[str, str] = field(default_factory=dict)  # tensor -> Keras layer whose output it is
    # tensors of split layers (:mod:`k210tool.compile.ramsplit`): tensor -> (tensor, first, end channel) it is a
    # slice of; the other tensors of split layers are computed from their op for calibration
    slices: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    splits: list[str] = field(default_factory=list)  # what was split to fit KPU RAM, for the summary

    def producer(self, tensor: str) -> Op | None:
        return next((op for op in self.ops if op.dst == tensor), None)

    def consumers(self, tensor: str) -> list[Op]:
        return [op for op in self.ops if tensor in _inputs(op)]


def _inputs(op: Op) -> tuple[str, ...]:
    return (op.a, op.b) if isinstance(op, Add) else (op.src,)


# ------------------------------------------------------------------------------------------ reading
_ACTIVATIONS = ("PReLU", "ReLU", "LeakyReLU", "Activation")


def plan_from_graph(g: Graph) -> NetPlan:
    """The lowered Keras graph ``g`` (shapes annotated) as a :class:`NetPlan`."""
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise PlanError("the KPU backend takes one image input and one output")
    inp = g.inputs[0]
    shape = g.input_shape(inp)
    if len(shape) != 4 or None in shape[1:]:
        raise PlanError(f"input shape {shape} is not a fixed image")
    _, h, w, c = (int(d) if d is not None else 0 for d in shape)
    reader = _Reader(g)
    plan = NetPlan(inp, (c, h, w), [], "", (), {inp: (c, h, w)}, g.input_rotation, {inp: inp})
    reader.plan = plan
    for node in g:
        if node.name not in reader.done and not node.is_input:
            reader.read(node)
    out = reader.tensor_of(g.outputs[0])
    plan.output = out
    full = g.full_shape(g.outputs[0]) or ()
    plan.output_shape = tuple(int(d) for d in full[1:] if d is not None)
    return plan


class _Reader:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.done: set[str] = set()
        self.alias: dict[str, str] = {}  # keras layer -> plan tensor it equals
        self.plan: NetPlan

    def tensor_of(self, ref: Ref) -> str:
        return self.alias.get(ref.layer, ref.layer)

    def only_consumer(self, node: Node) -> Node | None:
        users = self.g.consumers(node.name)
        return users[0] if len(users) == 1 and not any(r.layer == node.name for r in self.g.outputs) else None

    def shape(self, layer: str) -> tuple[int, int, int]:
        full = self.g.full_shape(Ref(layer, 0))
        if not full or len(full) != 4:
            raise PlanError(f"layer {layer!r} does not produce an image-shaped tensor")
        _, h, w, c = full
        return int(c), int(h), int(w)  # type: ignore[arg-type]

    def read(self, node: Node) -> None:
        c = node.class_name
        if c in ("Conv2D", "DepthwiseConv2D", "Dense"):
            self._conv(node)
        elif c == "SeparableConv2D":
            raise PlanError(f"layer {node.name!r}: SeparableConv2D (split it into DepthwiseConv2D + Conv2D 1x1)")
        elif c == "Add" and len(node.inputs) == 2:
            self._add(node)
        elif c == "BatchNormalization" or c in _ACTIVATIONS:
            self._standalone(node)
        elif c == "GlobalAveragePooling2D":
            self._gap(node)
        elif c in ("Flatten", "Reshape"):
            self._flatten(node)
        elif c == "ZeroPadding2D":
            users = self.g.consumers(node.name)
            if not all(u.class_name in ("Conv2D", "DepthwiseConv2D") and u.get("padding") == "valid" for u in users):
                raise PlanError(f"layer {node.name!r}: ZeroPadding2D not followed by a 'valid' convolution")
            self.done.add(node.name)
        else:
            raise PlanError(f"layer {node.name!r}: the KPU backend has no {c}")

    # ---------------------------------------------------------------------------------- layers
    def _conv(self, node: Node) -> None:
        src_ref = node.inputs[0]
        pad = (0, 0, 0, 0)
        prev = self.g.nodes[src_ref.layer]
        if prev.class_name == "ZeroPadding2D":
            (t, b), (le, r) = padding_pairs(prev.config)
            pad, src_ref = (t, b, le, r), prev.inputs[0]
        w = [np.asarray(x, np.float64) for x in node.weights]
        if node.class_name == "Dense":
            kernel = w[0].T.reshape(w[0].shape[1], w[0].shape[0], 1, 1)
            depthwise, stride, k = False, 1, 1
            src_shape = self._flat_source(src_ref)
            if src_shape is None:
                raise PlanError(f"layer {node.name!r}: Dense on a feature that is not 1x1")
            src_ref = Ref(self.tensor_of(src_ref), 0)
        else:
            k = int(int_pair(node.get("kernel_size"))[0])
            if int_pair(node.get("kernel_size")) != (k, k) or int_pair(node.get("strides", 1))[0] != int_pair(
                    node.get("strides", 1))[1]:
                raise PlanError(f"layer {node.name!r}: non-square kernel or stride")
            if int_pair(node.get("dilation_rate", 1)) != (1, 1):
                raise PlanError(f"layer {node.name!r}: dilated convolution")
            stride = int_pair(node.get("strides", 1))[0]
            depthwise = node.class_name == "DepthwiseConv2D"
            if depthwise:
                if int(node.get("depth_multiplier", 1)) != 1:
                    raise PlanError(f"layer {node.name!r}: depthwise convolution with depth_multiplier > 1")
                kernel = w[0][:, :, :, 0].transpose(2, 0, 1)[:, None]
            else:
                if int(node.get("groups", 1)) != 1:
                    raise PlanError(f"layer {node.name!r}: grouped convolution")
                kernel = w[0].transpose(3, 2, 0, 1)
            if node.get("padding") == "same":
                h, wd = self.g.shape_of(src_ref) or (0, 0)
                pad = (*tf_same_pads(h, k, stride), *tf_same_pads(wd, k, stride))
        use_bias = node.get("use_bias", True) and len(w) > 1
        bias = w[1] if use_bias else np.zeros(kernel.shape[0])
        act_name = node.get("activation") or "linear"
        conv = Conv(node.name, self.tensor_of(src_ref), node.name, kernel, bias, depthwise, stride, pad,
                    Act.linear(kernel.shape[0]))
        self.done.add(node.name)
        pre = last = node
        if act_name != "linear":
            conv.act = _keras_act(act_name, kernel.shape[0], node.name)
        else:
            pre = self._fold_bn(conv, node)
            last = self._fuse_act(conv, pre)
        self._emit(conv, pre, last)

    def _flat_source(self, ref: Ref) -> tuple[int, int, int] | None:
        node = self.g.nodes[ref.layer]
        if node.class_name in ("Flatten", "Reshape"):
            full = self.g.full_shape(node.inputs[0])
            if full and len(full) == 4 and full[1] == 1 and full[2] == 1:
                return int(full[3]), 1, 1
            return None
        full = self.g.full_shape(ref)
        if full and len(full) == 2:
            return int(full[1]), 1, 1
        return None

    def _fold_bn(self, conv: Conv, node: Node) -> Node:
        bn = self.only_consumer(node)
        if bn is None or bn.class_name != "BatchNormalization" or bn.get("axis", -1) not in (-1, 3, [3], [-1]):
            return node
        scale, shift = _bn_affine(bn)
        conv.weights = conv.weights * scale.reshape(-1, 1, 1, 1)
        conv.bias = conv.bias * scale + shift
        self.done.add(bn.name)
        return bn

    def _fuse_act(self, op: Conv | Add, last: Node) -> Node:
        nxt = self.only_consumer(last)
        if nxt is None or nxt.class_name not in _ACTIVATIONS:
            return last
        c = op.out_channels if isinstance(op, Conv) else self.shape(last.name)[0]
        op.act = _node_act(nxt, c)
        self.done.add(nxt.name)
        return nxt

    def _emit(self, op: Op, pre_node: Node, last: Node) -> None:
        """Record ``op``: ``pre_node`` is the Keras layer holding its values before the activation (what the
        calibration measures), ``last`` the one after it (the tensor consumers read)."""
        pre = pre_node.name
        op.pre = pre
        op.dst = last.name
        if isinstance(op, Conv) and op.weights.shape[-1] == 1 and self._is_flat(op.src):
            shape = (op.out_channels, 1, 1)
        else:
            shape = self.shape(last.name)
        self.plan.shapes[op.dst] = shape
        self.plan.shapes.setdefault(pre, shape)
        self.plan.keras_outputs[op.dst] = last.name
        self.plan.keras_outputs[pre] = pre
        self.plan.ops.append(op)

    def _is_flat(self, tensor: str) -> bool:
        return self.plan.shapes.get(tensor, (0, 0, 0))[1:] == (1, 1)

    def _add(self, node: Node) -> None:
        a, b = (self.tensor_of(r) for r in node.inputs)
        add = Add(node.name, a, b, node.name, Act.linear(self.shape(node.name)[0]))
        self.done.add(node.name)
        last = self._fuse_act(add, node)
        self._emit(add, node, last)

    def _standalone(self, node: Node) -> None:
        """A batch norm or activation with nothing to fuse into: a 1x1 depthwise convolution."""
        c, _h, _w = self.shape(node.name)
        weights = np.ones((c, 1, 1, 1))
        bias = np.zeros(c)
        conv = Conv(node.name, self.tensor_of(node.inputs[0]), node.name, weights, bias, True, 1, (0, 0, 0, 0),
                    Act.linear(c))
        self.done.add(node.name)
        if node.class_name == "BatchNormalization":
            scale, shift = _bn_affine(node)
            conv.weights = scale.reshape(-1, 1, 1, 1)
            conv.bias = shift
            last = self._fuse_act(conv, node)
        else:
            conv.act = _node_act(node, c)
            last = node
        self._emit(conv, node, last)

    def _gap(self, node: Node) -> None:
        c, h, w = self.shape(node.inputs[0].layer) if self.g.full_shape(node.inputs[0]) else (0, 0, 0)
        weights = np.full((c, 1, h, w), 1.0 / (h * w))  # an h x w kernel: the mean, on the CPU
        conv = Conv(node.name, self.tensor_of(node.inputs[0]), node.name, weights, np.zeros(c), True, 1,
                    (0, 0, 0, 0), Act.linear(c))
        self.done.add(node.name)
        self.plan.shapes[node.name] = (c, 1, 1)
        conv.pre = node.name
        self.plan.keras_outputs[node.name] = node.name
        self.plan.ops.append(conv)

    def _flatten(self, node: Node) -> None:
        src = self.tensor_of(node.inputs[0])
        if self.plan.shapes.get(src, (0, 0, 0))[1:] != (1, 1):
            raise PlanError(f"layer {node.name!r}: {node.class_name} of a map larger than 1x1")
        self.alias[node.name] = src
        self.done.add(node.name)


def _bn_affine(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    cfg = bn.config
    w = [np.asarray(x, np.float64) for x in bn.weights]
    gamma = w.pop(0) if cfg.get("scale", True) else 1.0
    beta = w.pop(0) if cfg.get("center", True) else 0.0
    mean, var = w[0], w[1]
    scale = gamma / np.sqrt(var + float(cfg.get("epsilon", 1e-3)))
    return np.asarray(scale * np.ones_like(mean)), np.asarray(beta - mean * scale)


def _keras_act(name: str, c: int, layer: str) -> Act:
    if name == "relu":
        return Act("relu", np.zeros(c))
    if name == "relu6":
        return Act("relu", np.zeros(c), 6.0)
    raise PlanError(f"layer {layer!r}: activation {name!r} has no KPU form in k210tool's backend")


def _node_act(node: Node, c: int) -> Act:
    cls = node.class_name
    if cls == "PReLU":
        alpha = np.asarray(node.weights[0], np.float64) if node.weights else np.zeros(1)
        if alpha.ndim == 3 and (alpha.shape[0] > 1 or alpha.shape[1] > 1):
            raise PlanError(f"layer {node.name!r}: PReLU with a slope per pixel")
        slopes = np.broadcast_to(alpha.reshape(-1), (c,)).astype(np.float64).copy()
        return Act("prelu", slopes)
    if cls == "ReLU":
        neg = float(node.get("negative_slope", 0.0) or 0.0)
        top = node.get("max_value")
        if float(node.get("threshold", 0.0) or 0.0) != 0.0:
            raise PlanError(f"layer {node.name!r}: ReLU with a threshold")
        return Act("relu" if neg == 0 else "leaky", np.full(c, neg), None if top is None else float(top))
    if cls == "LeakyReLU":
        alpha = node.get("negative_slope", node.get("alpha", 0.3))
        return Act("leaky", np.full(c, float(alpha)))
    return _keras_act(str(node.get("activation")), c, node.name)


# ---------------------------------------------------------------------------------------- placement
def place(plan: NetPlan) -> int:
    """Mark what runs on the KPU: the longest prefix of convolutions the KPU does (1x1/3x3, stride 1, or
    stride 2 on even sizes in its padding form, outputs at least 4x4) and adds of KPU maps. Everything after
    runs on the CPU in float. Returns how many ops run on the KPU."""
    on_kpu: set[str] = {plan.input}
    count = 0
    for op in plan.ops:
        if isinstance(op, Add):
            # the KPU adds with one layer reading both operands: at most 1024 channels together
            ok = op.a in on_kpu and op.b in on_kpu and _kpu_clip(op.act) and \
                2 * plan.shapes[op.dst][0] <= KPU_MAX_CHANNELS
        else:
            ok = op.src in on_kpu and kpu_conv_problem(op, plan.shapes[op.src]) is None
        if not ok:
            break
        op.kpu = True
        on_kpu.add(op.dst)
        count += 1
    return count


def kpu_conv_problem(op: Conv, in_shape: tuple[int, int, int]) -> str | None:
    """Why the KPU cannot run ``op`` on a map of ``in_shape`` (None: it can)."""
    c, h, w = in_shape
    k, s = op.kernel, op.stride
    half = (k - 1) // 2
    if op.weights.shape[-2] != k:
        return f"{op.weights.shape[-2]}x{k} kernel (the KPU runs 1x1 and 3x3)"
    if k not in (1, 3):
        return f"{k}x{k} kernel (the KPU runs 1x1 and 3x3)"
    if op.pad != (half,) * 4:
        return f"padding {op.pad} (the KPU pads {half} on every side)"
    if s not in (1, 2) or (s == 2 and (h % 2 or w % 2)):
        return f"stride {s} on a {h}x{w} map"
    if h // s < KPU_MIN_SIZE or w // s < KPU_MIN_SIZE:
        return f"output {h // s}x{w // s} is smaller than the KPU's 4x4"
    if max(c, op.out_channels) > KPU_MAX_CHANNELS or w > KPU_MAX_WIDTH:
        return "more than 1024 channels or a row wider than 1024"
    if not _kpu_clip(op.act):
        return f"a clipped {op.act.kind} activation (the KPU clips ReLU only)"
    return None


def _kpu_clip(act: Act) -> bool:
    """Whether the KPU can apply ``act``'s clip: a ReLU's (ReLU6) is the activation table's clamp at 255 when
    255 stands for the clip value; other clipped shapes are not generated."""
    return act.clip is None or (act.kind == "relu" and act.clip > 0 and bool(np.all(act.slopes == 0.0)))


HEAD_MIN_WEIGHTS = 4096  # below this a dense layer costs less on the CPU than a second upload


def mark_head(plan: NetPlan, on: bool = True) -> int:
    """Put the dense layers of the CPU tail (the embedding: a fully connected layer on the 1x1 map the GDConv
    leaves) back on the KPU (``on``) or on the CPU: uint8 weights instead of float32 ones (a quarter of the
    bytes), at the cost of a second upload, the 1x1 map padded to the KPU's 4x4 minimum, and 8-bit
    arithmetic where the CPU computes in float. Returns how many were marked."""
    marked = 0
    for op in plan.ops:
        if isinstance(op, Conv):
            op.head = False
        if not on or not isinstance(op, Conv) or op.kpu or not _dense_1x1(op, plan):
            continue
        prev = plan.producer(op.src)
        if prev is None or prev.kpu or not isinstance(prev, Conv) or op.act.clip is not None:
            continue
        c = plan.shapes[op.src][0]
        if max(c, op.out_channels) > KPU_MAX_CHANNELS or c * op.out_channels < HEAD_MIN_WEIGHTS:
            continue
        op.head = True
        marked += 1
    return marked


def fold_cpu_linear(plan: NetPlan) -> int:
    """Merge back-to-back linear 1x1 convolutions on 1x1 maps in the CPU tail (the embedding's two dense
    layers become one: the same function, computed in float64, a fraction of the weights). Returns how
    many were merged."""
    merged = 0
    changed = True
    while changed:
        changed = False
        for a in [op for op in plan.ops if isinstance(op, Conv) and not op.kpu]:
            users = plan.consumers(a.dst)
            if len(users) != 1 or a.dst == plan.output or not _dense_1x1(a, plan):
                continue
            b = users[0]
            if not isinstance(b, Conv) or b.kpu or not _dense_1x1(b, plan) or a.act.kind != "linear":
                continue
            wa, wb = a.weights[:, :, 0, 0], b.weights[:, :, 0, 0]
            b.weights = (wb @ wa)[:, :, None, None]
            b.bias = wb @ a.bias + b.bias
            b.src = a.src
            plan.ops.remove(a)
            merged += 1
            changed = True
            break
    return merged


def _dense_1x1(op: Conv, plan: NetPlan) -> bool:
    return (not op.depthwise and op.kernel == 1 and op.stride == 1 and not any(op.pad)
            and plan.shapes.get(op.src, (0, 0, 0))[1:] == (1, 1))
