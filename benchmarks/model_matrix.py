"""Issue 15's model matrix: the models users bring, full size, through `k210tool convert` for one board.

Each row is one model (``tests/matrix_models.py``: random seeded weights with settled batch norms, except the
real TFLite MobileFaceNet of ``/tmp/k210-realdata`` when present) converted exactly as a user would
(``python -m k210tool convert MODEL --calib FACES -B BOARD --json``, a fresh process, wall time measured).
A row either converts (kmodel version, size, memory against the board's limit, who compiled it, and the
kmodel's cosine to the float model on synthetic faces, from `k210tool compare`) or is refused with the
one-line error (which names the layer and what to change).

    .venv/bin/python benchmarks/model_matrix.py [--board maix_dock] [--only resnet,too_big] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
REAL_TFLITE = Path("/tmp/k210-realdata/models/mobilefacenet.tflite")
LIMIT = 60.0  # seconds: a model that cannot be converted must be refused faster than this


def run(cmd: list[str], timeout: float) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return -1, "", f"no answer within {timeout:.0f} s", time.perf_counter() - start
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def convert_row(name: str, model: Path, faces: Path, out: Path, board: str, timeout: float) -> list[str]:
    kmodel = out / f"{model.stem}.kmodel"
    code, stdout, stderr, seconds = run([sys.executable, "-m", "k210tool", "convert", str(model), "--calib", str(faces),
                                         "-B", board, "-o", str(kmodel), "--json", "-q"], timeout)
    if code != 0:
        error = (stderr.strip().splitlines() or ["(no message)"])[-1].removeprefix("k210tool: error: ")
        verdict = "refused in time" if seconds <= LIMIT else "refused TOO LATE"
        return [name, f"{verdict}: {error}", "-", "-", "-", "-", f"{seconds:.1f}"]
    s = json.loads(stdout)
    mem = s["memory"]
    cos = cosine(model, kmodel, faces, timeout)
    backend = s["backend"] + (" (fallback)" if s.get("fallback") else "")
    return [name, f"converted, kmodel v{s['kmodel_version']}", f"{s['kmodel_size'] / 2**20:.2f} MiB",
            f"{mem['total'] / 2**20:.2f} of {mem['board_limit'] / 2**20:.2f} MiB", backend, cos, f"{seconds:.1f}"]


def cosine(model: Path, kmodel: Path, faces: Path, timeout: float) -> str:
    """Mean (min) cosine of the kmodel's embeddings to the float model's, from `k210tool compare`."""
    code, stdout, stderr, _ = run([sys.executable, "-m", "k210tool", "compare", str(model), str(kmodel), "--data",
                                   str(faces), "--limit", "16", "--json", "-q"], timeout)
    if code != 0:
        return "compare failed: " + (stderr.strip().splitlines() or ["?"])[-1]
    rows = [r for r in json.loads(stdout)["fidelity"] if r["test"] == "kmodel"]
    return f"{rows[-1]['cosine_mean']:.4f} ({rows[-1]['cosine_min']:.4f})" if rows else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="maix_dock")
    parser.add_argument("--only", default="", help="comma-separated kinds (and/or real_tflite)")
    parser.add_argument("--keep", type=Path, help="keep models and kmodels in this folder")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    from matrix_models import KINDS, save

    from k210tool.train.data.synthetic import write_identity_folders

    root = args.keep or Path(tempfile.mkdtemp(prefix="k210tool-matrix-"))
    root.mkdir(parents=True, exist_ok=True)
    faces = root / "faces"
    if not faces.exists():
        write_identity_folders(faces, identities=8, per_identity=4, size=112, first_seed=300)
    wanted = [w for w in args.only.split(",") if w] or [*KINDS, "real_tflite"]
    rows = []
    for kind in wanted:
        if kind == "real_tflite":
            if not REAL_TFLITE.exists():
                print(f"skipping the real TFLite MobileFaceNet: {REAL_TFLITE} does not exist", file=sys.stderr)
                continue
            model, name = REAL_TFLITE, "real MobileFaceNet (.tflite, trained)"
        else:
            model, name = root / f"{kind}.h5", kind
            if not model.exists():
                save(kind, full=True, folder=root)
        params = _params(model)
        print(f"{name}: {params / 1e6:.2f} M weights ...", file=sys.stderr, flush=True)
        row = convert_row(name, model, faces, root, args.board, args.timeout)
        rows.append([row[0], f"{params / 1e6:.2f} M", *row[1:]])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"board {args.board}; random-weight models except the real TFLite; wall time of `k210tool convert` in a "
          "fresh process (2-core machine, shared)")
    print(table(rows, ["model", "weights", "result", "kmodel", "memory", "compiled by", "cosine vs float",
                       "seconds"]))


def _params(model: Path) -> int:
    from k210tool.model.load import load_model

    loaded = load_model(model)
    return int(loaded.model.count_params())


if __name__ == "__main__":
    main()
