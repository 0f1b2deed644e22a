"""ONNX -> Keras import: insightface-style graphs built with onnx.helper, checked against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_graphs import OnnxBuilder, run_onnxruntime

from k210tool.errors import ModelError
from k210tool.model.importers import import_onnx
from k210tool.model.load import LoadOptions, load_model

SLOPES = (-0.5, 1.5)  # negative and > 1 slopes, like trained face models (a sign error cannot hide)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32)


def _assert_same(model, data: bytes, x_nhwc: np.ndarray, nhwc_input: bool = False) -> float:
    """Keras (NHWC) vs onnxruntime (the model's own layout) on the same images; returns the max abs error."""
    ref = run_onnxruntime(data, x_nhwc if nhwc_input else x_nhwc.transpose(0, 3, 1, 2))
    got = np.asarray(model.predict(x_nhwc, verbose=0))
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), err
    return err


def insightface_like(seed: int = 0, size: int = 16, gemm_from: str = "flatten") -> bytes:
    """Conv+BN+PRelu stem, depthwise stride-2 with symmetric pads on an even size, residual Add, a
    SAME_UPPER conv, pools, explicit Pad, Concat, BN -> Flatten of a 4x4 map -> Gemm -> BatchNormalization."""
    g = OnnxBuilder(seed)
    x = g.act(g.bn(g.conv("data", 3, 8, 3, 1, [1, 1, 1, 1], bias=False), 8), "prelu", 8, SLOPES)
    x = g.act(g.bn(g.conv(x, 8, 8, 3, 2, [1, 1, 1, 1], group=8, bias=False), 8), "prelu", 8, SLOPES)  # 8x8
    y = g.act(g.conv(x, 8, 8, 1, 1, [0, 0, 0, 0]), "relu6", 8)
    y = g.bn(g.conv(y, 8, 8, 3, 1, [1, 1, 1, 1]), 8)
    x = g.node("Add", [x, y])
    x = g.act(g.conv(x, 8, 12, 3, 1, None, auto_pad="SAME_UPPER"), "leaky", 12)
    a = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])  # 4x4
    p = g.node("Pad", [x, g.const(np.array([0, 0, 1, 1, 0, 0, 0, 0]), "pads", np.int64)])  # 9x9, top/left only
    b = g.node("AveragePool", [p], kernel_shape=[3, 3], strides=[2, 2])  # 4x4
    c = g.node("AveragePool", [a], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])  # excludes padding
    x = g.node("Concat", [a, b, c], axis=1)  # 36 channels
    x = g.node("Relu", [g.bn(x, 36)])
    if gemm_from == "flatten":
        x = g.node("Flatten", [x], axis=1)  # (N, 36*4*4), channels first
    else:  # PyTorch's x.view(x.size(0), -1)
        shape = g.node("Shape", [x])
        n = g.node("Unsqueeze", [g.node("Gather", [shape, g.const(np.array(0), "i", np.int64)], axis=0),
                                 g.const(np.array([0]), "ax", np.int64)])
        x = g.node("Reshape", [x, g.node("Concat", [n, g.const(np.array([-1]), "m", np.int64)], axis=0)])
    x = g.node("Dropout", [x])
    x = g.bn(g.gemm(x, 36 * 16, 24), 24)  # insightface ends with a 1-D BatchNormalization of the features
    return g.model([("data", ["N", 3, size, size])], x, ["N", 24])


@pytest.mark.parametrize("gemm_from", ["flatten", "shape_arithmetic"])
def test_insightface_like_graph_matches_onnxruntime(gemm_from: str) -> None:
    data = insightface_like(gemm_from=gemm_from)
    model = import_onnx(data)
    _assert_same(model, data, _images(4, 16))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Conv2D", "DepthwiseConv2D", "PReLU", "BatchNormalization", "Add", "ZeroPadding2D", "Dense",
            "Flatten", "Concatenate", "MaxPooling2D", "AveragePooling2D"} <= kinds
    assert "Permute" not in kinds  # the flatten order went into the Dense rows, not into a transpose
    depthwise = next(layer for layer in model.layers if type(layer).__name__ == "DepthwiseConv2D")
    assert depthwise.padding == "valid" and depthwise.strides == (2, 2)  # after a symmetric ZeroPadding2D


