"""TFLite -> Keras import: tf_keras models exported with k210tool's own exporter (and TFLite's converter
options users meet: float16 weights, a fixed batch of 2, PReLU spelled out), imported back and checked
against the TFLite interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_factory import predict, run_tflite, save_h5, tiny_backbone

from k210tool.compile.tflite import export_tflite
from k210tool.errors import ModelError
from k210tool.model.importers import import_tflite
from k210tool.model.load import load_model
from k210tool.tfutil import import_tf, import_tf_keras


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32)


def _assert_same(model: Any, data: bytes, x: np.ndarray) -> float:
    ref = run_tflite(data, x)
    got = predict(model, x)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), err
    return err


def randomize(model: Any, seed: int) -> Any:
    """Random weights everywhere (batch-norm variances positive, PReLU slopes of both signs)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if "moving_variance" in w.name:
                weights.append(rng.uniform(0.5, 2.0, shape))
            elif "alpha" in w.name:
                weights.append(rng.uniform(-0.5, 1.5, shape))
            else:
                weights.append(rng.normal(0.0, 0.3, shape))
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return model


def keras_zoo(size: int = 16, batch: int | None = None) -> Any:
    """One layer of each kind the importer maps, with random weights."""
    k = import_tf_keras()
    L = k.layers
    inp = k.Input((size, size, 3), batch_size=batch, name="image")
    x = L.PReLU(shared_axes=[1, 2])(L.BatchNormalization()(L.Conv2D(8, 3, 2, padding="same")(inp)))  # 'same' s2
    x = L.ReLU(max_value=6.0)(L.DepthwiseConv2D(3, padding="same")(x))
    y = L.Conv2D(8, 1, activation="relu")(x)
    x = L.Add()([x, L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(y))])
    x = L.Conv2D(12, 3, 2, padding="valid")(L.ZeroPadding2D(((1, 1), (1, 1)))(x))  # 4x4
    x = L.LeakyReLU(0.1)(x)
    a = L.MaxPooling2D(2, padding="same")(x)
    b = L.AveragePooling2D(3, 2, padding="same")(x)
    x = L.Concatenate()([a, L.Activation("sigmoid")(b)])
    g = L.GlobalAveragePooling2D()(x)
    f = L.Flatten()(x)  # 2x2x24: the NHWC order must survive
    x = L.Concatenate()([g, L.Dense(8, activation="tanh")(f)])
    x = L.BatchNormalization()(L.Dense(16)(x))
    return randomize(k.Model(inp, x), 0)


def _export(model: Any, size: int) -> bytes:
    return export_tflite(model, (size, size, 3))


def test_keras_layers_round_trip_through_tflite() -> None:
    model = keras_zoo()
    data = _export(model, 16)
    imported = import_tflite(data)
    _assert_same(imported, data, _images(4, 16))
    np.testing.assert_allclose(predict(imported, _images(2, 16, 1)), predict(model, _images(2, 16, 1)),
                               rtol=1e-4, atol=1e-4)
    kinds = {type(layer).__name__ for layer in imported.layers}
    assert {"Conv2D", "DepthwiseConv2D", "PReLU", "Add", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D",
            "Concatenate", "GlobalAveragePooling2D", "Dense", "Flatten", "ReLU", "LeakyReLU"} <= kinds
    stem = next(layer for layer in imported.layers if type(layer).__name__ == "Conv2D")
    assert stem.padding == "same" and stem.strides == (2, 2)  # TFLite SAME stays TF 'same' for the rewrite rule


def test_float16_weights_are_dequantized() -> None:
    tf = import_tf()
    model = keras_zoo()
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 16, 16, 3]))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    data = bytes(converter.convert())
    from tensorflow.lite.tools import flatbuffer_utils as fu

    from k210tool.model.importers.tflite import read_tflite

    raw = fu.read_model_from_bytearray(bytearray(data))
    assert "DEQUANTIZE" in {fu.opcode_to_name(raw, op.opcodeIndex) for op in raw.subgraphs[0].operators}
    assert "DEQUANTIZE" not in {op.kind for op in read_tflite(data).ops}
    _assert_same(import_tflite(data), data, _images(3, 16, 2))


def test_fixed_batch_of_two_becomes_a_free_batch() -> None:
    model = keras_zoo(batch=2)
    tf = import_tf()
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([2, 16, 16, 3]))
    data = bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    imported = import_tflite(data)
    assert imported.input_shape == (None, 16, 16, 3)
    _assert_same(imported, data, _images(5, 16, 3))
    # compare's reference runner feeds the fixed batch in chunks too (5 images: 2 + 2 + 1 padded)
    from k210tool.sim.nativerun import tflite_runner

    x = _images(5, 16, 3)
    np.testing.assert_allclose(tflite_runner(data)(x), predict(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["abs", "neg"])
def test_prelu_spelled_out_becomes_a_prelu_layer(form: str) -> None:
    """sirius-ai's MobileFaceNet writes PReLU as relu(x) + c * (x - |x|); others as relu(x) + c * relu(-x)."""
    tf = import_tf()
    rng = np.random.default_rng(4)
    w = tf.constant(rng.normal(0, 0.5, (3, 3, 3, 6)), tf.float32)
    c = tf.constant(rng.uniform(-1.0, 1.0, 6), tf.float32)

    def f(x: Any) -> Any:
        y = tf.nn.conv2d(x, w, 1, "SAME")
        neg = y - tf.abs(y) if form == "abs" else tf.nn.relu(-y)
        return tf.nn.relu(y) + c * neg

    fn = tf.function(f).get_concrete_function(tf.TensorSpec([1, 8, 8, 3]))
    data = bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert())
    imported = import_tflite(data)
    prelus = [layer for layer in imported.layers if type(layer).__name__ == "PReLU"]
    assert len(prelus) == 1 and [type(layer).__name__ for layer in imported.layers].count("Add") == 0
    expected = 2.0 * c.numpy() if form == "abs" else -c.numpy()
    np.testing.assert_array_equal(prelus[0].get_weights()[0].reshape(-1), expected)
    _assert_same(imported, data, _images(3, 8, 4))


