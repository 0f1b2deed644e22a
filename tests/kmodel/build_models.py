"""Build a named test model, compile it with nncase 1.9 and write ``NAME.kmodel`` + ``NAME.npy`` (inputs).

Run as ``python tests/kmodel/build_models.py OUT_DIR NAME...`` (a child process: nncase can abort; one
process builds several models so TensorFlow is imported once). The models
are MobileFaceNets of the project (``k210tool.train.models.mobilefacenet``) with seeded weights and BN
statistics settled on synthetic faces, so their activations and quantization are realistic; the tiny
ones keep every layer kind (stem, depthwise, bottlenecks with residual adds, GDConv, linear embedding).
They are compiled the way `k210tool convert` compiles (``k210tool.compile.nncase_backend``: uint8 NCHW
input, preprocessing folded in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TINY = ((2, 16, 2, 2), (2, 32, 1, 2), (2, 32, 1, 1))
MODELS = {
    # name: (input size, width, bottlenecks, activation, stride-2 padding, calibration samples)
    "tiny_relu": (32, 16, TINY, "relu", "symmetric", 4),
    "tiny_prelu": (32, 16, TINY, "prelu", "same", 4),
    "tiny_leaky": (32, 16, TINY, "leaky", "symmetric", 4),
    "tiny_relu6": (48, 16, TINY, "relu6", "same", 4),
    "tiny_dense": (16, 0, None, "dense", "", 4),
    "mobilefacenet": (112, 64, None, "prelu", "same", 8),
    "mobilefacenet_kpu": (112, 64, None, "relu", "symmetric", 8),
}
TEST_IMAGES = 6


def build(name: str, out_dir: Path) -> None:
    import numpy as np

    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.compile.tflite import export_tflite
    from k210tool.preprocess import Preprocess
    from k210tool.train.data.synthetic import identity_images

    size, width, blocks, activation, padding, n_calib = MODELS[name]
    pre = Preprocess(height=size, width=size)
    faces = np.stack([pre.prepare(img) for i in range(12) for img in identity_images(1000 + i, 2)])
    model = _dense_head(size) if activation == "dense" else _mobilefacenet(MODELS[name], pre, faces)
    tflite = export_tflite(model, (size, size, 3))
    kmodel = compile_kmodel(tflite, NncaseSettings(pre), faces[:n_calib]).kmodel
    tests = np.stack([pre.prepare(img) for i in range(TEST_IMAGES) for img in identity_images(2000 + i, 1)])
    np.save(out_dir / f"{name}.npy", tests)
    tmp = out_dir / f".{name}.kmodel.tmp"
    tmp.write_bytes(kmodel)
    os.replace(tmp, out_dir / f"{name}.kmodel")


def _mobilefacenet(spec: tuple, pre: object, faces: object) -> object:
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.models.mobilefacenet import (
        PAPER_BOTTLENECKS,
        MobileFaceNetConfig,
        build_mobilefacenet,
        randomize_affine,
        settle_batchnorm,
    )

    size, width, blocks, activation, padding, _n = spec
    import_tf_keras().utils.set_random_seed(0)
    cfg = MobileFaceNetConfig(input_size=size, width=width, bottlenecks=blocks or PAPER_BOTTLENECKS,
                              activation=activation, stride2_padding=padding)
    model = build_mobilefacenet(cfg)
    randomize_affine(model, 0)
    settle_batchnorm(model, pre.normalize(faces), batch_size=len(faces))  # type: ignore[attr-defined]
    return model


def _dense_head(size: int) -> object:
    """A conv stem and a softmax classifier: the softmax runs on the CPU and has no kmodel v4 form here."""
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    inp = k.Input((size, size, 3))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = k.layers.Flatten()(k.layers.MaxPooling2D(4)(x))
    return k.Model(inp, k.layers.Dense(10, activation="softmax")(x))


GROUPS = {"tiny": [n for n in MODELS if n.startswith("tiny_")]}


def group_of(name: str) -> list[str]:
    return next((members for members in GROUPS.values() if name in members), [name])


if __name__ == "__main__":
    for model_name in sys.argv[2:]:
        build(model_name, Path(sys.argv[1]))
