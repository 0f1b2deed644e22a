"""What the KPU rewrite buys, measured by nncase 1.9 (issue 3). Run: .venv/bin/python benchmarks/rewrite.py

For the paper's MobileFaceNet (demo model, 12 residual adds), the same network with the first block of
every bottleneck row plain (10 adds: the variant measured on nncase 1.9 at 121 convs / 77 uploads
as is), and a MobileNetV2-backbone face model (JHFace style: keras
applications MobileNetV2 + Dense embedding), compile the model as it is and after `k210tool rewrite`, and
print nncase's own figures: KPU convs, KPU uploads (CPU<->KPU round trips), CPU ops besides glue, memory
TOTAL and kmodel size, plus the float cosine the rewrite costs and the lint's prediction beside each.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import demo_folder, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def measure(loaded, images):  # type: ignore[no-untyped-def]
    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.compile.tflite import export_tflite
    from k210tool.model.lint import predict
    from k210tool.preprocess import Preprocess

    h, w, _ = loaded.input_shape
    res = compile_kmodel(export_tflite(loaded.model, loaded.input_shape), NncaseSettings(Preprocess(h, w)), images)
    layers, _ = predict(loaded.graph)
    d = res.dump
    cpu = ", ".join(f"{k} x{v}" for k, v in sorted(d.cpu_compute_ops.items())) or "none"
    return [str(d.kpu_convs), f"{d.kpu_uploads} (lint {sum(p.upload for p in layers)})", cpu,
            f"{d.memory.total / 2**20:.2f} MB", f"{len(res.kmodel) / 1024:.0f} KB"]


def main() -> None:
    from model_factory import mobilenetv2_dense, save_h5

    from k210tool.model.load import load_model
    from k210tool.model.rewrite import RewriteOptions, rewrite_loaded
    from k210tool.preprocess import Preprocess, load_folder
    from k210tool.train.models.mobilefacenet import build_mobilefacenet, randomize_affine, settle_batchnorm

    demo = demo_folder()
    scratch = Path(tempfile.mkdtemp())
    mnv2 = mobilenetv2_dense(size=112, emb=128, n_classes=1000)
    randomize_affine(mnv2)  # the same "trained-looking" statistics as the demo MobileFaceNet
    pre = Preprocess(112, 112)
    settle_batchnorm(mnv2, pre.normalize(load_folder(demo / "faces", pre, 32).images), batch_size=32)
    mfn10 = build_mobilefacenet(first_block_residual=False)
    randomize_affine(mfn10)
    settle_batchnorm(mfn10, pre.normalize(load_folder(demo / "faces", pre, 32).images), batch_size=32)
    models = {
        "MobileFaceNet (paper, 12 adds)": demo / "mobilefacenet.h5",
        "MobileFaceNet (10 adds)": save_h5(mfn10, scratch / "mfn10.h5"),
        "MobileNetV2 face (alpha 0.35, 112)": save_h5(mnv2, scratch / "mnv2.h5"),
    }
    rows = []
    for name, path in models.items():
        loaded = load_model(path)
        h, w, _ = loaded.input_shape
        pre = Preprocess(h, w)
        images = load_folder(demo / "faces", pre, 32).images
        rows.append([name, "as is", *measure(loaded, images), "-"])
        report = rewrite_loaded(load_again := load_model(path), RewriteOptions(), images=pre.normalize(images))
        rows.append([name, "rewritten", *measure(load_again, images), f"{report.cosine:.4f}"])
    print("nncase 1.9, target k210, uint8; figures from nncase's dump (lint = k210tool check's prediction)")
    print(table(rows, ["model", "form", "KPU convs", "KPU uploads", "CPU ops besides glue", "memory TOTAL",
                       "kmodel", "float cosine vs original"]))


if __name__ == "__main__":
    main()