def test_flatten_read_by_other_ops_keeps_the_channel_first_order() -> None:
    g = OnnxBuilder(1)
    x = g.act(g.conv("data", 3, 6, 3, 2, [1, 1, 1, 1]), "prelu", 6, SLOPES)  # 6 x 4 x 4
    x = g.node("Flatten", [x], axis=1)
    x = g.node("Mul", [x, g.const(g.rng.uniform(0.5, 2.0, 96), "scale")])  # per-feature, in NCHW order
    data = g.model([("data", [1, 3, 8, 8])], x, [1, 96])
    model = import_onnx(data)
    _assert_same(model, data, _images(2, 8, 1))
    assert "Permute" in {type(layer).__name__ for layer in model.layers}


def test_mobilefacenet_tail_gap_matmul_prelu_and_nhwc_input() -> None:
    """NHWC input through Transpose, GlobalAveragePool, Reshape to (N, C), MatMul + Add, PRelu on features."""
    g = OnnxBuilder(2)
    x = g.node("Transpose", ["img"], perm=[0, 3, 1, 2])
    x = g.act(g.conv(x, 3, 16, 3, 2, [0, 0, 1, 1]), "relu", 16)  # TF 'same' on an even size: after only
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Reshape", [x, g.const(np.array([1, 16]), "shape", np.int64)])
    x = g.node("MatMul", [x, g.const(g.rng.normal(0, 0.3, (16, 10)))])
    x = g.node("Add", [x, g.const(g.rng.normal(0, 0.1, 10), "bias")])
    x = g.node("PRelu", [x, g.const(g.rng.uniform(*SLOPES, 10), "slope")])
    data = g.model([("img", [1, 12, 12, 3])], x, [1, 10], opset=11)
    model = import_onnx(data)
    _assert_same(model, data, _images(3, 12, 2), nhwc_input=True)
    conv = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert conv.padding == "same"  # pads (0,0,1,1) at stride 2 on 12x12 are exactly TensorFlow's


def test_squeeze_excitation_block_broadcasts_per_channel() -> None:
    g = OnnxBuilder(11)
    x = g.node("Div", [g.node("Sub", ["data", g.const(0.5, "mean")]), g.const(0.25, "std")])  # mxnet-style scalars
    x = g.act(g.conv(x, 3, 8, 3, 1, [1, 1, 1, 1]), "prelu", 8, SLOPES)
    s = g.node("GlobalAveragePool", [x])
    s = g.node("Sigmoid", [g.conv(g.node("Relu", [g.conv(s, 8, 4, 1, 1, [0, 0, 0, 0])]), 4, 8, 1, 1, [0, 0, 0, 0])])
    s = g.node("Sub", [g.const(1.5, "one"), s])  # a constant minus a tensor
    x = g.node("Add", [g.node("Mul", [x, s]), x])
    x = g.gemm(g.node("Flatten", [x]), 8 * 6 * 6, 5)
    data = g.model([("data", ["N", 3, 6, 6])], x, ["N", 5])
    _assert_same(import_onnx(data), data, _images(3, 6, 11))


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_and_reduce_mean_without_keepdims(opset: int) -> None:
    g = OnnxBuilder(12)

    def axes(node: str, x: str, values: list[int]) -> str:  # attribute before opset 13, input from 13 on
        if opset < 13:
            return g.node(node, [x], axes=values)
        return g.node(node, [x, g.const(np.array(values), "axes", np.int64)])

    x = g.act(g.conv("data", 3, 8, 3, 2, [1, 1, 1, 1]), "prelu", 8, SLOPES)
    v = axes("Squeeze", g.node("GlobalAveragePool", [x]), [2, 3])  # (N, 8)
    m = g.node("ReduceMean", [x], axes=[2, 3], keepdims=0)  # (N, 8)
    v = axes("Unsqueeze", g.node("Add", [v, m]), [2, 3])  # (N, 8, 1, 1)
    v = g.node("Flatten", [g.conv(v, 8, 6, 1, 1, [0, 0, 0, 0])])
    data = g.model([("data", ["N", 3, 8, 8])], v, ["N", 6], opset=opset)
    _assert_same(import_onnx(data), data, _images(3, 8, 12))


