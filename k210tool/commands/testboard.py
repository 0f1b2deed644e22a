"""``k210tool test-board``: run a kmodel on the board and check its outputs against the simulator.

Steps (:func:`run_board_test`):

1. **Inputs.** ``N`` seeded random images, or the images of a folder prepared with the model's
   ``Preprocess`` (from the convert summary), then turned into what the board will really feed the KPU
   (:func:`k210tool.maixpy.parity.board_inputs`: RGB565 rounding where the firmware's API needs an image).
2. **Upload** (:mod:`k210tool.device.parity`, as is step 3; ``upload="auto"``: :func:`choose_upload`). The
   kmodel goes to the board's filesystem over the raw REPL (``upload="deploy"``; not copied again when the
   board already holds an identical file) or into its flash over ISP (``"flash"``), or is already there
   (``"skip"``: the board hashes what it holds at ``model_at``, and a different kmodel is a DeviceError). The
   inputs go to ``inputs_dir/NNNN.bin`` (old ``.bin`` files there are removed first), each verified by the
   board (SHA-256 computed on the board).
3. **Run.** The ``parity`` template, rendered for the board and firmware, runs over the raw REPL; its framed,
   checksummed output is parsed (:func:`k210tool.maixpy.parity.parse_parity`). A board that stops answering
   fails with one :class:`~k210tool.errors.DeviceError` line saying after how many vectors.
4. **Compare.** The same inputs go through the reference engine on the host - nncase's Simulator for
   kmodel v5, k210tool's NumPy interpreter for v4 (nncase 1.9 runs v5 only) - and, with ``float_model``,
   through the float Keras model. Per vector: cosine and max abs difference, bit-identity, the board's
   latency. :func:`check_gate` raises :class:`~k210tool.errors.GateError` past the tolerances.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.device.parity import board_failure, model_location, run_on_board, upload_and_flash
from k210tool.errors import GateError, InputError
from k210tool.eval.fidelity import cosine
from k210tool.report import Reporter
from k210tool.sim.engine import ENGINE_CHOICES, choose_engine, make_engine

UPLOAD_MODES = ("auto", "deploy", "flash", "skip")
AUTO_FLASH_BYTES = 256 * 1024  # upload=auto: a bigger kmodel goes over ISP (the REPL copies ~9 KB/s: minutes)
DEFAULT_VECTORS = 4
DEFAULT_INPUTS_DIR = "/sd/k210tool_parity"


@dataclass(frozen=True)
class BoardTestOptions:
    """Everything ``k210tool test-board`` takes (one field per flag)."""

    port: str
    kmodel: Path
    board: str = "maix_dock"
    firmware: str | None = None
    summary: Path | None = None
    float_model: Path | None = None
    vectors: int | None = None  # random inputs; default DEFAULT_VECTORS when no data folder is given
    data: Path | None = None  # a folder of images instead
    max_inputs: int = 32
    seed: int = 0
    upload: str = "deploy"
    model_at: str | None = None  # board path or flash address of the kmodel
    inputs_dir: str = DEFAULT_INPUTS_DIR
    min_cosine: float = 0.999  # board vs reference engine
    max_abs: float | None = None
    exact: bool = False  # require bit-identical outputs
    float_min_cosine: float = 0.9  # board vs float model (quantization costs some)
    engine: str = "auto"
    timeout: float = 60.0  # seconds of silence before the board counts as gone
    baud: int = 115200

    def validate(self) -> None:
        if self.vectors is not None and self.data is not None:
            raise InputError("give --vectors or --data, not both")
        if self.vectors is not None and not 1 <= self.vectors <= 1000:
            raise InputError(f"--vectors {self.vectors} must be between 1 and 1000")
        if self.upload not in UPLOAD_MODES:
            raise InputError(f"unknown upload mode {self.upload!r}", f"use one of {', '.join(UPLOAD_MODES)}")
        if self.engine not in ENGINE_CHOICES:
            raise InputError(f"unknown engine {self.engine!r}", f"use one of {', '.join(ENGINE_CHOICES)}")
        for flag, value in (("--min-cosine", self.min_cosine), ("--float-min-cosine", self.float_min_cosine)):
            if not -1.0 <= value <= 1.0:
                raise InputError(f"{flag} {value} is not a cosine similarity", "use a value in -1..1")
        if self.max_abs is not None and self.max_abs < 0:
            raise InputError("--max-abs must not be negative")
        if self.timeout <= 0:
            raise InputError("--timeout must be positive")
        if not self.inputs_dir.startswith("/") or any(ord(c) < 0x20 for c in self.inputs_dir):
            raise InputError(f"--inputs-dir {self.inputs_dir!r} must be an absolute board path, e.g. /sd/...")


@dataclass
class VectorResult:
    index: int
    source: str  # image file name, or "random #i"
    latency_ms: float | None
    cosine: float  # board vs reference, worst output
    max_abs: float
    identical: bool  # every output bit-identical to the reference
    float_cosine: float | None = None
    float_max_abs: float | None = None


@dataclass
class BoardTestResult:
    port: str
    board: str
    firmware: str
    kpu_api: str
    kmodel: str
    kmodel_version: int
    reference: str  # the host engine the board is compared with
    input_mode: str  # exact | rgb565 (parity.input_mode)
    vectors: list[VectorResult]
    uploaded: list[str] = field(default_factory=list)
    float_model: str | None = None
    tolerances: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def identical(self) -> int:
        return sum(v.identical for v in self.vectors)

    @property
    def min_cosine(self) -> float:
        return min((v.cosine for v in self.vectors), default=float("nan"))

    @property
    def worst_max_abs(self) -> float:
        return max((v.max_abs for v in self.vectors), default=float("nan"))

    @property
    def mean_latency_ms(self) -> float | None:
        times = [v.latency_ms for v in self.vectors if v.latency_ms is not None]
        return sum(times) / len(times) if times else None


# --- the steps -------------------------------------------------------------------------------------------
def make_inputs(pre: Any, vectors: int | None, data: Path | None, max_inputs: int, seed: int,
                reporter: Reporter) -> tuple[list[str], np.ndarray]:
    """(source names, uint8 NHWC batch in the kmodel's channel order) - the host side of the inputs."""
    from k210tool.preprocess import find_images, load_image

    if data is not None:
        paths = find_images(data)
        if not paths:
            raise InputError(f"no images in {data}", "give a folder of .png/.jpg files, or --vectors N")
        if len(paths) > max_inputs:
            reporter.warn(f"{data} has {len(paths)} images: using the first {max_inputs} (--max-inputs)")
            paths = paths[:max_inputs]
        return [str(p.relative_to(data)) for p in paths], np.stack([pre.prepare(load_image(p)) for p in paths])
    n = vectors or DEFAULT_VECTORS
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, 256, size=(n, pre.height, pre.width, pre.channels), dtype=np.uint8)
    return [f"random #{i}" for i in range(n)], batch


