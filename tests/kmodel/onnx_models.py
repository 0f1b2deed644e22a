"""Small MobileFaceNet-shaped ONNX graphs with seeded NumPy weights, built without TensorFlow.

They keep every layer kind of the real network (stride-2 stem, depthwise convs, bottlenecks with and
without a residual add, a 1x1 head, a global depthwise conv that runs on the CPU, a linear embedding)
and are compiled by the same nncase backend as ``convert``, through its ONNX importer. Building them
takes milliseconds where a TFLite export takes seconds, which keeps the test suite fast; the full-size
MobileFaceNets of the slow tests still go through Keras and TFLite.
"""

from __future__ import annotations

import numpy as np
from onnx_graphs import OnnxBuilder


def tiny_mobilefacenet(size: int, activation: str, same_padding: bool, softmax_head: bool = False,
                       seed: int = 0) -> bytes:
    """ONNX bytes of a MobileFaceNet in miniature (input 1x3xSxS float, output 1x32 or 1x10 softmax)."""
    from onnx import TensorProto, helper

    g = OnnxBuilder(seed)
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
