"""Images per second of the NumPy kmodel interpreter beside nncase's Simulator, on the same images.

The model is the 112x112 demo MobileFaceNet compiled here by nncase 1.9 (its KPU form, and with ``--form
both`` also the paper's PReLU network), or any v5 ``--kmodel``. Both engines run in this one process;
the Simulator runs one image at a time (single-threaded C++), the interpreter runs batches (NumPy; its
matrix products may use a second BLAS thread). The interpreter's outputs on the images both engines ran
are compared bit for bit with the Simulator's, and the transcoded kmodel v4 is timed too.

Second part (``_pool.py``; skip with ``--no-pool``): each engine in one process vs the process pool that
``compare`` uses (target for nncase's Simulator: >= 1.8x on 2 free cores), and the float model's images/s
(TensorFlow, batched, then from the float cache).

Measured, never constant: wall time and process CPU time of each run are printed; the speed-up is the
ratio of images/s. On a busy machine the figures move together, the ratio less so.

Usage: .venv/bin/python benchmarks/simulate.py [--form kpu|paper|both] [--images 64] [--sim-images 8]
       .venv/bin/python benchmarks/simulate.py --kmodel face.kmodel --model face.h5 --images 32
       .venv/bin/python benchmarks/simulate.py --no-pool
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_demo_kmodel(form: str, work: Path) -> tuple[bytes, np.ndarray]:
    """The demo MobileFaceNet (``k210tool demo``, optionally ``--kpu-form``) compiled like ``convert`` does."""
    from k210tool.commands.demo import make_demo
    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.compile.tflite import export_tflite
    from k210tool.preprocess import Preprocess, load_folder
    from k210tool.tfutil import import_tf_keras

    kpu = form == "kpu"
    demo = make_demo(work / form, identities=8, per_identity=4, activation="relu" if kpu else "prelu",
                     stride2_padding="symmetric" if kpu else "same")
    pre = Preprocess()
    faces = load_folder(demo.faces, pre).images
    model = import_tf_keras().models.load_model(demo.model, compile=False)
    kmodel = compile_kmodel(export_tflite(model, (112, 112, 3)), NncaseSettings(pre), faces[:8]).kmodel
    return kmodel, faces


def timed(fn, *args) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, kmodel: bytes, images: np.ndarray, n_images: int, n_sim: int, chunk: int) -> list[dict]:
    from k210tool.compile.kmodel import transcode_to_v4
    from k210tool.sim.engine import NncaseEngine
    from k210tool.sim.interp import NumpyEngine, compare_outputs

    batch = np.concatenate([images] * (n_images // len(images) + 1))[:n_images]
    sim = NncaseEngine(kmodel)
    sim.run(batch[:1])
    ref, sim_wall, sim_cpu = timed(sim.run, batch[:n_sim])
    rows = [{"model": name, "engine": "nncase.Simulator", "images": n_sim, "wall": sim_wall, "cpu": sim_cpu,
             "check": "reference"}]
    for label, data in (("numpy v5", kmodel), ("numpy v4", transcode_to_v4(kmodel))):
        engine = NumpyEngine(data, chunk=chunk)
        engine.run(batch[:2])  # warm-up: allocations, BLAS threads
        out, wall, cpu = timed(engine.run, batch)
        diffs = compare_outputs(ref, [o[:n_sim] for o in out])
        check = "bit-exact" if all(d.identical for d in diffs) else "; ".join(map(repr, diffs))
        rows.append({"model": name, "engine": label, "images": n_images, "wall": wall, "cpu": cpu, "check": check})
    base = n_sim / sim_wall
    for r in rows:
        r["ips"] = r["images"] / r["wall"]
        r["speedup"] = r["ips"] / base
        r["cpu_speedup"] = (r["images"] / r["cpu"]) / (n_sim / sim_cpu)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--form", choices=("kpu", "paper", "both"), default="kpu",
                        help="which demo MobileFaceNet to compile (default: the KPU form)")
    parser.add_argument("--kmodel", type=Path, help="benchmark this v5 kmodel instead (synthetic face inputs)")
    parser.add_argument("--images", type=int, default=64, help="images through the interpreter")
    parser.add_argument("--sim-images", type=int, default=8, help="images through the Simulator")
    parser.add_argument("--chunk", type=int, default=16, help="interpreter batch size")
    parser.add_argument("--model", type=Path, help="the float model --kmodel came from (pool/float part)")
    parser.add_argument("--no-pool", action="store_true", help="skip the pool and float part")
    parser.add_argument("--pool-nncase-images", type=int, default=32, help="pool part: images through nncase")
    parser.add_argument("--pool-numpy-images", type=int, default=96, help="pool part: images through NumPy")
    parser.add_argument("--float-images", type=int, default=256, help="pool part: images through the float model")
    parser.add_argument("--workers", type=int, help="pool size (default: every core)")
    args = parser.parse_args()
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="k210tool-bench-") as d:
        if args.kmodel:
            from k210tool.preprocess import Preprocess
            from k210tool.train.data.synthetic import identity_images

            kmodel = args.kmodel.read_bytes()
            from k210tool.compile.kmodel import read_kmodel

            _n, _c, h, w = read_kmodel(kmodel).inputs[0].shape
            pre = Preprocess(height=h, width=w)
            faces = np.stack([pre.prepare(img) for i in range(8) for img in identity_images(3000 + i, 2)])
            cases = [(args.kmodel.name, kmodel, faces)]
        else:
            forms = ("kpu", "paper") if args.form == "both" else (args.form,)
            cases = []
            for form in forms:
                print(f"compiling the demo MobileFaceNet ({form} form) with nncase 1.9 ...", file=sys.stderr)
                kmodel, faces = build_demo_kmodel(form, Path(d))
                cases.append((f"MobileFaceNet 112x112 ({form})", kmodel, faces))
        for name, kmodel, faces in cases:
            rows += bench(name, kmodel, faces, args.images, args.sim_images, args.chunk)
    print(f"{'model':34} {'engine':17} {'images':>6} {'wall s':>8} {'cpu s':>8} {'images/s':>9} "
          f"{'speed-up':>8} {'(cpu)':>6}  outputs vs Simulator")
    for r in rows:
        print(f"{r['model']:34} {r['engine']:17} {r['images']:6d} {r['wall']:8.2f} {r['cpu']:8.2f} {r['ips']:9.2f} "
              f"{r['speedup']:7.1f}x {r['cpu_speedup']:5.1f}x  {r['check']}")
    with open("/proc/loadavg") as fh:
        print(f"machine load average while measuring: {fh.read().split()[0]} on {os.cpu_count()} cores")
    if args.no_pool:
        return 0
    if args.kmodel and not args.model:
        print("pool part skipped: give --model (the float model of --kmodel) to run it", file=sys.stderr)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _pool

    print()
    pool_args = ["--nncase-images", str(args.pool_nncase_images), "--numpy-images", str(args.pool_numpy_images),
                 "--float-images", str(args.float_images)]
    pool_args += ["--workers", str(args.workers)] if args.workers else []
    pool_args += ["--model", str(args.model), "--kmodel", str(args.kmodel)] if args.kmodel else []
    return _pool.main(pool_args)


if __name__ == "__main__":
    sys.exit(main())
