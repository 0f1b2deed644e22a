"""Images per second of the kmodel engines in one process vs the process pool ``compare`` uses, and of the
float model (TensorFlow, batched; then served from the float cache).

The model is the demo MobileFaceNet in its KPU form (112x112, ``k210tool demo --kpu-form``) converted by
``k210tool.commands.convert`` for the KD233 (kmodel v5), or any ``--model`` + ``--kmodel`` pair convert wrote.
Every figure is measured here (wall and CPU seconds): the pool's wall time includes starting its workers and building one engine
per worker, as in a real ``compare`` run. Pool outputs are checked byte for byte against the
single-process outputs. The load average is printed: on a busy machine the pool cannot gain much.

Run as the second part of ``benchmarks/simulate.py`` (its --pool-* options), or on its own:
       .venv/bin/python benchmarks/_pool.py [--nncase-images 32] [--numpy-images 96] [--workers N]
       .venv/bin/python benchmarks/_pool.py --model face.h5 --kmodel face.kmodel
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_demo(work: Path) -> tuple[Path, Path, Path]:
    """(model, kmodel, faces) of the KPU-form demo MobileFaceNet, converted like a user would."""
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
    from k210tool.commands.demo import make_demo

    demo = make_demo(work, identities=12, per_identity=4, activation="relu", stride2_padding="symmetric")
    kmodel = work / "mobilefacenet.kmodel"
    convert(ConvertOptions(model=demo.model, output=kmodel, board="kd233",
                           calibration=CalibrationOptions(str(demo.faces), count=8)))
    return demo.model, kmodel, demo.faces


def images_for(kmodel: Path, faces: Path | None, count: int) -> np.ndarray:
    from k210tool.preprocess import load_folder
    from k210tool.sim.kmodelrun import read_kmodel_file

    pre = read_kmodel_file(kmodel).preprocess()
    if faces is not None:
        base = load_folder(faces, pre).images
    else:
        base = np.random.default_rng(0).integers(0, 256, (16, pre.height, pre.width, pre.channels), np.uint8)
    return np.concatenate([base] * (count // len(base) + 1))[:count]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers, once shut down)."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def bench_engine(engine: str, kmodel: bytes, images: np.ndarray, workers: int) -> list[dict[str, object]]:
    from k210tool.sim.pool import simulate

    rows = []
    cpu = cpu_seconds()
    single = simulate(kmodel, images, engine, workers=1)
    single_cpu = cpu_seconds() - cpu
    rows.append({"what": f"{engine}, 1 process", "images": len(images), "seconds": single.seconds,
                 "cpu": single_cpu, "ips": single.images_per_second, "check": "reference"})
    cpu = cpu_seconds()
    pooled = simulate(kmodel, images, engine, workers=workers, chunk=4 if engine == "nncase" else 16)
    pool_cpu = cpu_seconds() - cpu
    same = all(a.tobytes() == b.tobytes() for a, b in zip(single.outputs, pooled.outputs, strict=True))
    rows.append({"what": f"{engine}, pool of {pooled.workers}", "images": len(images), "seconds": pooled.seconds,
                 "cpu": pool_cpu, "ips": pooled.images_per_second, "check": "identical" if same else "DIFFERENT",
                 "speedup": pooled.images_per_second / single.images_per_second})
    return rows


def bench_float(model: Path, kmodel: Path, images: np.ndarray, cache: Path) -> list[dict[str, object]]:
    from k210tool.model.load import LoadOptions
    from k210tool.sim.floatrun import FloatRunner
    from k210tool.sim.kmodelrun import read_kmodel_file

    pre = read_kmodel_file(kmodel).preprocess()
    runner = FloatRunner(model, LoadOptions(), pre, cache_dir=cache)
    runner.loaded()  # the model load is not part of the images/s
    runner.run(images[:8])  # warm-up: TensorFlow builds its predict function
    rows = []
    fresh = images.copy()
    fresh[:, 0, 0, 0] ^= 1  # other pixels: not in the cache
    start, cpu = time.perf_counter(), cpu_seconds()
    runner.run(fresh)
    seconds = time.perf_counter() - start
    rows.append({"what": "float (TensorFlow, batch 32)", "images": len(images), "seconds": seconds,
                 "cpu": cpu_seconds() - cpu, "ips": len(images) / seconds, "check": ""})
    start, cpu = time.perf_counter(), cpu_seconds()
    hit = FloatRunner(model, LoadOptions(), pre, cache_dir=cache).run(fresh)
    seconds = time.perf_counter() - start
    rows.append({"what": "float, from the cache", "images": len(images), "seconds": seconds,
                 "cpu": cpu_seconds() - cpu, "ips": len(images) / seconds,
                 "check": f"{hit.cached} cached, {hit.computed} run"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="float model (default: build the demo MobileFaceNet)")
    parser.add_argument("--kmodel", type=Path, help="kmodel v5 convert wrote from --model")
    parser.add_argument("--nncase-images", type=int, default=32)
    parser.add_argument("--numpy-images", type=int, default=96)
    parser.add_argument("--float-images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: every core)")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.kmodel is None):
        parser.error("give --model and --kmodel together")

    from k210tool.sim.pool import available_cpus

    workers = args.workers or available_cpus()
    with tempfile.TemporaryDirectory(prefix="k210-bench-") as tmp:
        work = Path(tmp)
        faces = None
        model, kmodel = args.model, args.kmodel
        if model is None:
            print("building and converting the demo MobileFaceNet (KPU form)...", file=sys.stderr)
            model, kmodel, faces = build_demo(work / "demo")
        data = kmodel.read_bytes()
        rows = bench_engine("nncase", data, images_for(kmodel, faces, args.nncase_images), workers)
        try:
            rows += bench_engine("numpy", data, images_for(kmodel, faces, args.numpy_images), workers)
        except ImportError as exc:
            print(f"NumPy interpreter not available: {exc}", file=sys.stderr)
        rows += bench_float(model, kmodel, images_for(kmodel, faces, args.float_images), work / "cache")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"kmodel: {kmodel.name if args.kmodel else 'demo MobileFaceNet (KPU form, 112x112, v5)'}; "
          f"{available_cpus()} CPUs, pool of {workers}, load average {load:.2f}")
    print(f"{'what':<32} {'images':>6} {'wall s':>8} {'CPU s':>8} {'images/s':>9} {'speed-up':>9}  check")
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        print(f"{r['what']:<32} {r['images']:>6} {r['seconds']:>8.2f} {r['cpu']:>8.2f} {r['ips']:>9.2f} {speedup:>9}"
              f"  {r['check']}")
    print("CPU s: this process plus the pool's workers; wall-clock images/s only scale with the pool when the cores "
          "are free (see the load average).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
