"""Loading what users bring: legacy tf.keras .h5 with training heads, Keras 3, tflite, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import mobilenetv2_dense, predict, save_h5, tiny_backbone, with_arcface

from k210tool.errors import InputError, ModelError
from k210tool.model.load import LoadOptions, load_model
from k210tool.tfutil import import_keras3, import_tf_keras


@pytest.fixture(scope="module")
def arcface_h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    bb = tiny_backbone()
    path = save_h5(with_arcface(bb), tmp_path_factory.mktemp("arc") / "train_model.h5")
    return path, bb


def test_arcface_head_with_unknown_class_is_cut_and_weights_survive(arcface_h5) -> None:
    path, backbone = arcface_h5
    lm = load_model(path)
    assert lm.head_cut is not None
    assert lm.head_cut.output == "embedding"
    assert "arcface" in lm.head_cut.removed_layers and lm.head_cut.removed_inputs == ["label"]
    assert lm.unknown_classes == ["ArcFace"]
    x = np.random.default_rng(0).random((3, 32, 32, 3), np.float32)
    np.testing.assert_allclose(predict(lm.model, x), predict(backbone, x), rtol=1e-5, atol=1e-5)


def test_nested_mobilenetv2_with_softmax_classifier(tmp_path: Path) -> None:
    k = import_tf_keras()
    m = mobilenetv2_dense()
    path = save_h5(m, tmp_path / "mnv2.h5")
    lm = load_model(path)
    assert lm.head_cut is not None and lm.head_cut.output == "embedding_bn"
    assert lm.head_cut.removed_layers == ["classifier"]
    ref = k.Model(m.input, m.get_layer("embedding_bn").output)
    x = np.random.default_rng(1).random((2, 64, 64, 3), np.float32)
    np.testing.assert_allclose(predict(lm.model, x), predict(ref, x), rtol=1e-4, atol=1e-5)
    # the nested backbone was inlined: its layers are nodes of the graph
    assert "Conv1" in lm.graph.nodes


def test_trailing_linear_dense_embedding_is_kept_even_when_wider_than_its_input(tmp_path: Path) -> None:
    """GAP(16) -> Dense(128, "embedding"): the Dense produces the embedding (no softmax after it)."""
    k = import_tf_keras()
    inp = k.Input((16, 16, 3))
    x = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(16, 3)(inp))
    path = save_h5(k.Model(inp, k.layers.Dense(128, name="embedding")(x)), tmp_path / "wide.h5")
    lm = load_model(path)
    assert lm.head_cut is None and lm.output_shape == (128,)


def test_softmax_classifier_cut_lists_exactly_the_logits_and_the_softmax(tmp_path: Path) -> None:
    k = import_tf_keras()
    L = k.layers
    inp = k.Input((16, 16, 3))
    x = L.Dense(8, name="embedding")(L.GlobalAveragePooling2D(name="gap")(L.Conv2D(16, 3)(inp)))
    x = L.Softmax(name="probs")(L.Dense(40, name="logits")(L.BatchNormalization(name="emb_bn")(x)))
    lm = load_model(save_h5(k.Model(inp, x), tmp_path / "cls.h5"))
    assert lm.head_cut is not None and lm.output_shape == (8,)
    assert lm.head_cut.output == "emb_bn" and lm.head_cut.removed_layers == ["logits", "probs"]
    assert "removed logits, probs" in lm.head_cut.describe()


def test_output_layer_and_keep_head(tmp_path: Path) -> None:
    path = save_h5(mobilenetv2_dense(), tmp_path / "mnv2.h5")
    assert load_model(path, LoadOptions(output_layer="embedding")).output_shape == (32,)
    assert load_model(path, LoadOptions(keep_head=True)).output_shape == (50,)
    with pytest.raises(ModelError, match="embeding") as exc:
        load_model(path, LoadOptions(output_layer="embeding"))
    assert "embedding" in str(exc.value)


def test_several_outputs_need_a_choice(tmp_path: Path) -> None:
    k = import_tf_keras()
    inp = k.Input((16, 16, 3))
    a = k.layers.Conv2D(4, 3, name="a")(inp)
    b = k.layers.Conv2D(4, 3, name="b")(inp)
    path = save_h5(k.Model(inp, [a, b]), tmp_path / "two.h5")
    with pytest.raises(ModelError, match="2 outputs"):
        load_model(path)
    assert load_model(path, LoadOptions(output_layer="b")).output_shape == (14, 14, 4)


def test_non_image_input_is_refused(tmp_path: Path) -> None:
    k = import_tf_keras()
    inp = k.Input((128,))
    path = save_h5(k.Model(inp, k.layers.Dense(4)(inp)), tmp_path / "mlp.h5")
    with pytest.raises(ModelError, match="image"):
        load_model(path)


def test_open_input_size_needs_input_size(tmp_path: Path) -> None:
    k = import_tf_keras()
    inp = k.Input((None, None, 3))
    x = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3)(inp))
    path = save_h5(k.Model(inp, x), tmp_path / "open.h5")
    with pytest.raises(ModelError, match="--input-size"):
        load_model(path)
    assert load_model(path, LoadOptions(input_size=(40, 48))).input_shape == (40, 48, 3)


def test_unknown_class_inside_the_backbone_needs_custom_objects(tmp_path: Path) -> None:
    k = import_tf_keras()

    class Scale(k.layers.Layer):
        def call(self, x):  # type: ignore[no-untyped-def]
            return x * 2.0

    inp = k.Input((8, 8, 3))
    x = k.layers.Flatten(name="emb")(Scale(name="scale")(k.layers.Conv2D(2, 3)(inp)))
    path = save_h5(k.Model(inp, x), tmp_path / "custom.h5")
    with pytest.raises(ModelError, match="custom-objects"):
        load_model(path)
    objects = tmp_path / "objects.py"
    objects.write_text(
        "import tf_keras as k\n"
        "class Scale(k.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 2.0\n"
    )
    lm = load_model(path, LoadOptions(custom_objects=objects))
    assert lm.output_shape == (72,)


def test_keras3_file_with_unknown_head_class(tmp_path: Path) -> None:
    keras = import_keras3()

    @keras.saving.register_keras_serializable(package="test")
    class MarginHead(keras.layers.Layer):
        def build(self, shape):  # type: ignore[no-untyped-def]
            self.w = self.add_weight(shape=(shape[0][-1], 5), name="w")

        def call(self, inputs):  # type: ignore[no-untyped-def]
            return keras.ops.matmul(inputs[0], self.w)

    img = keras.Input((16, 16, 3))
    label = keras.Input((), dtype="int32")
    emb = keras.layers.Flatten(name="emb")(keras.layers.Conv2D(2, 3, strides=2)(img))
    model = keras.Model([img, label], MarginHead(name="head")([emb, label]))
    path = tmp_path / "m.keras"
    model.save(path)
    keras.saving.get_custom_objects().clear()  # a user's machine does not have the class
    lm = load_model(path)
    assert lm.flavour == "keras3" and lm.head_cut is not None and lm.head_cut.output == "emb"
    x = np.random.default_rng(2).random((1, 16, 16, 3), np.float32)
    ref = keras.Model(model.inputs[0], model.get_layer("emb").output)
    np.testing.assert_allclose(predict(lm.model, x), predict(ref, x), rtol=1e-5, atol=1e-6)


def test_tflite_is_imported_into_keras(tmp_path: Path) -> None:
    from k210tool.compile.tflite import export_tflite

    bb = tiny_backbone()
    path = tmp_path / "m.tflite"
    path.write_bytes(export_tflite(bb, (32, 32, 3)))
    lm = load_model(path)
    assert lm.format == "tflite" and lm.flavour == "tf_keras" and lm.input_shape == (32, 32, 3) and lm.raw is None
    x = np.random.default_rng(3).random((2, 32, 32, 3), np.float32)
    np.testing.assert_allclose(predict(lm.model, x), predict(bb, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["missing", "empty", "random", "truncated", "weights_only", "dir"])
def test_bad_files_are_clear_errors(tmp_path: Path, arcface_h5, case: str) -> None:
    path = tmp_path / "bad.h5"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    elif case == "truncated":
        data = arcface_h5[0].read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case == "weights_only":
        tiny_backbone().save_weights(str(path))
    elif case == "dir":
        path.mkdir()
    with pytest.raises(InputError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 400
    expected = {"missing": "does not exist", "empty": "empty", "random": "not a model", "truncated": "truncated",
                "weights_only": "without a model", "dir": "directory"}[case]
    assert expected in msg


def _lambda_model(k: object, marker: Path, where: str) -> object:
    """A model whose Lambda layer leaves ``marker`` on disk when its code runs (at build or call time)."""
    code = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    inp = k.Input((16, 16, 3))
    x = k.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    if where == "backbone":
        x = k.layers.Lambda(eval(code), name="code")(x)  # noqa: S307 - the test's own code
    x = k.layers.GlobalAveragePooling2D()(x)
    x = k.layers.Dense(8, name="embedding")(x)
    if where == "head":
        x = k.layers.Lambda(eval(code), name="code")(x)  # noqa: S307 - the test's own code
    return k.Model(inp, x)


@pytest.mark.parametrize("flavour", ["h5", "keras"])
@pytest.mark.parametrize("where", ["backbone", "head"])
def test_lambda_code_never_runs_without_trust(tmp_path: Path, flavour: str, where: str) -> None:
    k = import_tf_keras() if flavour == "h5" else import_keras3()
    marker = tmp_path / "ran"
    model = _lambda_model(k, marker, where)
    path = tmp_path / f"m.{flavour}"
    if flavour == "h5":
        save_h5(model, path)
    else:
        model.save(path)
    marker.unlink()  # building the model above ran the code once
    if where == "backbone":
        with pytest.raises(ModelError, match="Lambda layer.*runs Python code") as exc:
            load_model(path)
        assert "--trust-lambda" in exc.value.hint
    else:  # a trailing Lambda (an L2 norm, say) is cut with the head, unread
        lm = load_model(path)
        assert lm.head_cut is not None and "code" in lm.head_cut.removed_layers
    assert not marker.exists(), "the Lambda's code ran although --trust-lambda was not given"
    lm = load_model(path, LoadOptions(trust_lambda=True, keep_head=True))
    lm.model(np.zeros((1, 16, 16, 3), np.float32))
    assert marker.exists()
