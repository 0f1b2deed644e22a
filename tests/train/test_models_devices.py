from __future__ import annotations

import json

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.train.config import ModelConfig
from k210tool.train.devices import choose_devices, cluster_workers, make_strategy
from k210tool.train.models.backbones import build_backbone, float32_copy

SMALL = {"input_size": 48, "width": 16, "embedding_size": 32, "bottlenecks": ((2, 16, 1, 2), (2, 32, 1, 2))}


def _kinds(model: object) -> set[str]:
    return {type(layer).__name__ for layer in model.layers}  # type: ignore[attr-defined]


def test_mobilefacenet_paper_and_kpu_forms() -> None:
    paper = build_backbone(ModelConfig(backbone="mobilefacenet", **SMALL))
    kpu = build_backbone(ModelConfig(backbone="mobilefacenet_kpu", **SMALL))
    assert "PReLU" in _kinds(paper) and "ZeroPadding2D" not in _kinds(paper)
    assert "PReLU" not in _kinds(kpu) and {"ReLU", "ZeroPadding2D"} <= _kinds(kpu)
    for m in (paper, kpu):
        assert m.output_shape == (None, 32) and m.layers[-1].name == "embedding"
        assert all(layer.momentum == pytest.approx(0.9) for layer in m.layers
                   if type(layer).__name__ == "BatchNormalization")
    # same trainable structure: the KPU form is the paper's network with other activations and padding
    assert kpu.count_params() == paper.count_params() - sum(
        int(np.prod(w.shape)) for layer in paper.layers if type(layer).__name__ == "PReLU" for w in layer.weights)


def test_expansion_scale_changes_the_width_of_the_bottlenecks() -> None:
    a = build_backbone(ModelConfig(backbone="mobilefacenet_kpu", expansion_scale=1.0, **SMALL))
    b = build_backbone(ModelConfig(backbone="mobilefacenet_kpu", expansion_scale=2.0, **SMALL))
    assert b.count_params() > a.count_params()


def test_first_block_residual_adds_a_shortcut_to_each_row_that_keeps_its_channels() -> None:
    from k210tool.train.models.mobilefacenet import build_mobilefacenet

    rows = ((2, 16, 2, 2), (2, 16, 3, 1), (2, 32, 2, 1))  # row 2 starts at stride 1 with equal channels
    adds = {flag: sum(type(layer).__name__ == "Add" for layer in build_mobilefacenet(
        input_size=32, width=16, embedding_size=16, bottlenecks=rows, first_block_residual=flag).layers)
        for flag in (True, False)}
    assert adds == {True: 1 + 3 + 1, False: 1 + 2 + 1}


@pytest.mark.parametrize("name, size", [("mobilenet_v1", 64), ("mobilenet_v2", 64), ("resnet50", 64)])
def test_keras_application_backbones_are_flat_embedding_models(name: str, size: int) -> None:
    m = build_backbone(ModelConfig(backbone=name, input_size=size, embedding_size=24, alpha=0.5))
    assert m.output_shape == (None, 24) and m.layers[-1].name == "embedding"
    assert not any(hasattr(layer, "layers") for layer in m.layers)  # no nested model: convert sees every layer
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    assert np.all(np.isfinite(m(x).numpy()))


def test_mixed_precision_backbone_exports_as_float32() -> None:
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    cfg = ModelConfig(backbone="mobilefacenet_kpu", **SMALL)
    mixed = build_backbone(cfg, "mixed_float16")
    assert k.mixed_precision.global_policy().name == "float32"  # not left set for the process
    assert any(layer.compute_dtype == "float16" for layer in mixed.layers)
    twin = float32_copy(mixed, cfg)
    assert all(layer.compute_dtype == "float32" for layer in twin.layers)
    x = np.random.default_rng(1).normal(size=(2, 48, 48, 3)).astype(np.float32)
    a, b = mixed(x, training=False).numpy().astype(np.float32), twin(x, training=False).numpy()
    assert np.abs(a - b).max() < 0.05 * (np.abs(b).max() + 1)
    plain = build_backbone(cfg)
    assert float32_copy(plain, cfg) is plain


@pytest.mark.parametrize("requested, gpus, tf_config, strategy, precision", [
    (("auto", "auto"), 0, None, "default", "float32"),
    (("auto", "auto"), 1, None, "one_device", "mixed_float16"),
    (("auto", "auto"), 4, None, "mirrored", "mixed_float16"),
    (("auto", "float32"), 4, None, "mirrored", "float32"),
    (("auto", "auto"), 2, {"cluster": {"worker": ["a:1", "b:1"]}}, "multi_worker", "mixed_float16"),
    (("mirrored", "auto"), 0, None, "mirrored", "float32"),
    (("default", "mixed_bfloat16"), 0, None, "default", "mixed_bfloat16"),
])
def test_device_choice(requested: tuple[str, str], gpus: int, tf_config: dict | None, strategy: str,
                       precision: str) -> None:
    d = choose_devices(*requested, gpus=gpus, tf_config=json.dumps(tf_config) if tf_config else None)
    assert (d.strategy, d.precision) == (strategy, precision)


def test_device_choice_notes_and_errors() -> None:
    assert choose_devices("mirrored", "mixed_float16", 0).notes  # both are legal on a CPU, but worth a warning
    with pytest.raises(InputError, match="at least 2 workers"):
        choose_devices("multi_worker", "auto", 0)
    with pytest.raises(InputError, match="TF_CONFIG"):
        cluster_workers("{not json")
    assert cluster_workers(json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]}})) == 3


def test_cpu_strategies_build_and_run() -> None:
    for name in ("default", "one_device", "mirrored"):
        strategy = make_strategy(choose_devices(name, "float32", 0))
        assert strategy.num_replicas_in_sync == 1
        with strategy.scope():
            import tensorflow as tf

            v = tf.Variable(1.0)
        assert float(strategy.run(lambda v=v: v * 2.0)) == 2.0  # type: ignore[arg-type]


def _dense_model(seed: int) -> object:
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.heads import MarginHead, build_training_model

    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    inp = k.Input((4, 4, 3), name="image")
    emb = k.layers.Dense(6, name="embedding")(k.layers.Flatten()(inp))
    return build_training_model(k.Model(inp, emb), MarginHead(3, "arcface", 8.0))


def test_gradient_accumulation_equals_one_large_batch() -> None:
    import tensorflow as tf

    from k210tool.tfutil import import_tf_keras
    from k210tool.train.loop import make_train_step

    k = import_tf_keras()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4, 4, 3)).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    weights = []
    for micro, accumulate in ((16, 1), (8, 2), (4, 4)):
        model = _dense_model(7)  # no BatchNorm: micro-batches and one batch see the same function
        opt = k.optimizers.SGD(0.5, momentum=0.9)
        step = make_train_step(model, opt, tf.distribute.get_strategy(), micro, accumulate, 16)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
        it = iter(ds)
        losses = [float(step(it)) for _ in range(3)]
        weights.append((model.get_weights(), losses))
    for w, losses in weights[1:]:
        np.testing.assert_allclose(losses, weights[0][1], rtol=1e-5)
        for a, b in zip(w, weights[0][0], strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)  # float32: weights near 80 differ by ~4e-6 relative