def reference_engine(kmodel: bytes, version: int, engine: str) -> tuple[Any, str]:
    """The host engine for the comparison and its description."""
    name = choose_engine(engine, version)
    return make_engine(name, kmodel, "NCHW"), _REFERENCE_NAMES[name]


_REFERENCE_NAMES = {"nncase": "nncase Simulator (nncase 1.9)", "numpy": "k210tool NumPy interpreter"}


def float_outputs(path: Path, pre: Any, batch: np.ndarray, reporter: Reporter | None = None) -> list[np.ndarray]:
    """The float model's (first) output for the board's inputs, one flat array per vector."""
    from k210tool.model.load import LoadOptions
    from k210tool.sim.floatrun import FloatRunner

    run = FloatRunner(path, LoadOptions(), pre, use_cache=False, batch_size=8, reporter=reporter).run(batch)
    return [o.ravel() for o in run.outputs[0]]


def resolve_options(opts: BoardTestOptions, reporter: Reporter) -> BoardTestOptions:
    """``upload="auto"`` made concrete, and ``float_model`` made the model the kmodel was compiled from."""
    import dataclasses

    return dataclasses.replace(opts, upload=choose_upload(opts), float_model=compiled_float_model(opts, reporter))


def choose_upload(opts: BoardTestOptions) -> str:
    """``auto``: the place ``--model-at`` names; else ISP flash for a big kmodel on a serial port (33 s against
    202 s over the REPL for 1.5 MB on the emulator), the REPL for a small one (no reflash and reboot) or for a
    pyserial URL (``socket://``, ``rfc2217://``: no reset lines to enter the ISP bootloader)."""
    if opts.upload != "auto":
        return opts.upload
    if opts.model_at:
        from k210tool.maixpy.models import parse_location

        return "deploy" if parse_location(opts.model_at).path is not None else "flash"
    if "://" in opts.port or not opts.kmodel.is_file():
        return "deploy"
    return "flash" if opts.kmodel.stat().st_size > AUTO_FLASH_BYTES else "deploy"


def compiled_float_model(opts: BoardTestOptions, reporter: Reporter) -> Path | None:
    """The float model to compare with: ``--model``, or the ``X.rewritten.h5`` convert kept beside the kmodel
    when the kmodel was compiled from it (approximate rules ran), resolved as ``compare`` resolves it."""
    if opts.float_model is None or not opts.kmodel.is_file():
        return opts.float_model
    import dataclasses

    from k210tool.commands.compare import CompareOptions, float_models
    from k210tool.compile.summary import read_summary
    from k210tool.sim.kmodelrun import read_kmodel_file

    info = read_kmodel_file(opts.kmodel)
    if opts.summary is not None:
        info = dataclasses.replace(info, summary=read_summary(opts.summary))
    original, model = float_models(CompareOptions(model=opts.float_model, kmodel=opts.kmodel), info, Reporter())
    if original is not None:
        reporter.info(f"the kmodel was compiled from {model.name}, which convert rewrote from {original.name}: "
                      f"comparing the board with {model.name}")
    return model


