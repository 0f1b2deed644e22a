"""Run a kmodel file on many images with the right engine: what ``compare`` (and benchmarks) call.

Engine choice (``auto``): nncase's Simulator is the reference but runs only kmodel v5, at ~0.5 s per
112x112 image; the NumPy interpreter runs v4 and v5, batched and faster. For a v5 file ``auto`` runs the
first images on both and keeps NumPy only when its outputs are identical byte for byte; otherwise nncase
runs everything and the difference is reported. v4 files run on the NumPy interpreter (v4 runtime semantics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter
from k210tool.sim.engine import choose_engine, make_engine
from k210tool.sim.pool import simulate

CHECK_IMAGES = 4  # images of the bit-exactness check that decides ``auto``


@dataclass
class KmodelInfo:
    path: Path
    data: bytes
    version: int
    input_shape: tuple[int, ...]  # as the kmodel stores it, e.g. (1, 3, 112, 112)
    input_layout: str  # NCHW | NHWC
    summary: Any  # k210tool.compile.summary.Summary | None

    @property
    def input_hwc(self) -> tuple[int, int, int]:
        s = self.input_shape[-3:]
        return (s[1], s[2], s[0]) if self.input_layout == "NCHW" else (s[0], s[1], s[2])

    def preprocess(self, reporter: Reporter | None = None) -> Preprocess:
        """The preprocessing convert recorded in the summary, else the default (x-127.5)/128 RGB, with a warning."""
        h, w, c = self.input_hwc
        if self.summary is not None:
            pre = self.summary.get_preprocess()
            if (pre.height, pre.width, pre.channels) != (h, w, c):
                raise InputError(f"the summary {self.path.name}.json describes {pre.height}x{pre.width}x{pre.channels} "
                                 f"input, the kmodel takes {h}x{w}x{c}", "re-run convert to write a matching summary")
            return pre
        if reporter is not None:
            reporter.warn(f"no convert summary beside {self.path.name}: assuming RGB pixels normalised as "
                          "(x - 127.5) / 128")
        return Preprocess.for_input((h, w, c))


def read_kmodel_file(path: Path | str, reporter: Reporter | None = None) -> KmodelInfo:
    """Read and parse a kmodel (a corrupt file is a one-line :class:`KmodelError`), with its convert summary."""
    import hashlib

    from k210tool.compile.kmodel import read_kmodel
    from k210tool.compile.summary import read_summary, summary_path

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read kmodel {p}: {exc.strerror or exc}") from None
    model = read_kmodel(data)
    if len(model.inputs) != 1:
        raise InputError(f"{p.name} has {len(model.inputs)} inputs; compare feeds one image input")
    summary = read_summary(p) if summary_path(p).exists() else None
    if summary is not None and summary.kmodel_sha256 and summary.kmodel_sha256 != hashlib.sha256(data).hexdigest():
        if reporter is not None:
            reporter.warn(f"{summary_path(p).name} was written for another kmodel (its SHA-256 differs)")
    shape = tuple(int(d) for d in model.inputs[0].shape)
    if len(shape) < 3:
        raise InputError(f"{p.name} takes a {list(shape)} input, not an image")
    layout = summary.inputs[0].layout if summary is not None and summary.inputs and summary.inputs[0].layout else (
        "NCHW" if shape[-3] in (1, 3) and shape[-1] not in (1, 3) else "NHWC")
    return KmodelInfo(p, data, model.version, shape, layout, summary)


@dataclass
class KmodelRun:
    outputs: list[np.ndarray]
    engine: str
    note: str  # why this engine
    workers: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        n = len(self.outputs[0]) if self.outputs else 0
        return n / self.seconds if self.seconds > 0 else 0.0


def resolve_engine(requested: str, version: int) -> tuple[str, str]:
    """(engine, note) for a kmodel version, without running anything; ``auto`` on v5 stays ``auto``."""
    name = choose_engine(requested, version)
    if version == 4:
        return name, "kmodel v4: NumPy interpreter with the v4 runtime's semantics (nncase cannot run v4)"
    if requested == "auto":  # run_kmodel checks the NumPy interpreter against nncase on the first images
        return "auto", ""
    return name, _AS_ASKED[name]


_AS_ASKED = {"nncase": "nncase Simulator (the reference), as asked",
             "numpy": "NumPy interpreter, as asked (not checked against nncase)"}


def run_kmodel(info: KmodelInfo, images: np.ndarray, engine: str = "auto", workers: int | None = None,
               reporter: Reporter | None = None) -> KmodelRun:
    """The kmodel's outputs for ``images`` (uint8 NHWC), in order, on every core."""
    rep = reporter or Reporter()
    name, note = resolve_engine(engine, info.version)
    begin = time.perf_counter()
    head: list[np.ndarray] = []
    if name == "auto":
        name, note, head = _check_numpy(info, images[:CHECK_IMAGES], rep)
    rest = images[len(head[0]) if head else 0:]
    run = simulate(info.data, rest, name, workers=workers, input_layout=info.input_layout, reporter=rep) if len(rest) \
        else None
    if run is None:
        outputs = head
    elif head:
        outputs = [np.concatenate([h, r]) for h, r in zip(head, run.outputs, strict=True)]
    else:
        outputs = run.outputs
    # batch first whatever the engine does with the kmodel's batch-less output shapes (v4 stores (128,))
    outputs = [o if o.ndim > 1 and o.shape[0] == len(images) else o.reshape(len(images), -1) for o in outputs]
    return KmodelRun(outputs, name, note, run.workers if run is not None else 1, time.perf_counter() - begin)


def _check_numpy(info: KmodelInfo, first: np.ndarray, rep: Reporter) -> tuple[str, str, list[np.ndarray]]:
    """Run the first images on nncase and on NumPy: NumPy from here on only if identical byte for byte."""
    reference = simulate(info.data, first, "nncase", workers=1, input_layout=info.input_layout, reporter=rep,
                         description="checking the NumPy interpreter against nncase").outputs
    try:
        candidate = make_engine("numpy", info.data, info.input_layout).run(first)
    except Exception as exc:  # noqa: BLE001 - any failure of the candidate only means: use the reference
        why = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        rep.warn(f"NumPy interpreter unavailable for this kmodel ({why}): simulating with nncase")
        return "nncase", "nncase Simulator: the NumPy interpreter cannot run this kmodel", reference
    same = len(candidate) == len(reference) and all(
        c.shape == r.shape and c.tobytes() == r.tobytes() for c, r in zip(candidate, reference, strict=False))
    if same:
        return "numpy", f"NumPy interpreter: bit-exact with nncase on the first {len(first)} image(s)", reference
    worst = max((float(np.max(np.abs(c.astype(np.float64) - r))) for c, r in zip(candidate, reference, strict=False)
                 if c.shape == r.shape), default=float("nan"))
    rep.warn(f"the NumPy interpreter differs from nncase on this kmodel (max abs difference {worst:.3g} on the "
             f"first {len(first)} images): simulating with nncase, the reference")
    return "nncase", "nncase Simulator: the NumPy interpreter was not bit-exact on this kmodel", reference
