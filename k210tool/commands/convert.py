"""``convert``: model file -> kmodel + summary. The pipeline every user runs first.

load (cut the training head, fix the input size) -> calibration images -> exact lowering for the KPU (and the
approximate rules the user asked for, refused below a float cosine of 0.99 unless accepted) -> k210tool's
KPU backend (per-channel quantization, PReLU on the KPU), or nncase 1.9 for what the backend cannot express
-> kmodel version for the board -> fit checks -> atomic writes of ``OUT.kmodel`` and ``OUT.kmodel.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool import __version__
from k210tool.boards import Board, all_firmware, get_board
from k210tool.compile.calibration_source import (
    CalibrationOptions,
    calibration_images,
    check_calibration_source,
)
from k210tool.compile.nncase_backend import NNCASE_VERSION
from k210tool.compile.pipeline import (
    BACKENDS,
    Compiled,
    CompileOptions,
    check_input_fits,
    choose_kmodel_version,
    compile_model,
    refuse_what_cannot_fit,
    transcoder,
)
from k210tool.compile.summary import Memory, OpCounts, Summary, TensorInfo, summary_path
from k210tool.errors import DoesNotFitError, FirmwareError, InputError
from k210tool.fileio import check_output_path, json_text, write_together
from k210tool.model.load import LoadedModel, LoadOptions, load_model
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

FLOAT_LOSS_LIMIT = 0.99  # approximate rewrites below this float cosine need --accept-float-loss


@dataclass(frozen=True)
class ConvertOptions:
    model: Path
    output: Path | None = None
    board: str = "maix_dock"
    firmware: str | None = None
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: tuple[float, float] | None = None
    color: str = "RGB"
    resize: str = "crop"
    load: LoadOptions = field(default_factory=LoadOptions)
    rewrite: bool = True
    prelu: str = "keep"  # keep (exact) | relu | leaky (approximate, only when asked)
    approximate: tuple[str, ...] = ()  # approximate rewrite rules asked for by name
    accept_float_loss: bool = False  # write the kmodel even when approximate rules cost float accuracy
    backend: str = "auto"  # auto (k210tool's KPU backend, nncase when it cannot) | k210tool | nncase
    prelu_layout: str = "auto"  # how the k210tool backend lays per-channel PReLU out: auto | mixed | zones | split
    dense: str = "auto"  # where the k210tool backend runs the embedding's dense layer: auto | cpu | kpu
    kmodel_version: int | None = None  # None: what the board's firmware loads
    allow_overflow: bool = False  # write the kmodel even when it does not fit the board's RAM
    keep_dump: Path | None = None

    def compile_options(self) -> CompileOptions:
        return CompileOptions(self.backend, self.calibration.method, self.prelu_layout, self.dense,
                              self.allow_overflow, self.keep_dump)


@dataclass
class ConvertResult:
    kmodel: Path
    summary_file: Path
    summary: Summary


def default_output(model: Path) -> Path:
    return model.with_suffix(".kmodel")


def convert(opts: ConvertOptions, reporter: Reporter | None = None) -> ConvertResult:
    rep = reporter or Reporter()
    board = get_board(opts.board, opts.firmware)
    out = check_output_path(opts.output or default_output(Path(opts.model)), _inputs(opts))
    for extra in (summary_path(out), rewritten_path(out)):
        check_output_path(extra, _inputs(opts))
    if opts.backend not in BACKENDS:
        raise InputError(f"--backend {opts.backend!r}", f"use one of {', '.join(BACKENDS)}")
    check_calibration_source(opts.calibration)
    version = choose_kmodel_version(board, opts.kmodel_version, rep)

    with rep.stage("load"):
        loaded = load_model(opts.model, opts.load, rep)
    check_input_fits(loaded.input_shape, board, opts.allow_overflow)
    refuse_what_cannot_fit(loaded, board, opts.allow_overflow)
    pre = Preprocess.for_input(loaded.input_shape, opts.mean, opts.std, opts.input_range, opts.color,
                               opts.resize)
    with rep.stage("calibration data"):
        calib, calib_desc = calibration_images(opts.calibration, pre, rep)
    rewrite_report = _rewrite(loaded, opts, pre.normalize(calib[:64]), calib_desc, rep)
    compiled = compile_model(loaded, opts.compile_options(), pre, calib, rep, version, board)
    kmodel = compiled.kmodel
    if version == 4:
        with rep.stage("transcode to v4"):
            kmodel = transcoder()(kmodel)

    summary = _summarize(opts, loaded, out, kmodel, version, board, pre, compiled, calib_desc, rewrite_report, rep)
    _check_fit(summary, board, opts, rep, kmodel)
    summary.float_model = _save_reference(loaded, out) or str(opts.model)
    summary_file = summary_path(out)
    write_together([(out, kmodel), (summary_file, json_text(summary.to_dict()).encode())])
    return ConvertResult(out, summary_file, summary)


def _inputs(opts: ConvertOptions) -> list[Path | str | None]:
    """Every file convert reads: no output may replace one of them."""
    cal = opts.calibration.source
    return [opts.model, opts.load.custom_objects, cal if cal not in (None, "random") else None]


def rewritten_path(out: Path) -> Path:
    return out.with_name(out.stem + ".rewritten.h5")


def _rewrite(loaded: LoadedModel, opts: ConvertOptions, images: np.ndarray, desc: str,
             rep: Reporter) -> dict[str, Any] | None:
    if not opts.rewrite or not loaded.is_keras:
        return None
    from k210tool.model.rewrite import RewriteOptions, rewrite_loaded

    with rep.stage("rewrite"):
        report = rewrite_loaded(loaded, RewriteOptions(prelu=opts.prelu, approximate=opts.approximate), rep,
                                images, desc)
    inexact = [c for c in report.changes if not c.exact]
    if inexact and report.cosine is not None:
        rules = ", ".join(sorted({c.rule for c in inexact}))
        loss = (f"the approximate rewrite ({rules}) leaves an embedding cosine of {report.cosine:.4f} "
                f"(min {report.cosine_min:.4f}) against the original on {desc}")
        if report.cosine < FLOAT_LOSS_LIMIT and not opts.accept_float_loss:
            raise InputError(loss + f", below {FLOAT_LOSS_LIMIT}: the kmodel would not recognise the same faces",
                             "drop --prelu relu/leaky and --approximate (the exact lowering is the default), "
                             "or pass --accept-float-loss and recover with `k210tool distill`")
        rep.warn(loss + ("" if report.cosine >= FLOAT_LOSS_LIMIT else " (accepted: --accept-float-loss)"))
    return report.to_dict()


def _save_reference(loaded: LoadedModel, out: Path) -> str | None:
    """Keep the float model the kmodel computes beside it when approximate rules changed it: it is what
    `compare` should measure the kmodel against (the exact lowering alone computes the original)."""
    if loaded.reference_model is None:
        return None
    from k210tool.model.rewrite import save_model

    path = rewritten_path(out)
    save_model(loaded.reference_model, path)
    return str(path)


def _summarize(opts: ConvertOptions, loaded: LoadedModel, out: Path, kmodel: bytes, version: int, board: Board,
               pre: Preprocess, compiled: Compiled, calib_desc: str, rewrite_report: dict[str, Any] | None,
               rep: Reporter) -> Summary:
    from k210tool.compile.kmodel import read_kmodel
    from k210tool.compile.kmodel.footprint import board_fit, census

    km = read_kmodel(kmodel)
    fit = board_fit(km, board.firmware)
    if compiled.ops is not None:
        ops = compiled.ops
    else:
        c = census(km)
        ops = OpCounts(c.kpu_convs, c.kpu_uploads, c.kpu_downloads, c.cpu_ops, c.cpu_compute_ops, {})
    in_shape = [1, pre.channels, pre.height, pre.width]
    out_shape = [1, *[int(d) for d in loaded.output_shape]]
    loads_on = sorted(f.id for f in all_firmware().values() if board_fit(km, f).fits)  # version and memory
    memory = Memory.from_fit(fit)
    quant = dict(compiled.quantization, calibration=calib_desc)
    return Summary(
        kmodel=str(out),
        kmodel_version=version,
        kmodel_size=len(kmodel),
        kmodel_sha256=hashlib.sha256(kmodel).hexdigest(),
        source=str(opts.model),
        source_format=loaded.format,
        inputs=[TensorInfo("input", in_shape, "uint8", "NCHW")],
        outputs=[TensorInfo("output", out_shape, "float32")],
        preprocess=pre.to_dict(),
        quantization=quant,
        ops=ops,
        memory=memory,
        board=board.id,
        firmware=board.firmware.id,
        flash_size=board.flash_size,
        fits_flash=len(kmodel) <= board.flash_room,
        loads_on=loads_on,
        board_loads_it=board.firmware.loads(version),
        head_cut=(loaded.head_cut.__dict__ if loaded.head_cut else None),
        rewrite=rewrite_report,
        stage_seconds={k: round(v, 2) for k, v in rep.stage_seconds.items()},
        warnings=list(rep.warnings),
        tool=f"k210tool {__version__}",
        nncase=NNCASE_VERSION,
        backend=compiled.backend,
        kpu=compiled.kpu,
        fallback=compiled.fallback,
        input_rotation=loaded.input_rotation,
    )


def dense_advice(kmodel: bytes, excess: int, backend: str, fallback: str | None, dense: str = "auto") -> str | None:
    """When a model is too big only because a dense layer runs in float on the CPU: say so, and how to move it
    onto the KPU in uint8 (a quarter of the bytes). None when that would not be enough."""
    from k210tool.compile.kmodel import read_kmodel
    from k210tool.compile.kmodel.footprint import largest_cpu_float_weights

    weights = largest_cpu_float_weights(read_kmodel(kmodel))
    if weights * 3 // 4 < excess:
        return None
    what = (f"the dense layer runs in float on the CPU ({weights / 2**20:.2f} MiB of weights); on the KPU as a "
            "1x1 conv its weights are uint8, a quarter of the bytes")
    if backend == "k210tool":  # --dense auto has already tried the KPU
        return f"{what}: convert with --dense kpu" if dense == "cpu" else None
    if fallback:
        return (f"{what}, which k210tool's KPU backend does but cannot for this model ({fallback}) and nncase "
                "does not: change that, or shrink the dense layer's input (a global depthwise conv before it)")
    return f"{what}, which k210tool's KPU backend does and nncase does not: convert with --backend auto"


def _check_fit(s: Summary, board: Board, opts: ConvertOptions, rep: Reporter, kmodel: bytes) -> None:
    if not s.fits_flash:
        raise DoesNotFitError(
            f"the kmodel ({s.kmodel_size:,} bytes) does not fit the {board.flash_room:,} bytes of flash "
            f"{board.name} has for models",
            "make the model smaller (fewer channels, smaller input)",
        )
    if not s.memory.fits:
        msg = f"the kmodel does not load on {board.id}: {s.memory.reason}"
        if not opts.allow_overflow:
            hint = ("see `k210tool check` for what takes the memory, choose a board with more RAM, or pass "
                    "--allow-overflow to write the kmodel anyway")
            advice = dense_advice(kmodel, s.memory.total - s.memory.board_limit, s.backend, s.fallback, opts.dense)
            raise DoesNotFitError(msg, f"{advice}; --allow-overflow writes it anyway" if advice else hint)
        rep.warn(msg + " (written anyway: --allow-overflow)")
        s.warnings = list(rep.warnings)
    if not s.board_loads_it:
        raise FirmwareError(f"{board.firmware.name} cannot load kmodel v{s.kmodel_version}")
