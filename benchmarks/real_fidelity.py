"""Does a real trained face model still recognise the same faces after `convert`? (issue 14)

Run:  .venv/bin/python benchmarks/real_fidelity.py [--data DIR] [--rows default,relu,...] [--limit N]
                                                   [--calib DIR] [--faces DIR]

DIR (default: $K210TOOL_REALDATA, else /tmp/k210-realdata) holds a real trained MobileFaceNet
(models/mobilefacenet.h5 and .tflite) and real aligned faces (faces/<person>/*.jpg + faces/pairs.txt), as
../shared/realdata/build.sh makes them. For each row, the model is converted for maix_dock (kmodel v4, as a
user runs `k210tool convert`, plus the row's options) and compared with the ORIGINAL float model on the faces
(`k210tool compare` with the LFW pairs): whether it fits the board's 3 MB, its size and KPU uploads, the
float cosine the rewrite itself costs (1.0 for exact lowerings), the kmodel's cosine against the original,
10-fold verification accuracy (original / rewritten float / kmodel) and identification top-1.

By default the 100 calibration images are drawn from the faces the figures are measured on; ``--calib DIR``
calibrates on other faces (e.g. dlib's colour "johns" photos: `sh scripts/johns_faces.sh DIR`) so no test
image was seen by calibration, and
``--faces DIR`` measures on another folder (pairs from its pairs.txt, else made from its folders).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import table

ROWS = {
    "default": ("convert (exact: rotation + PReLU on the KPU)", {}),
    "mixed": ("--prelu-layout mixed", {"prelu_layout": "mixed"}),
    "zones": ("--prelu-layout zones", {"prelu_layout": "zones"}),
    "percentile": ("--calib-method percentile", {"method": "percentile"}),
    "dense-kpu": ("--dense kpu (embedding layer on the KPU)", {"dense": "kpu"}),
    "relu": ("--prelu relu --accept-float-loss", {"prelu": "relu", "accept_float_loss": True}),
    "leaky": ("--prelu leaky --accept-float-loss", {"prelu": "leaky", "accept_float_loss": True}),
    "stride": ("--approximate symmetric-stride2 --accept-float-loss",
               {"approximate": ("symmetric-stride2",), "accept_float_loss": True}),
    "nncase": ("--backend nncase (exact lowering, PReLU on the CPU) --allow-overflow",
               {"backend": "nncase", "allow_overflow": True}),
    "nncase-raw": ("--backend nncase --no-rewrite --allow-overflow",
                   {"backend": "nncase", "rewrite": False, "allow_overflow": True}),
}


def run_row(key: str, model: Path, faces: Path, calib: Path, work: Path, limit: int | None) -> list[str]:
    from k210tool.commands.compare import CompareOptions, compare
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
    from k210tool.report import Reporter

    label, extra = ROWS[key]
    extra = dict(extra)
    method = extra.pop("method", "auto")
    opts = ConvertOptions(model=model, output=work / f"{key}.kmodel", board="maix_dock",
                          calibration=CalibrationOptions(str(calib), 100, method=method))
    opts = replace(opts, **extra)
    start = time.perf_counter()
    res = convert(opts, Reporter())
    seconds = time.perf_counter() - start
    s = res.summary
    reference = Path(s.float_model)
    approximate = reference != model
    pairs = faces / "pairs.txt"
    cmp = compare(CompareOptions(model=reference, kmodel=res.kmodel, data=faces, pairs=pairs if pairs.exists() else None,
                                 original=model if approximate else None, limit=limit), Reporter())
    ver, ident = cmp.verification, cmp.identification
    kcol = "kmodel"
    fid = next(f for f in cmp.fidelity if f.test == "kmodel" and f.reference == cmp.columns[0])  # vs the original
    acc = " / ".join(f"{ver[c].accuracy * 100:.2f}" for c in cmp.columns) + (" (orig / kmodel)" if not approximate
                                                                           else " (orig / rewritten / kmodel)")
    rewrite_cos = (s.rewrite or {}).get("cosine")
    return [label, f"{'yes' if s.memory.fits else 'no'}, {s.memory.total / 2**20:.2f} MiB",
            f"{s.kmodel_size / 2**20:.2f} MiB", str(s.ops.kpu_uploads),
            str(s.kpu["layers"]) if s.kpu else str(s.ops.kpu_convs),
            "-" if rewrite_cos is None else f"{rewrite_cos:.4f}", f"{fid.cosine_mean:.4f} ({fid.cosine_min:.3f})",
            acc, f"{ident[kcol].top1 * 100:.1f}" if kcol in ident else "-", f"{seconds:.0f} s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("K210TOOL_REALDATA", "/tmp/k210-realdata")))
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (of {', '.join(ROWS)})")
    parser.add_argument("--model", default="mobilefacenet.h5", help="file under DATA/models")
    parser.add_argument("--limit", type=int, default=None, help="images for compare (default: all)")
    parser.add_argument("--faces", type=Path, help="faces to measure on (default: DATA/faces)")
    parser.add_argument("--calib", type=Path, help="faces to calibrate on (default: the measured faces)")
    args = parser.parse_args()
    model, faces = args.data / "models" / args.model, args.faces or args.data / "faces"
    calib = args.calib or faces
    if not model.exists() or not faces.is_dir():
        sys.exit(f"no real data under {args.data}: run `bash ../shared/realdata/build.sh {args.data}` first")
    work = Path(tempfile.mkdtemp(prefix="k210tool-fidelity-"))
    rows = []
    for key in args.rows.split(","):
        print(f"running {key} ...", file=sys.stderr, flush=True)
        try:
            rows.append(run_row(key, model, faces, calib, work, args.limit))
        except Exception as exc:  # noqa: BLE001 - a row that fails is reported, the others still run
            rows.append([ROWS[key][0], f"failed: {(str(exc) or type(exc).__name__).splitlines()[0][:80]}"] + ["-"] * 8)
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)  # each row as soon as it is measured
    print(f"{model} on {faces}, calibrated on {calib} (maix_dock, kmodel v4; cosine and accuracies against the "
          "original float model)")
    print(table(rows, ["convert", "fits 3 MB", "kmodel", "uploads", "KPU layers", "rewrite cosine",
                       "kmodel cosine mean (min)", "10-fold accuracy %", "top-1 %", "convert time"]))


if __name__ == "__main__":
    main()
