"""Training throughput: input pipeline images/s vs training step rate, measured on this machine.

    .venv/bin/python benchmarks/train.py [--size 112] [--batch 32] [--steps 8] [--images 768]

1. Input pipeline: k210tool's tf.data pipeline (global shuffle, parallel decode through Preprocess,
   prefetch) over the same synthetic faces stored as identity folders, TFRecord shards and RecordIO,
   with one decode thread and with AUTOTUNE.
2. Training step: MobileFaceNet-KPU + ArcFace head, one optimizer step per batch, on tensors already in
   memory (compute bound) and fed by the pipeline (end to end), on the CPU and on a GPU when present.
Every figure printed is measured; nothing is a constant. TF_ENABLE_ONEDNN_OPTS=1 (oneDNN kernels) is
usually faster on x86 CPUs; k210tool leaves it off by default - set it in the environment to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def _pipeline_rate(source: str, size: int, batch: int, parallel: int, limit: int) -> float:
    from k210tool.preprocess import Preprocess
    from k210tool.train.data.index import open_dataset
    from k210tool.train.data.pipeline import make_dataset

    index = open_dataset(source)
    pre = Preprocess(size, size)
    ds = make_dataset(index, pre, batch, seed=0, epoch=0, parallel_calls=parallel, limit=limit)
    it = iter(ds)
    next(it)  # warm-up: thread pools and the first decode
    t0 = time.perf_counter()
    n = 0
    for images, _labels in it:
        n += int(images.shape[0])
    seconds = time.perf_counter() - t0
    index.close()
    return n / seconds if seconds > 0 else float("nan")


def _step_rate(device: str, size: int, batch: int, steps: int, classes: int, faces: str | None) -> tuple[float, float]:
    """(images/s from memory, images/s through the pipeline) of training steps on ``device``."""
    import tensorflow as tf

    from k210tool.preprocess import Preprocess
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.config import ModelConfig
    from k210tool.train.data.index import open_dataset
    from k210tool.train.data.pipeline import make_dataset
    from k210tool.train.heads import MarginHead, build_training_model
    from k210tool.train.loop import make_train_step
    from k210tool.train.models.backbones import build_backbone

    k = import_tf_keras()
    with tf.device(device):
        backbone = build_backbone(ModelConfig(backbone="mobilefacenet_kpu", input_size=size))
        model = build_training_model(backbone, MarginHead(classes, "arcface"))
        opt = k.optimizers.SGD(0.01, momentum=0.9)
        step = make_train_step(model, opt, tf.distribute.get_strategy(), batch, 1, batch)
        x = tf.random.normal((batch, size, size, 3))
        y = tf.random.uniform((batch,), 0, classes, tf.int32)
        it = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        step(it)  # trace
        t0 = time.perf_counter()
        for _ in range(steps):
            float(step(it))
        memory = steps * batch / (time.perf_counter() - t0)
        piped = float("nan")
        if faces:
            index = open_dataset(faces)
            ds = make_dataset(index, Preprocess(size, size), batch, seed=0, epoch=0).repeat()
            it = iter(ds)
            step(it)
            t0 = time.perf_counter()
            for _ in range(steps):
                float(step(it))
            piped = steps * batch / (time.perf_counter() - t0)
            index.close()
    return memory, piped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per measurement")
    ap.add_argument("--images", type=int, default=768, help="synthetic images for the pipeline")
    args = ap.parse_args()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset: k210tool turns it off")  # before TF sets it

    from k210tool.tfutil import import_tf
    from k210tool.train.data.pack import pack_dataset
    from k210tool.train.data.synthetic import write_identity_folders

    tf = import_tf()
    work = Path(tempfile.mkdtemp(prefix="k210-train-bench-"))
    try:
        identities = max(2, args.images // 24)
        t0 = time.perf_counter()
        write_identity_folders(work / "faces", identities, 24, size=args.size)
        pack_dataset(work / "faces", work / "shards" / "faces", "tfrecord", shards=4)
        pack_dataset(work / "faces", work / "rec" / "train.rec", "recordio")
        print(f"data: {identities * 24} synthetic {args.size}x{args.size} PNG faces of {identities} identities "
              f"({time.perf_counter() - t0:.1f} s to write), {os.cpu_count()} CPU cores, "
              f"TF_ENABLE_ONEDNN_OPTS={onednn}")
        print()
        print("input pipeline (decode + Preprocess + flip + normalise + batch), images/s:")
        print(f"  {'source':<26}{'1 thread':>10}{'AUTOTUNE':>10}")
        sources = {"identity folders (PNG)": str(work / "faces"), "TFRecord, 4 shards": str(work / "shards"),
                   "RecordIO .rec/.idx": str(work / "rec")}
        for name, src in sources.items():
            one = _pipeline_rate(src, args.size, args.batch, 1, identities * 24)
            auto = _pipeline_rate(src, args.size, args.batch, 0, identities * 24)
            print(f"  {name:<26}{one:>10.0f}{auto:>10.0f}")
        print()
        devices = ["/cpu:0"] + [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]
        print(f"training steps, MobileFaceNet-KPU {args.size}x{args.size} + ArcFace, batch {args.batch}, "
              f"{args.steps} steps:")
        print(f"  {'device':<10}{'steps/s':>10}{'img/s (memory)':>16}{'img/s (pipeline)':>18}")
        for dev in devices:
            memory, piped = _step_rate(dev, args.size, args.batch, args.steps, identities, str(work / "faces"))
            print(f"  {dev:<10}{memory / args.batch:>10.2f}{memory:>16.1f}{piped:>18.1f}")
        if len(devices) == 1:
            print("  (no GPU found: GPU rows appear when TensorFlow sees one)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