def test_image_output_is_given_back_in_nchw() -> None:
    g = OnnxBuilder(3)
    x = g.node("Sigmoid", [g.conv("data", 3, 4, 3, 1, [1, 1, 1, 1])])
    data = g.model([("data", [1, 3, 6, 6])], x, [1, 4, 6, 6])
    _assert_same(import_onnx(data), data, _images(2, 6, 3))


def test_tiny_mobilefacenet_of_the_kmodel_tests_imports_exactly() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmodel"))
    from onnx_models import tiny_mobilefacenet

    for activation, same in (("prelu", True), ("relu6", False)):
        data = tiny_mobilefacenet(32, activation, same)
        _assert_same(import_onnx(data), data, _images(2, 32, 4))


def test_load_model_gives_a_keras_model_with_the_onnx_format(tmp_path: Path) -> None:
    path = tmp_path / "face.onnx"
    path.write_bytes(insightface_like(seed=5))
    lm = load_model(path)
    assert lm.format == "onnx" and lm.is_keras and lm.graph is not None and lm.input_layout == "NHWC"
    assert lm.input_shape == (16, 16, 3) and lm.output_shape == (24,) and lm.head_cut is None
    _assert_same(lm.model, path.read_bytes(), _images(2, 16, 5))
    assert sum(n.class_name == "PReLU" for n in lm.graph) == 2


def test_softmax_classifier_is_cut_like_a_keras_head(tmp_path: Path) -> None:
    g = OnnxBuilder(6)
    x = g.node("Flatten", [g.node("GlobalAveragePool", [g.conv("data", 3, 8, 3, 1, [1, 1, 1, 1])])])
    emb = g.gemm(x, 8, 6)
    logits = g.gemm(emb, 6, 20)
    x = g.node("Softmax", [logits], axis=1)
    path = tmp_path / "cls.onnx"
    path.write_bytes(g.model([("data", [1, 3, 8, 8])], x, [1, 20]))
    lm = load_model(path)
    assert lm.head_cut is not None and lm.output_shape == (6,)
    assert lm.head_cut.output == emb and lm.head_cut.removed_layers == [logits, x]


def test_dynamic_input_size_needs_input_size(tmp_path: Path) -> None:
    g = OnnxBuilder(7)
    x = g.node("Flatten", [g.node("GlobalAveragePool", [g.conv("data", 3, 4, 3, 1, [1, 1, 1, 1])])])
    data = g.model([("data", ["N", 3, "H", "W"])], x, ["N", 4])
    path = tmp_path / "dyn.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError, match="input size is not fixed") as exc:
        load_model(path)
    assert "--input-size" in str(exc.value)
    lm = load_model(path, LoadOptions(input_size=(10, 10)))
    assert lm.input_shape == (10, 10, 3)
    _assert_same(lm.model, data, _images(2, 10, 7))


def _one_op(op: str, *extra_inputs: object, **attrs: object) -> bytes:
    g = OnnxBuilder(8)
    x = g.conv("data", 3, 4, 3, 1, [1, 1, 1, 1])
    ins = [x] + [g.const(np.asarray(v, np.float32), "c") for v in extra_inputs]
    return g.model([("data", [1, 3, 6, 6])], g.node(op, ins, **attrs), [1, 4, 6, 6], infer_shapes=False)


@pytest.mark.parametrize("case, needle", [
    ("op", "ONNX op Erf"),
    ("group", "grouped convolution (2 groups)"),
    ("clip", "Clip"),
    ("reflect", "only zero padding"),
])
def test_unsupported_ops_are_one_line_errors_naming_the_op(tmp_path: Path, case: str, needle: str) -> None:
    if case == "op":
        data = _one_op("Erf")
    elif case == "group":
        g = OnnxBuilder(9)
        data = g.model([("data", [1, 4, 6, 6])], g.conv("data", 4, 4, 3, 1, [1, 1, 1, 1], group=2), [1, 4, 6, 6])
    elif case == "clip":
        data = _one_op("Clip", -1.0, 1.0)
    else:
        g = OnnxBuilder(10)
        pads = g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]), "pads", np.int64)
        data = g.model([("data", [1, 3, 6, 6])], g.node("Pad", ["data", pads], mode="reflect"), [1, 3, 8, 8])
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError) as exc:
        load_model(path)
    message = str(exc.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_damaged_onnx_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(insightface_like()[:5000])
    with pytest.raises(ModelError, match="not a valid ONNX model") as exc:
        load_model(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
