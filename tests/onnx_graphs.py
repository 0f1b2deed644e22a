"""Build small ONNX graphs with seeded NumPy weights (no TensorFlow, no PyTorch): the tests' ONNX files.

:class:`OnnxBuilder` keeps the node list and initializers; its helpers write the layers insightface-style
face models are made of (Conv, BatchNormalization, PRelu with (C, 1, 1) slopes, Gemm...).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class OnnxBuilder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any, prefix: str = "w", dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, pads: list[int] | None, group: int = 1,
             bias: bool = True, **attrs: object) -> str:
        fan_in = (cin // group) * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        inputs = [x, self.const(w)]
        if bias:
            inputs.append(self.const(self.rng.normal(0.05, 0.1, (cout,)), "b"))  # a folded batch norm's shift
        if pads is not None:
            attrs["pads"] = pads
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride] * 2, group=group, **attrs)

    def bn(self, x: str, c: int, epsilon: float = 2e-5) -> str:
        r = self.rng
        ins = [self.const(r.uniform(0.5, 1.5, c)), self.const(r.normal(0, 0.1, c)), self.const(r.normal(0, 0.1, c)),
               self.const(r.uniform(0.5, 2.0, c))]
        return self.node("BatchNormalization", [x, *ins], epsilon=epsilon)

    def act(self, x: str, kind: str, channels: int, slopes: tuple[float, float] = (0.05, 0.4)) -> str:
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "leaky":
            return self.node("LeakyRelu", [x], alpha=0.1)
        if kind == "relu6":
            return self.node("Clip", [x, self.const(np.float32(0.0), "lo"), self.const(np.float32(6.0), "hi")])
        if kind == "prelu":  # insightface's PReLU: one slope per channel, shape (C, 1, 1)
            slope = self.rng.uniform(*slopes, (channels, 1, 1))
            return self.node("PRelu", [x, self.const(slope, "slope")])
        raise ValueError(kind)

    def gemm(self, x: str, n_in: int, n_out: int) -> str:
        w = self.rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_out, n_in))  # PyTorch Linear: (out, in), transB=1
        return self.node("Gemm", [x, self.const(w), self.const(self.rng.normal(0, 0.1, n_out), "b")], transB=1)

    def model(self, inputs: list[tuple[str, list[Any]]], output: str, out_shape: list[Any], opset: int = 13,
              infer_shapes: bool = True) -> bytes:
        from onnx import TensorProto, helper, shape_inference

        graph = helper.make_graph(
            self.nodes, "test_graph",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="k210tool-tests")
        model.ir_version = 7
        if infer_shapes:
            model = shape_inference.infer_shapes(model)
        return model.SerializeToString()


def run_onnxruntime(data: bytes, x: np.ndarray) -> np.ndarray:
    """The ONNX model's output on ``x`` (its own layout), computed by onnxruntime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    if inp.shape[0] == 1:  # a fixed batch of one: image by image
        return np.concatenate([session.run(None, {inp.name: x[i:i + 1].astype(np.float32)})[0] for i in range(len(x))])
    return np.asarray(session.run(None, {inp.name: x.astype(np.float32)})[0])
