"""Backbones by name: MobileFaceNet (paper and KPU form), MobileNet V1/V2, ResNet50 (a server-side teacher).

Every backbone is a flat tf_keras functional model ``image (N, S, S, 3) -> embedding (N, D)`` whose last
layer is named ``embedding``, so training, export, distillation and ``k210tool convert`` treat them alike.
The keras.applications networks are built with ``weights=None`` (nothing is downloaded) and get
MobileFaceNet's embedding tail: a global depthwise conv over the final feature map, BatchNorm, a 1x1
linear conv to D channels and BatchNorm, which keeps spatial information a global average pool would blur.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from k210tool.errors import InputError
from k210tool.train.config import ModelConfig
from k210tool.train.models.mobilefacenet import PAPER_BOTTLENECKS, MobileFaceNetConfig, build_mobilefacenet


def mobilefacenet_config(cfg: ModelConfig) -> MobileFaceNetConfig:
    kpu = cfg.backbone == "mobilefacenet_kpu"
    return MobileFaceNetConfig(
        input_size=cfg.input_size,
        embedding_size=cfg.embedding_size,
        activation="relu" if kpu else "prelu",
        stride2_padding="symmetric" if kpu else "same",
        expansion_scale=cfg.expansion_scale,
        width=cfg.width,
        bottlenecks=tuple(tuple(b) for b in cfg.bottlenecks) or PAPER_BOTTLENECKS,  # type: ignore[misc]
    )


def build_backbone(cfg: ModelConfig, precision: str = "float32") -> Any:
    """Build the backbone ``cfg`` names under the dtype policy ``precision`` (float32 for export)."""
    with dtype_policy(precision):
        if cfg.backbone in ("mobilefacenet", "mobilefacenet_kpu"):
            model = build_mobilefacenet(mobilefacenet_config(cfg), name=cfg.backbone)
        else:
            model = _build_application(cfg)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = cfg.bn_momentum
    return model


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras mixed-precision policy without leaving it set for the whole process."""
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    old = k.mixed_precision.global_policy()
    k.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        k.mixed_precision.set_global_policy(old)


def _build_application(cfg: ModelConfig) -> Any:
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    shape = (cfg.input_size, cfg.input_size, 3)
    if cfg.backbone == "mobilenet_v1":
        base = k.applications.MobileNet(input_shape=shape, alpha=cfg.alpha, include_top=False, weights=None)
    elif cfg.backbone == "mobilenet_v2":
        base = k.applications.MobileNetV2(input_shape=shape, alpha=cfg.alpha, include_top=False, weights=None)
    elif cfg.backbone == "resnet50":
        base = k.applications.ResNet50(input_shape=shape, include_top=False, weights=None)
    else:  # pragma: no cover - ModelConfig validates the name
        raise InputError(f"unknown backbone {cfg.backbone!r}")
    x = embedding_tail(base.output, cfg.embedding_size)
    return k.Model(base.input, x, name=cfg.backbone)


def embedding_tail(x: Any, embedding_size: int) -> Any:
    """GDConv (depthwise over the whole map) + BN + 1x1 linear conv + BN + Flatten named ``embedding``."""
    from k210tool.tfutil import import_tf_keras

    L = import_tf_keras().layers
    h, w = int(x.shape[1]), int(x.shape[2])
    x = L.DepthwiseConv2D((h, w), 1, padding="valid", use_bias=False, name="gdconv")(x)
    x = L.BatchNormalization(epsilon=1e-3, name="gdconv_bn")(x)
    x = L.Conv2D(embedding_size, 1, use_bias=False, name="linear_conv")(x)
    x = L.BatchNormalization(epsilon=1e-3, name="embedding_bn")(x)
    return L.Flatten(name="embedding")(x)


def float32_copy(model: Any, cfg: ModelConfig) -> Any:
    """A float32 twin of a (possibly mixed-precision) backbone with the same weights, for export."""
    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model
    twin = build_backbone(cfg, "float32")
    twin.set_weights([w.astype("float32") for w in model.get_weights()])
    return twin
