"""Small MobileFaceNet-shaped ONNX graphs with seeded NumPy weights, built without TensorFlow.

They keep every layer kind of the real network (stride-2 stem, depthwise convs, bottlenecks with and
without a residual add, a 1x1 head, a global depthwise conv that runs on the CPU, a linear embedding)
and are compiled by the same nncase backend as ``convert``, through its ONNX importer. Building them
takes milliseconds where a TFLite export takes seconds, which keeps the test suite fast; the full-size
MobileFaceNets of the slow tests still go through Keras and TFLite.
"""

from __future__ import annotations

import numpy as np


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: np.ndarray, prefix: str = "w") -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, pads: list[int], group: int = 1) -> str:
        fan_in = (cin // group) * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        b = self.rng.normal(0.05, 0.1, (cout,))  # a folded batch norm's shift
        return self.node("Conv", [x, self.const(w), self.const(b, "b")], kernel_shape=[k, k], strides=[stride] * 2,
                         pads=pads, group=group)

    def act(self, x: str, kind: str, channels: int) -> str:
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "leaky":
            return self.node("LeakyRelu", [x], alpha=0.1)
        if kind == "relu6":
            return self.node("Clip", [x, self.const(np.float32(0.0), "lo"), self.const(np.float32(6.0), "hi")])
        if kind == "prelu":
            slope = self.rng.uniform(0.05, 0.4, (channels, 1, 1))
            return self.node("PRelu", [x, self.const(slope, "slope")])
        raise ValueError(kind)


def tiny_mobilefacenet(size: int, activation: str, same_padding: bool, softmax_head: bool = False,
                       seed: int = 0) -> bytes:
    """ONNX bytes of a MobileFaceNet in miniature (input 1x3xSxS float, output 1x32 or 1x10 softmax)."""
    from onnx import TensorProto, helper

    g = _Graph(seed)
    # stride-2 convs: TensorFlow "same" pads only after (0,0,1,1); the KPU form pads symmetrically
    s2 = [0, 0, 1, 1] if same_padding else [1, 1, 1, 1]
    x = g.act(g.conv("image", 3, 16, 3, 2, s2), activation, 16)
    x = g.act(g.conv(x, 16, 16, 3, 1, [1, 1, 1, 1], group=16), activation, 16)
    for stride in (2, 1):
        y = g.act(g.conv(x, 16, 32, 1, 1, [0, 0, 0, 0]), activation, 32)
        y = g.act(g.conv(y, 32, 32, 3, stride, s2 if stride == 2 else [1, 1, 1, 1], group=32), activation, 32)
        y = g.conv(y, 32, 16, 1, 1, [0, 0, 0, 0])
        x = g.node("Add", [x, y]) if stride == 1 else y
    x = g.act(g.conv(x, 16, 64, 1, 1, [0, 0, 0, 0]), activation, 64)
    spatial = size // 4
    x = g.conv(x, 64, 64, spatial, 1, [0, 0, 0, 0], group=64)  # the global depthwise conv: on the CPU
    x = g.node("Flatten", [g.conv(x, 64, 32, 1, 1, [0, 0, 0, 0])], axis=1)
    out_dim = 32
    if softmax_head:
        w = g.rng.normal(0.0, 0.2, (32, 10))
        x = g.node("Softmax", [g.node("Gemm", [x, g.const(w), g.const(np.zeros(10), "b")])], axis=1)
        out_dim = 10
    graph = helper.make_graph(
        g.nodes, "tiny_mobilefacenet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, out_dim])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="k210tool-tests")
    model.ir_version = 6
    from onnx import shape_inference

    return shape_inference.infer_shapes(model).SerializeToString()  # nncase needs every value's shape
