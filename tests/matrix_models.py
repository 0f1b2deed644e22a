"""The models users bring (issue 15's matrix), in a small form for the tests and a full-size one for
``benchmarks/model_matrix.py``. Random, seeded weights with batch-norm statistics settled on synthetic faces
(so activations and quantization ranges look like a trained network's); tf_keras, saved as legacy .h5.

- ``mobilefacenet_e6``: MobileFaceNet with every bottleneck expanded 6x, PReLU, a GDConv, Dense 256 embedding.
- ``mobilenetv2``: keras.applications MobileNetV2, GlobalAveragePooling, Dense 512 embedding (64 in the small
  form), softmax classifier (a training head, to be cut).
- ``efficientnet_lite``: EfficientNet-lite0's MBConv stages (5x5 depthwise convs, 1152-channel expansions)
  with swish, GAP, Dense 128; ``efficientnet_lite_relu6``: ReLU6 and a last stage of 160 channels (960 expanded).
- ``resnet``: basic residual blocks whose stride-2 shortcuts are 1x1 stride-2 convs, GAP, Dense 128.
- ``too_big``: a VGG-like stack whose weights alone cannot fit any K210 firmware.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("mobilefacenet_e6", "mobilenetv2", "efficientnet_lite", "efficientnet_lite_relu6", "resnet", "too_big")


def build(kind: str, full: bool, seed: int = 0) -> Any:
    """The tf_keras model ``kind`` (see the module docstring), full-size or small."""
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    builders = {"mobilefacenet_e6": _mobilefacenet_e6, "mobilenetv2": _mobilenetv2,
                "efficientnet_lite": lambda k, f: _efficientnet_lite(k, f, "swish"),
                "efficientnet_lite_relu6": lambda k, f: _efficientnet_lite(k, f, "relu6"),
                "resnet": _resnet, "too_big": _too_big}
    model = builders[kind](k, full)
    if kind != "too_big":  # 25 M random weights need no realistic statistics to be refused
        _settle(model)
    return model


def save(kind: str, full: bool, folder: Path, seed: int = 0) -> Path:
    path = Path(folder) / f"{kind}{'' if full else '_small'}.h5"
    build(kind, full, seed).save(str(path), save_format="h5")
    return path


def _settle(model: Any) -> None:
    from k210tool.train.data.synthetic import identity_images
    from k210tool.train.models.mobilefacenet import randomize_affine, settle_batchnorm

    size = int(model.input.shape[1])
    faces = np.stack([img for i in range(16) for img in identity_images(500 + i, 1, size=size)]).astype(np.float32)
    randomize_affine(model, 0)
    settle_batchnorm(model, (faces - 127.5) / 128.0)


def _mobilefacenet_e6(k: Any, full: bool) -> Any:
    from k210tool.train.models.mobilefacenet import (
        PAPER_BOTTLENECKS,
        MobileFaceNetConfig,
        build_mobilefacenet,
    )

    blocks = PAPER_BOTTLENECKS if full else ((2, 16, 1, 2), (4, 32, 1, 2), (2, 32, 2, 1))
    cfg = MobileFaceNetConfig(input_size=112 if full else 32, width=64 if full else 16,
                              bottlenecks=tuple((6, c, n, s) for _t, c, n, s in blocks))
    backbone = build_mobilefacenet(cfg, name="mobilefacenet_e6")
    x = k.layers.Flatten(name="flatten")(backbone.get_layer("gdconv_bn").output)
    x = k.layers.Dense(256, name="embedding")(x)
    return k.Model(backbone.input, x, name="mobilefacenet_e6")


def _mobilenetv2(k: Any, full: bool) -> Any:
    size = 112 if full else 32
    base = k.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.5 if full else 0.35, include_top=False,
                                      weights=None)
    x = k.layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = k.layers.Dense(512 if full else 64, name="embedding")(x)  # small: 1280 x 512 float32 weights do not fit
    x = k.layers.BatchNormalization(name="embedding_bn")(x)
    out = k.layers.Dense(1000 if full else 50, activation="softmax", name="classifier")(x)
    return k.Model(base.input, out, name="mobilenetv2_face")


def _efficientnet_lite(k: Any, full: bool, act: str) -> Any:
    L = k.layers
    # (expansion, channels, repeats, stride, kernel) of EfficientNet-lite0's stages (the small form: three);
    # the ReLU6 form's last stage is narrower, so no layer has more than the KPU's 1024 channels
    last = (6, 192, 4, 2, 5) if act == "swish" else (6, 160, 3, 2, 5)
    stages = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
              last) if full else ((1, 8, 1, 1, 3), (4, 16, 1, 2, 5), (4, 24, 2, 1, 5))
    size = 112 if full else 32

    def activate(x: Any) -> Any:
        return L.ReLU(6.0)(x) if act == "relu6" else L.Activation("swish")(x)

    inp = k.Input((size, size, 3), name="image")
    x = activate(L.BatchNormalization()(L.Conv2D(32 if full else 8, 3, 2, padding="same", use_bias=False)(inp)))
    for t, c, n, s, kernel in stages:
        for i in range(n):
            cin = int(x.shape[-1])
            y = x
            if t != 1:
                y = activate(L.BatchNormalization()(L.Conv2D(cin * t, 1, use_bias=False)(y)))
            y = activate(L.BatchNormalization()(L.DepthwiseConv2D(kernel, s if i == 0 else 1, padding="same",
                                                                  use_bias=False)(y)))
            y = L.BatchNormalization()(L.Conv2D(c, 1, use_bias=False)(y))
            x = L.Add()([x, y]) if i > 0 or (s == 1 and cin == c) else y
    x = activate(L.BatchNormalization()(L.Conv2D(640 if full else 64, 1, use_bias=False)(x)))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(128, name="embedding")(x)
    return k.Model(inp, x, name=f"efficientnet_lite_{act}")


def _resnet(k: Any, full: bool) -> Any:
    L = k.layers
    widths = (32, 64, 128, 256) if full else (8, 16, 32, 64)
    size = 112 if full else 32
    inp = k.Input((size, size, 3), name="image")
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(widths[0], 3, 2 if full else 1, padding="same", use_bias=False)(inp)))
    for stage, c in enumerate(widths):
        stride = 1 if stage == 0 else 2
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(c, 3, stride, padding="same", use_bias=False)(x)))
        y = L.BatchNormalization()(L.Conv2D(c, 3, padding="same", use_bias=False)(y))
        shortcut = x if stride == 1 and int(x.shape[-1]) == c else \
            L.BatchNormalization()(L.Conv2D(c, 1, stride, use_bias=False, name=f"shortcut{stage}")(x))
        x = L.ReLU()(L.Add()([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(128, name="embedding")(x)
    return k.Model(inp, x, name="resnet_face")


def _too_big(k: Any, full: bool) -> Any:
    L = k.layers
    widths = (256, 512, 1024, 1024, 1024) if full else (640, 640)
    inp = k.Input((112 if full else 16, 112 if full else 16, 3), name="image")
    x = inp
    for i, c in enumerate(widths):
        x = L.Conv2D(c, 3, 2 if full and i < 3 else 1, padding="same", activation="relu", name=f"conv{i}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(512 if full else 32, name="embedding")(x)
    return k.Model(inp, x, name="too_big")
