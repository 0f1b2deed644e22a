from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from k210tool.train.heads import MarginHead, build_training_model, custom_objects, margin_target


def _target(cos: np.ndarray, m1: float, m2: float, m3: float) -> np.ndarray:
    return np.asarray(margin_target(np.asarray(cos, np.float32), m1, m2, m3))


def test_arcface_is_cos_theta_plus_m_then_insightface_fallback() -> None:
    theta = np.linspace(0.01, math.pi - 0.01, 200)
    got = _target(np.cos(theta), 1.0, 0.5, 0.0)
    expected = np.where(theta + 0.5 <= math.pi, np.cos(theta + 0.5), np.cos(theta) - 0.5 * math.sin(0.5))
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_cosface_subtracts_m3_everywhere() -> None:
    cos = np.linspace(-0.99, 0.99, 50)
    np.testing.assert_allclose(_target(cos, 1.0, 0.0, 0.35), cos - 0.35, atol=1e-5)


def test_sphereface_multiplies_the_angle() -> None:
    theta = np.linspace(0.01, math.pi / 1.35 - 0.01, 50)
    np.testing.assert_allclose(_target(np.cos(theta), 1.35, 0.0, 0.0), np.cos(1.35 * theta), atol=2e-4)


@pytest.mark.parametrize("m", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (1.35, 0.0, 0.0), (1.0, 0.3, 0.2), (1.2, 0.4, 0.1)])
def test_target_logit_never_increases_with_the_angle(m: tuple[float, float, float]) -> None:
    # the reason for the theta + m > pi handling: a larger angle must never be rewarded
    theta = np.linspace(0.0, math.pi, 2001)
    t = _target(np.cos(theta), *m)
    assert np.all(np.diff(t) <= 1e-5)
    assert np.all(t <= np.cos(theta) + 1e-5)  # a margin only ever makes the target harder


def _head(kind: str, classes: int = 5, dim: int = 8, scale: float = 16.0) -> MarginHead:
    head = MarginHead(classes, kind, scale)
    head.build([(None, dim), (None,)])
    return head


def test_logits_are_scaled_cosines_with_the_margin_on_the_true_class_only() -> None:
    rng = np.random.default_rng(0)
    head = _head("arcface")
    emb = rng.normal(size=(6, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 0], np.int32)
    w = head.kernel.numpy()
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    logits = head([emb, labels]).numpy()
    onehot = np.eye(5, dtype=bool)[labels]
    np.testing.assert_allclose(logits[~onehot], 16.0 * cos[~onehot], atol=1e-4)
    np.testing.assert_allclose(logits[onehot], 16.0 * _target(cos[onehot], 1.0, 0.5, 0.0), atol=1e-3)


def test_softmax_is_the_plain_product_and_switching_changes_logits_in_place() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(1)
    head = _head("softmax")
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3], np.int32)
    run = tf.function(lambda e, y: head([e, y]))
    np.testing.assert_allclose(run(emb, labels).numpy(), emb @ head.kernel.numpy(), rtol=1e-5, atol=1e-5)
    head.set_kind("cosface", 30.0)
    after = run(emb, labels).numpy()  # same traced function: the margins are variables
    w = head.kernel.numpy()
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    onehot = np.eye(5, dtype=bool)[labels]
    np.testing.assert_allclose(after, 30.0 * np.where(onehot, cos - 0.35, cos), atol=1e-3)
    assert head.get_config()["kind"] == "cosface" and head.get_config()["m3"] == pytest.approx(0.35)


def test_sync_from_weights_recovers_the_kind_after_a_restore() -> None:
    head = _head("softmax")
    head.margin_params.assign([1.0, 64.0, 1.0, 0.5, 0.0])  # what restoring an ArcFace checkpoint does
    head.sync_from_weights()
    assert (head.kind, head.scale, head.m2) == ("arcface", 64.0, 0.5)
    head.margin_params.assign([1.0, 32.0, 1.1, 0.2, 0.1])
    head.sync_from_weights()
    assert head.kind == "combined" and head.m1 == pytest.approx(1.1)


def test_training_model_saves_as_h5_and_loads_back(tmp_path: Path) -> None:
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.export import save_model_atomic

    k = import_tf_keras()
    inp = k.Input((6, 6, 3), name="image")
    x = k.layers.Flatten(name="embedding")(k.layers.Conv2D(2, 3, name="conv")(inp))
    backbone = k.Model(inp, x)
    head = MarginHead(7, "softmax", 32.0, name="margin_head")
    model = build_training_model(backbone, head)
    head.set_kind("arcface", 32.0)
    path = save_model_atomic(model, tmp_path / "train.h5")
    loaded = k.models.load_model(path, compile=False, custom_objects=custom_objects())
    assert [t.name for t in loaded.inputs] == ["image", "label"]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 6, 6, 3)).astype(np.float32)
    y = np.array([0, 3, 6], np.int32)
    np.testing.assert_allclose(loaded([x, y]).numpy(), model([x, y]).numpy(), atol=1e-5)
    assert loaded.get_layer("margin_head").kind == "arcface"
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_gradients_stay_finite_at_the_extremes() -> None:
    import tensorflow as tf

    head = _head("arcface", classes=3, dim=2)
    head.kernel.assign(np.array([[1, -1, 0], [0, 0, 1]], np.float32))
    emb = tf.constant([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # cos = 1, -1 and 0 with the true centre
    labels = tf.constant([0, 0, 2])
    with tf.GradientTape() as tape:
        tape.watch(emb)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, head([emb, labels])))
    grads = tape.gradient(loss, [emb, head.kernel])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