def compare(run: Any, names: list[str], reference: list[np.ndarray], floats: list[np.ndarray] | None) -> list[VectorResult]:
    """Per-vector comparison of the board's outputs with the reference (and the float model)."""
    rows = []
    for v, name in enumerate(names):
        board_outs = run.outputs[v]
        cos, mad, same = [], [], True
        for i, b in enumerate(board_outs):
            ref = np.asarray(reference[i][v], np.float32).ravel()
            cos.append(cosine(b, ref))
            mad.append(float(np.max(np.abs(b.astype(np.float64) - ref))) if b.size == ref.size else math.inf)
            same = same and b.size == ref.size and b.tobytes() == ref.tobytes()
        fc = fm = None
        if floats is not None:
            f = floats[v]
            fc = cosine(board_outs[0], f)
            fm = float(np.max(np.abs(board_outs[0].astype(np.float64) - f))) if f.size == board_outs[0].size else math.inf
        lat = run.latency_us[v]
        rows.append(VectorResult(v, name, lat / 1000.0 if lat is not None else None, min(cos), max(mad), same, fc, fm))
    return rows


def gate_failures(rows: list[VectorResult], opts: BoardTestOptions) -> list[str]:
    fails = []
    for r in rows:
        if not r.cosine >= opts.min_cosine:  # also catches NaN
            fails.append(f"vector {r.index} ({r.source}): cosine {r.cosine:.6f} < --min-cosine {opts.min_cosine}")
        if opts.max_abs is not None and not r.max_abs <= opts.max_abs:
            fails.append(f"vector {r.index} ({r.source}): max abs difference {r.max_abs:.6g} > --max-abs {opts.max_abs}")
        if opts.exact and not r.identical:
            fails.append(f"vector {r.index} ({r.source}): outputs are not bit-identical to the reference (--exact)")
        if r.float_cosine is not None and not r.float_cosine >= opts.float_min_cosine:
            fails.append(f"vector {r.index} ({r.source}): cosine with the float model {r.float_cosine:.4f} < "
                         f"--float-min-cosine {opts.float_min_cosine}")
    return fails


def check_gate(result: BoardTestResult) -> None:
    """Raise GateError when the board's outputs were outside the tolerances."""
    if result.failures:
        more = f" (+{len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        raise GateError(f"board outputs outside the tolerance: {result.failures[0]}{more}",
                        "a real board should match the simulator closely; check the firmware and the kmodel")


# --- the whole test --------------------------------------------------------------------------------------
def run_board_test(opts: BoardTestOptions, reporter: Reporter | None = None) -> BoardTestResult:
    """Upload, run and compare (see the module doc). The result says pass/fail; :func:`check_gate` raises."""
    from k210tool.boards import get_board
    from k210tool.compile.kmodel import kmodel_version
    from k210tool.maixpy import parity
    from k210tool.maixpy.models import describe_model
    from k210tool.maixpy.render import ScriptOptions, render_script, require_micropython

    reporter = reporter or Reporter()
    opts.validate()
    opts = resolve_options(opts, reporter)
    start = time.monotonic()
    board = get_board(opts.board, opts.firmware)
    require_micropython(board)
    loc = model_location(board, opts.kmodel.name, opts.upload, opts.model_at, opts.inputs_dir)
    if not opts.kmodel.is_file():
        raise InputError(f"kmodel {opts.kmodel} does not exist")
    data = opts.kmodel.read_bytes()
    version = kmodel_version(data)
    model = describe_model(opts.kmodel, loc, opts.summary)
    pre = model.preprocess
    # renders, lints and compiles for the board; refuses a kmodel the firmware cannot load - before any I/O
    script = render_script("parity", board, model=opts.kmodel, summary=opts.summary, model_at=loc,
                           options=ScriptOptions(inputs_dir=opts.inputs_dir.rstrip("/")), reporter=reporter)
    names, batch = make_inputs(pre, opts.vectors, opts.data, opts.max_inputs, opts.seed, reporter)
    fed = parity.board_inputs(batch, board.firmware.kpu_api)
    with reporter.stage("reference"):
        engine, ref_name = reference_engine(data, version, opts.engine)
        reference = engine.run(fed)
    floats = float_outputs(opts.float_model, pre, fed, reporter) if opts.float_model is not None else None
    uploaded = upload_and_flash(opts.port, opts.baud, board, opts.kmodel, loc, data, fed, opts.inputs_dir,
                                opts.upload, reporter)
    text = run_on_board(opts.port, opts.baud, script.source, len(names), opts.timeout, reporter)
    run = parity.parse_parity(text, strict=False)
    board_failure(run)
    rows = compare(run, names, reference, floats)
    result = BoardTestResult(
        opts.port, board.id, board.firmware.id, board.firmware.kpu_api, str(opts.kmodel), version, ref_name,
        parity.input_mode(board.firmware.kpu_api, pre.channels), rows, uploaded,
        str(opts.float_model) if opts.float_model else None,
        {"min_cosine": opts.min_cosine, "max_abs": opts.max_abs, "exact": opts.exact,
         "float_min_cosine": opts.float_min_cosine if opts.float_model else None})
    result.failures = gate_failures(rows, opts)
    result.seconds = time.monotonic() - start
    return result


__all__ = ["BoardTestOptions", "BoardTestResult", "VectorResult", "check_gate", "compare",
           "gate_failures", "make_inputs", "reference_engine", "run_board_test"]