def test_quantized_model_is_refused(tmp_path: Path) -> None:
    tf = import_tf()
    model = keras_zoo()
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 16, 16, 3]))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in _images(4, 16))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "int8.tflite"
    path.write_bytes(bytes(converter.convert()))
    with pytest.raises(ModelError, match="quantized.*float model is needed") as exc:
        load_model(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    tf = import_tf()
    fn = tf.function(lambda x: tf.math.sin(x) * 2.0).get_concrete_function(tf.TensorSpec([1, 8, 8, 3]))
    path = tmp_path / "sin.tflite"
    path.write_bytes(bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()))
    with pytest.raises(ModelError, match="TFLite op SIN .* is not supported"):
        load_model(path)


def test_load_model_imports_and_the_rewrite_sees_what_it_sees_in_the_h5(tmp_path: Path) -> None:
    """The same network as .h5 and as .tflite: same layer kinds in the graph, same rewrite changes."""
    from k210tool.model.rewrite import RewriteOptions, rewrite_loaded

    backbone = tiny_backbone()
    randomize(backbone, 5)
    h5 = save_h5(backbone, tmp_path / "face.h5")
    tfl = tmp_path / "face.tflite"
    tfl.write_bytes(_export(backbone, 32))
    a, b = load_model(h5), load_model(tfl)
    assert b.format == "tflite" and b.is_keras and b.graph is not None and b.input_shape == (32, 32, 3)
    np.testing.assert_allclose(predict(b.model, _images(2, 32)), predict(a.model, _images(2, 32)), rtol=1e-4,
                               atol=1e-4)
    kinds = sorted(n.class_name for n in b.graph if n.class_name not in ("BatchNormalization",))
    assert kinds == sorted(n.class_name for n in a.graph if n.class_name != "BatchNormalization")
    approximate = RewriteOptions(prelu="relu", approximate=("symmetric-stride2",))
    rules_a = [c.rule for c in rewrite_loaded(a, approximate).changes]
    rules_b = [c.rule for c in rewrite_loaded(b, approximate).changes]
    assert rules_a.count("prelu") == rules_b.count("prelu") == 4
    assert rules_a.count("symmetric-stride2") == rules_b.count("symmetric-stride2") == 2


def test_softmax_classifier_is_cut(tmp_path: Path) -> None:
    k = import_tf_keras()
    inp = k.Input((8, 8, 3))
    emb = k.layers.Dense(6)(k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3)(inp)))
    out = k.layers.Dense(30, activation="softmax")(emb)
    path = tmp_path / "cls.tflite"
    path.write_bytes(_export(randomize(k.Model(inp, out), 6), 8))
    lm = load_model(path)
    assert lm.head_cut is not None and lm.output_shape == (6,)
    assert lm.head_cut.removed_classes == ["Dense", "Softmax"]


def test_check_cli_reads_a_tflite_as_it_reads_the_h5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from helpers import run_cli

    k = import_tf_keras()
    L = k.layers
    inp = k.Input((32, 32, 3))
    x = L.PReLU(shared_axes=[1, 2])(L.Conv2D(16, 3, 2, padding="same")(inp))  # stride-2 'same': CPU Pad+Slice
    x = L.ReLU()(L.DepthwiseConv2D(3, padding="same")(x))
    x = L.Add()([x, L.Conv2D(16, 1)(x)])
    x = L.DepthwiseConv2D(16)(x)  # global depthwise 16x16: the KPU runs 1x1/3x3 only
    x = L.Flatten()(L.Conv2D(8, 1)(x))
    model = randomize(k.Model(inp, x), 7)
    h5 = save_h5(model, tmp_path / "m.h5")
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(_export(model, 32))
    reports = []
    for path in (h5, tfl):
        run = run_cli(capsys, "check", path, "--json")
        assert run.code == 0, run.err
        reports.append(json.loads(run.out))
    a, b = (_placements_by_position(r) for r in reports)
    assert b == a
    for key in ("kpu_layers", "kpu_uploads", "cpu_ops", "memory_estimate", "kmodel_estimate"):
        assert reports[1][key] == reports[0][key], key
    assert reports[1]["cpu_ops"]  # the PReLU and the 'same' stride-2 conv leave the KPU: something to compare


def _placements_by_position(report: dict) -> list[dict]:
    """check's per-layer predictions with layer names replaced by positions (the two files name layers apart)."""
    position = {p["layer"]: i for i, p in enumerate(report["layers"])}
    return [{k: position.get(v, v) if k == "fused_into" else v for k, v in p.items() if k != "layer"}
            for p in report["layers"]]


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_tflite_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    data = bytearray(_export(keras_zoo(), 16))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # the flatbuffer's tables and offsets are in the first bytes after the header
        rng = np.random.default_rng(0)
        for i in rng.integers(8, 2000, 200):
            data[i] ^= 0xFF
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as exc:
        load_model(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
