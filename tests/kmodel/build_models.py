"""Build a named test model, compile it with nncase 1.9 and write ``NAME.kmodel`` + ``NAME.npy`` (inputs).

Run as ``python tests/kmodel/build_models.py OUT_DIR NAME...`` (a child process: nncase can abort; one
process builds several models so TensorFlow is imported once). The models
are MobileFaceNets of the project (``k210tool.train.models.mobilefacenet``) with seeded weights and BN
statistics settled on synthetic faces, so their activations and quantization are realistic; the tiny
ones keep every layer kind (stem, depthwise, bottlenecks with residual adds, GDConv, linear embedding).
The compile flow is the one of K210_FACTS.md (uint8 NCHW input, preprocessing folded in).
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
    "mobilefacenet": (112, 64, None, "prelu", "same", 8),
    "mobilefacenet_kpu": (112, 64, None, "relu", "symmetric", 8),
}
TEST_IMAGES = 6


def build(name: str, out_dir: Path) -> None:
    import numpy as np

    from k210tool.preprocess import Preprocess
    from k210tool.tfutil import import_tf, import_tf_keras
    from k210tool.train.data.synthetic import identity_images
    from k210tool.train.models.mobilefacenet import (
        PAPER_BOTTLENECKS,
        MobileFaceNetConfig,
        build_mobilefacenet,
        randomize_affine,
        settle_batchnorm,
    )

    size, width, blocks, activation, padding, n_calib = MODELS[name]
    k = import_tf_keras()
    k.utils.set_random_seed(0)
    cfg = MobileFaceNetConfig(input_size=size, width=width, bottlenecks=blocks or PAPER_BOTTLENECKS,
                              activation=activation, stride2_padding=padding)
    model = build_mobilefacenet(cfg)
    randomize_affine(model, 0)
    pre = Preprocess(height=size, width=size)
    faces = np.stack([pre.prepare(img) for i in range(12) for img in identity_images(1000 + i, 2)])
    settle_batchnorm(model, pre.normalize(faces), batch_size=len(faces))
    tflite = import_tf().lite.TFLiteConverter.from_keras_model(model).convert()

    import nncase

    co = nncase.CompileOptions()
    co.target = "k210"
    co.preprocess = True
    co.input_type = "uint8"
    co.input_range = [0.0, 255.0]
    co.mean = [127.5] * 3
    co.std = [128.0] * 3
    co.input_shape = [1, 3, size, size]
    co.input_layout = "NCHW"
    co.model_layout = "NHWC"
    co.output_layout = "NHWC"
    co.quant_type = "uint8"
    co.w_quant_type = "uint8"
    compiler = nncase.Compiler(co)
    compiler.import_tflite(tflite, nncase.ImportOptions())
    calib = np.ascontiguousarray(faces[:n_calib].transpose(0, 3, 1, 2))
    ptq = nncase.PTQTensorOptions()
    ptq.samples_count = len(calib)
    ptq.set_tensor_data(calib.tobytes())
    compiler.use_ptq(ptq)
    compiler.compile()
    kmodel = bytes(compiler.gencode_tobytes())
    tests = np.stack([pre.prepare(img) for i in range(TEST_IMAGES) for img in identity_images(2000 + i, 1)])
    np.save(out_dir / f"{name}.npy", tests)
    tmp = out_dir / f".{name}.kmodel.tmp"
    tmp.write_bytes(kmodel)
    os.replace(tmp, out_dir / f"{name}.kmodel")


GROUPS = {"tiny": [n for n in MODELS if n.startswith("tiny_")]}


def group_of(name: str) -> list[str]:
    return next((members for members in GROUPS.values() if name in members), [name])


if __name__ == "__main__":
    for model_name in sys.argv[2:]:
        build(model_name, Path(sys.argv[1]))
