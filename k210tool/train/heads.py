"""Classification heads for face-embedding training: softmax and the combined angular margins.

One layer, :class:`MarginHead`, holds the class-centre matrix ``W`` (embedding_size x classes) and turns
``[embedding, label]`` into logits. With a margin kind it follows insightface's ``CombinedMarginLoss``
idea: logits are ``s * cos(theta_j)`` for every class, and for the true class
``s * (cos(m1 * theta + m2) - m3)`` - ArcFace is m2=0.5, CosFace m3=0.35, SphereFace m1=1.35, and any mix
is a "combined" margin. ``softmax`` is the plain ``embedding @ W``, used for pre-training.

Past ``m1 * theta + m2 > pi`` the margin function stops decreasing with theta, which would reward the
network for pushing a sample further from its centre. As in insightface's ArcFace (``easy_margin`` off)
the target logit then falls back to ``cos(theta) - m3 - m2 * sin(m2)``; for SphereFace-like ``m1 != 1``
the fallback is shifted so that it continues the margin function continuously. Both keep it monotone.

The margins live in a non-trainable weight, so the softmax -> ArcFace switch changes them without
rebuilding the model or retracing the training step, and a checkpoint records which phase it was in.
The layer is registered with Keras serialisation (``k210tool>MarginHead``), so a saved training model
(image + label inputs, this head) loads back - and looks like the training files users bring.
"""

from __future__ import annotations

import math
from typing import Any

from k210tool.tfutil import import_tf, import_tf_keras
from k210tool.train.config import HEAD_PRESETS

tf = import_tf()
keras = import_tf_keras()

_EPS = 1e-7


def margin_target(cos_t: Any, m1: Any, m2: Any, m3: Any) -> Any:
    """The true class's margin-adjusted cosine for target cosines ``cos_t`` (float32 tensors/scalars)."""
    cos_t = tf.clip_by_value(cos_t, -1.0 + _EPS, 1.0 - _EPS)
    theta = tf.acos(cos_t)
    limit = (math.pi - m2) / m1  # beyond this angle cos(m1*theta + m2) turns back up
    with_margin = tf.cos(m1 * theta + m2) - m3
    insightface_mm = tf.sin(m2) * m2
    continuous_mm = 1.0 + tf.cos(limit)
    mm = tf.where(tf.abs(m1 - 1.0) < 1e-6, insightface_mm, continuous_mm)
    fallback = cos_t - m3 - mm
    return tf.where(theta <= limit, with_margin, fallback)


@keras.saving.register_keras_serializable(package="k210tool")
class MarginHead(keras.layers.Layer):
    """``[embedding (N, D), label (N,)] -> logits (N, classes)`` (float32, also under mixed precision)."""

    def __init__(self, num_classes: int, kind: str = "arcface", scale: float = 64.0, m1: float | None = None,
                 m2: float | None = None, m3: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # logits and margins in float32 under mixed precision
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self._set_attrs(kind, scale, m1, m2, m3)

    def _set_attrs(self, kind: str, scale: float, m1: float | None, m2: float | None, m3: float | None) -> None:
        if kind not in HEAD_PRESETS:
            raise ValueError(f"unknown head kind {kind!r}; use one of {', '.join(HEAD_PRESETS)}")
        preset = HEAD_PRESETS[kind]
        self.kind = kind
        self.scale = float(scale)
        self.m1, self.m2, self.m3 = (float(p if v is None else v) for p, v in zip(preset, (m1, m2, m3), strict=True))

    def _params(self) -> list[float]:
        normalized = 0.0 if self.kind == "softmax" else 1.0
        return [normalized, self.scale, self.m1, self.m2, self.m3]

    def build(self, input_shape: Any) -> None:
        dim = int(input_shape[0][-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.num_classes),
                                      initializer=keras.initializers.RandomNormal(stddev=0.01), trainable=True)
        self.margin_params = self.add_weight(name="margin_params", shape=(5,), trainable=False,
                                             initializer=keras.initializers.Constant(self._params()))
        super().build(input_shape)

    def set_kind(self, kind: str, scale: float | None = None, m1: float | None = None,
                 m2: float | None = None, m3: float | None = None) -> None:
        """Switch the head (e.g. softmax -> arcface) in place; weights and compiled steps stay valid."""
        self._set_attrs(kind, self.scale if scale is None else scale, m1, m2, m3)
        if self.built:
            self.margin_params.assign(self._params())

    def sync_from_weights(self) -> None:
        """After restoring a checkpoint, make the Python attributes match the restored margins."""
        normalized, scale, m1, m2, m3 = (float(v) for v in self.margin_params.numpy())
        if normalized == 0.0:
            self._set_attrs("softmax", scale, 1.0, 0.0, 0.0)
            return
        kind = next((k for k, p in HEAD_PRESETS.items() if k != "softmax" and
                     all(abs(a - b) < 1e-6 for a, b in zip(p, (m1, m2, m3), strict=True))), "combined")
        self._set_attrs(kind, scale, m1, m2, m3)

    def call(self, inputs: Any) -> Any:
        emb, labels = inputs
        emb = tf.cast(emb, tf.float32)
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        normalized, s, m1, m2, m3 = tf.unstack(self.margin_params)
        plain = tf.matmul(emb, self.kernel)
        cos = tf.matmul(tf.math.l2_normalize(emb, axis=1), tf.math.l2_normalize(self.kernel, axis=0))
        cos = tf.clip_by_value(cos, -1.0, 1.0)
        onehot = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        target = tf.reduce_sum(cos * onehot, axis=1)
        adjusted = cos + onehot * (margin_target(target, m1, m2, m3) - target)[:, None]
        return tf.where(normalized > 0.5, s * adjusted, plain)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_classes=self.num_classes, kind=self.kind, scale=self.scale,
                      m1=self.m1, m2=self.m2, m3=self.m3)
        return config


def custom_objects() -> dict[str, Any]:
    """What ``load_model`` needs to read a training model saved by k210tool (also found by registration)."""
    return {"MarginHead": MarginHead, "k210tool>MarginHead": MarginHead}


def build_training_model(backbone: Any, head: MarginHead) -> Any:
    """``[image, label] -> logits``: the backbone's layers (shared, not copied) followed by ``head``."""
    label = keras.Input((), dtype="int32", name="label")
    logits = head([backbone.output, label])
    return keras.Model([backbone.input, label], logits, name="training_model")
