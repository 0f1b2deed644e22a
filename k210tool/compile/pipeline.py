"""The compile stage ``convert`` and ``check`` share: which kmodel version the board gets, what cannot fit the
board (refused before the slow stages), and the compile itself - k210tool's KPU backend, or nncase 1.9 for
what the backend cannot express (or when asked) - into a :class:`Compiled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.boards import Board, all_firmware
from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
from k210tool.compile.summary import OpCounts
from k210tool.errors import DoesNotFitError, InputError
from k210tool.model.load import LoadedModel
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

BACKENDS = ("auto", "k210tool", "nncase")


@dataclass(frozen=True)
class CompileOptions:
    """The choices the compile stage takes (``convert``'s flags of the same names)."""

    backend: str = "auto"  # auto (k210tool's KPU backend, nncase when it cannot) | k210tool | nncase
    calib_method: str = "auto"  # auto | minmax | percentile (k210tool backend) | nncase's no_clip, l2, kld_m*, cdf
    prelu_layout: str = "auto"  # how the k210tool backend lays per-channel PReLU out: auto | mixed | zones | split
    dense: str = "auto"  # where the k210tool backend runs the embedding's dense layer: auto | cpu | kpu
    allow_overflow: bool = False  # judge the file against the flash only, not the model memory
    keep_dump: Path | None = None  # keep nncase's dump folder here


def choose_kmodel_version(board: Board, requested: int | None, reporter: Reporter) -> int:
    """v5 is what nncase 1.9 writes; v4 is transcoded from it for firmware that cannot load v5."""
    available = {5}
    if transcoder() is not None:
        available.add(4)
    if requested is not None:
        if requested not in (4, 5):
            raise InputError(f"--kmodel-version {requested} is not supported", "use 4 or 5")
        if requested not in available:
            raise InputError("this k210tool cannot write kmodel v4 yet")
        board.require_kmodel_version(requested)
        return requested
    for version in (5, 4):
        if version in available and board.firmware.loads(version):
            return version
    reporter.warn(f"{board.firmware.name} cannot load kmodel v5 and no v4 writer is available: writing v5")
    return 5


def transcoder() -> Any:
    try:
        from k210tool.compile.kmodel import transcode_to_v4
    except ImportError:
        return None
    return transcode_to_v4


@dataclass
class Compiled:
    """A compile's result, whichever backend made it."""

    kmodel: bytes  # v5
    backend: str  # k210tool | nncase
    quantization: dict[str, Any]
    ops: OpCounts | None = None  # from nncase's dump (None: read from the kmodel)
    memory: Any = None  # nncase's MemoryUsage
    kpu: dict[str, Any] | None = None  # the k210tool backend's figures: layers, MACs, weight bytes
    fallback: str | None = None  # why the k210tool backend did not compile it
    dump: Any = None  # nncase's parsed dump (nncase only)


def fits_memory(v5: bytes, version: int, board: Board) -> bool:
    """Whether the kmodel, in the version the board gets, loads on the board's firmware (memory)."""
    from k210tool.compile.kmodel.footprint import board_fit

    return board_fit(transcoder()(v5) if version == 4 else v5, board.firmware).problem in ("", "version")


def compile_model(loaded: LoadedModel, opts: CompileOptions, pre: Preprocess, calib: np.ndarray, rep: Reporter,
                  version: int, board: Board) -> Compiled:
    """k210tool's KPU backend, or nncase 1.9 when the backend cannot express the model (or is not asked)."""
    from k210tool.compile.netplan import KpuRamError, PlanError

    method = opts.calib_method
    why = declined = None
    if loaded.is_keras and opts.backend in ("auto", "k210tool"):
        from k210tool.compile.kpu_backend import BackendOptions, compile_kpu

        try:
            with rep.stage("compile (k210tool KPU backend)"):
                res = compile_kpu(loaded.model, loaded.graph, pre, calib,
                                  BackendOptions("minmax" if method == "auto" else method, opts.prelu_layout,
                                                 opts.dense), rep,
                                  fits=lambda v5: fits_memory(v5, version, board),
                                  max_file=_backend_limit(opts, board))
            st = res.stats
            kpu = {"layers": st.kpu_layers, "kpu_macs": st.kpu_macs, "cpu_macs": st.cpu_macs,
                   "kpu_weight_bytes": st.kpu_weight_bytes, "cpu_weight_bytes": st.cpu_weight_bytes,
                   "kpu_ram_peak": st.kpu_ram_peak, "uploads": st.uploads, "prelu_layout": res.layout,
                   "dense": res.dense, "per_op": st.per_op, "splits": res.splits}
            quant = {"input_type": "uint8", "activations": "uint8, per-channel scale and zero point",
                     "weights": "uint8, per output channel (symmetric)", "calibrate_method": res.ranges.method}
            return Compiled(res.kmodel, "k210tool", quant, kpu=kpu)
        except PlanError as exc:
            if opts.backend == "k210tool" or isinstance(exc, KpuRamError):  # nncase fails on that one too
                raise
            why, declined = exc.message, f"k210tool's KPU backend {declined_text(exc)} ({exc.message})"
            rep.info(f"{declined}: compiling with nncase")
    elif not loaded.is_keras and opts.backend == "k210tool":
        raise InputError(f"k210tool's KPU backend reads Keras models; {loaded.path} is {loaded.format}",
                         "use --backend nncase (or auto)")
    try:
        refuse_what_cannot_fit(loaded, board, opts.allow_overflow, nncase=True)  # nncase compiles it: before its minutes
    except DoesNotFitError as exc:
        if why is None:
            raise
        raise DoesNotFitError(f"{exc.message}; {declined}", exc.hint) from None
    if method in ("minmax", "percentile"):
        raise InputError(f"--calib-method {method} is k210tool's backend's; nncase compiles this model",
                         "use no_clip, l2, kld_m0/1/2 or cdf")
    with rep.stage("tflite"):
        model_bytes = _model_bytes(loaded)
    settings = NncaseSettings(pre, model_format="onnx" if loaded.raw is not None and loaded.format == "onnx"
                              else "tflite", model_layout=loaded.input_layout,
                              calibrate_method="no_clip" if method == "auto" else method)
    turned = loaded.input_rotation == 180  # nncase compiles the turned network; the kmodel then turns its input
    with rep.stage("compile (nncase)"):
        result = compile_kmodel(model_bytes, settings, np.ascontiguousarray(calib[:, ::-1, ::-1]) if turned else calib,
                                rep, keep_dump=opts.keep_dump)
    kmodel = result.kmodel
    if turned:
        from k210tool.compile.kmodel.turn import turn_input

        kmodel = turn_input(kmodel)
    dump = result.dump
    quant = {"input_type": "uint8", "quant_type": "uint8", "w_quant_type": "uint8",
             "calibrate_method": settings.calibrate_method,
             "nncase_input_range": settings.compile_options().get("input_range")}
    ops = OpCounts(dump.kpu_convs, dump.kpu_uploads, dump.kpu_downloads, dump.cpu_ops, dump.cpu_compute_ops,
                   dump.problem_ops)
    return Compiled(kmodel, "nncase", quant, ops, dump.memory, fallback=why, dump=dump)


K210_SRAM = 8 << 20  # all of the K210's SRAM (6 MiB general + 2 MiB KPU): no input larger than this can run


def check_input_fits(shape: tuple[int, int, int], board: Board, allow_overflow: bool) -> None:
    """The input image alone must fit the board's model memory. Checked before calibration: for a huge input
    its images (and their float copies for the rewrite's measurement) would take gigabytes, and nncase crashes."""
    need = int(np.prod(shape))
    if need <= board.model_memory or (allow_overflow and need <= K210_SRAM):
        return
    h, w, c = shape
    raise DoesNotFitError(f"the model's {h}x{w}x{c} input alone needs {need / 2**20:.1f} MiB; {board.firmware.name} "
                          f"leaves {board.model_memory / 2**20:.2f} MiB for a model"
                          + ("" if need <= K210_SRAM else " and the K210 has 8 MiB of SRAM in all"),
                          "use a smaller input (--input-size H W when the model allows it); `k210tool check` shows "
                          "the memory per layer")


def max_file(board: Board, allow_overflow: bool = False) -> int:
    """The most bytes a kmodel file may take on the board: its flash room and (unless the user allows an
    overflow) the model memory its firmware leaves, which the whole file is read into."""
    return board.flash_room if allow_overflow else min(board.flash_room, board.model_memory)


def _backend_limit(opts: CompileOptions, board: Board) -> int | None:
    """The file size past which k210tool's backend gives the model up to nncase: none when the user chose its
    layout (--dense, --prelu-layout, --backend k210tool) - the kmodel is then judged with advice."""
    if opts.backend == "k210tool" or opts.dense != "auto" or opts.prelu_layout != "auto":
        return None
    return max_file(board, opts.allow_overflow)


def declined_text(exc: Exception) -> str:
    from k210tool.compile.netplan import BackendTooBig

    return "cannot fit it" if isinstance(exc, BackendTooBig) else "cannot express this model"


def refuse_what_cannot_fit(loaded: LoadedModel, board: Board, allow_overflow: bool = False, nncase: bool = False) -> None:
    """Refuse, before the slow stages, a model that cannot fit the board: its weights alone (every weight is at
    least a byte of the kmodel, four when nncase, about to compile it, keeps the layer on the CPU; the kmodel
    must fit the flash and is loaded whole into RAM by the firmware), and, for nncase, the KPU RAM of the
    biggest layer it gives the KPU. The floors (:mod:`k210tool.model.size`) stay below what the compiler can
    reach: a model that fits is never refused."""
    if loaded.graph is None:
        return
    from k210tool.model.size import KPU_RAM, nncase_kpu_ram, weight_floor

    worst = nncase_kpu_ram(loaded.graph) if nncase else None
    if worst is not None and worst[2] > KPU_RAM:
        name, what, need = worst
        raise DoesNotFitError(
            f"the model does not fit the K210's {KPU_RAM / 2**20:.0f} MiB of KPU RAM: layer {name!r} ({what}) would "
            f"run on the KPU with its input and output maps there, at least {need / 2**20:.2f} MiB (nncase, which "
            "compiles what k210tool's backend cannot, would run out of KPU memory after minutes)",
            f"fewer channels (or a smaller input) for {name!r}, so its two maps fit 2 MiB")
    floor = weight_floor(loaded.graph, nncase=nncase)
    room = board.flash_room
    ram = None if allow_overflow else board.model_memory
    if floor.bytes <= room and (ram is None or floor.bytes <= ram):
        return
    if ram is not None and floor.bytes > ram:
        where = f"{board.firmware.name} loads the whole kmodel into the {ram / 2**20:.2f} MiB it leaves for a model"
        most = max(all_firmware().values(), key=lambda f: f.model_memory)
        if floor.bytes > most.model_memory:
            where += f"; no K210 firmware leaves that much (the most: {most.name}, {most.model_memory / 2**20:.2f} MiB)"
    else:
        where = f"{board.name} has {room / 2**20:.2f} MiB of flash for models"
    cpu = (f", nncase keeping {', '.join(floor.cpu[:3])} in float32 on the CPU (more than 1024 channels or a "
           "kernel the KPU lacks)" if floor.cpu else "")
    raise DoesNotFitError(
        f"the model does not fit {board.id}: its convolution and dense weights alone make a kmodel of at least "
        f"{floor.bytes / 2**20:.2f} MiB (a byte per weight{cpu}); {where}",
        f"make the model smaller: its largest layers are {floor.describe_largest()} - fewer filters or units there"
        + (", at most 1024 channels a layer" if floor.cpu else ""))


def _model_bytes(loaded: LoadedModel) -> bytes:
    """The model for nncase: the file as given, or the lowered Keras model (turned, if it was) as TFLite."""
    if loaded.raw is not None:
        return loaded.raw
    from k210tool.compile.tflite import export_tflite

    return export_tflite(loaded.model, loaded.input_shape)


