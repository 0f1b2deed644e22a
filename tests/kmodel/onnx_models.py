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


# Tails of common backbones that leave CPU ops after nncase 1.9 (issue 15): name -> builder.
def tiny_pools(size: int, variant: str, seed: int = 1) -> bytes:
    """ONNX bytes of a small conv net ending in the pooling ``variant`` names (input 1x3xSxS, output 1xD).

    ``gap7``: CPU max pool 3x3/2 (padded, partial windows), average pool 3x3/1 without the padding in its
    count, a width concat (nncase writes each part as a strided view), a global average pool over 7x7
    (mean over a block that is not a power of two). ``gmax4``: a height concat, a global max pool over 4x4,
    a mean over height and width kept as dims (ReduceMean), summed. Needs ``size`` 28 (gap7) or 16 (gmax4)."""
    g = OnnxBuilder(seed)
    x = g.node("Relu", [g.conv("image", 3, 8, 3, 1, [1, 1, 1, 1])])
    if variant == "gap7":
        x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 14x14
        x = g.node("Relu", [g.conv(x, 8, 16, 3, 1, [1, 1, 1, 1])])
        x = g.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                   count_include_pad=0)  # 7x7
        left = g.node("Relu", [g.conv(x, 16, 8, 1, 1, [0, 0, 0, 0])])
        right = g.node("Relu", [g.conv(x, 16, 8, 3, 1, [1, 1, 1, 1])])
        x = g.node("Concat", [left, right], axis=3)  # 7x14
        x = g.conv(x, 8, 24, 1, 1, [0, 0, 0, 0])
        x = g.node("Flatten", [g.node("GlobalAveragePool", [g.node("Slice", [x, g.const(np.array([0]), "s", np.int64),
                                                                              g.const(np.array([7]), "e", np.int64),
                                                                              g.const(np.array([3]), "a", np.int64)])])])
        out_dim = 24
    elif variant == "gmax4":
        top = g.node("Relu", [g.conv(x, 8, 8, 3, 2, [1, 1, 1, 1])])  # 8x8
        bottom = g.node("Relu", [g.conv(x, 8, 8, 1, 2, [0, 0, 0, 0])])
        x = g.node("Concat", [top, bottom], axis=2)  # 16x8
        x = g.node("Relu", [g.conv(x, 8, 16, 3, 2, [1, 1, 1, 1])])  # 8x4
        x = g.node("MaxPool", [x], kernel_shape=[2, 1], strides=[2, 1])  # 4x4
        a = g.node("Flatten", [g.node("GlobalMaxPool", [x])])
        b = g.node("Flatten", [g.node("ReduceMean", [x], axes=[2, 3], keepdims=1)])
        x = g.node("Add", [a, b])
        out_dim = 16
    else:
        raise ValueError(variant)
    return g.model([("image", [1, 3, size, size])], x, [1, out_dim], opset=11)
