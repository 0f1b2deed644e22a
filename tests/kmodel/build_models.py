"""Build a full-size test MobileFaceNet, compile it with nncase 1.9, write ``NAME.kmodel`` + ``NAME.npy`` (inputs).

Run as ``python tests/kmodel/build_models.py OUT_DIR NAME...`` (a child process: nncase can abort; one
process builds several models so TensorFlow is imported once). The models
are the project's MobileFaceNet (``k210tool.train.models.mobilefacenet``, 112x112) with seeded weights and
BN statistics settled on synthetic faces, so their activations and quantization are realistic. (The small
test models are ONNX graphs built in-process: ``onnx_models.py``.)
They are compiled the way `k210tool convert` compiles (``k210tool.compile.nncase_backend``: uint8 NCHW
input, preprocessing folded in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODELS = {
    # name: (input size, width, bottlenecks, activation, stride-2 padding, calibration samples)
    "mobilefacenet": (112, 64, None, "prelu", "same", 2),
    "mobilefacenet_kpu": (112, 64, None, "relu", "symmetric", 2),
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
    model = _mobilefacenet(MODELS[name], pre, faces)
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


if __name__ == "__main__":
    for model_name in sys.argv[2:]:
        build(model_name, Path(sys.argv[1]))
