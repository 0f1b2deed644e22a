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
from k210tool.compile.nncase_backend import NNCASE_VERSION, NncaseSettings, compile_kmodel
from k210tool.compile.summary import Memory, OpCounts, Summary, TensorInfo, summary_path
from k210tool.errors import DoesNotFitError, FirmwareError, InputError
from k210tool.fileio import check_output_path, json_text, write_together
from k210tool.model.load import LoadedModel, LoadOptions, load_model
from k210tool.preprocess import Preprocess, find_images, load_array, load_folder
from k210tool.report import Reporter

BACKENDS = ("auto", "k210tool", "nncase")
FLOAT_LOSS_LIMIT = 0.99  # approximate rewrites below this float cosine need --accept-float-loss


@dataclass(frozen=True)
class CalibrationOptions:
    source: str | None = None  # a folder of images, a .npy file, or "random"
    count: int = 100
    seed: int = 0
    method: str = "auto"  # auto | minmax | percentile (k210tool backend) | nncase's no_clip, l2, kld_m*, cdf


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


@dataclass
class ConvertResult:
    kmodel: Path
    summary_file: Path
    summary: Summary


def default_output(model: Path) -> Path:
    return model.with_suffix(".kmodel")


def make_preprocess(opts: ConvertOptions, shape: tuple[int, int, int]) -> Preprocess:
    h, w, c = shape
    color = "GRAY" if c == 1 else opts.color
    if opts.input_range is not None:
        if opts.mean is not None or opts.std is not None:
            raise InputError("give either --input-range or --mean/--std, not both")
        return Preprocess.from_input_range(*opts.input_range, height=h, width=w, channels=c, color=color,
                                           resize=opts.resize)
    kw: dict[str, Any] = {}
    if opts.mean is not None:
        kw["mean"] = opts.mean
    if opts.std is not None:
        kw["std"] = opts.std
    if c != 3:
        kw.setdefault("mean", (127.5,))
        kw.setdefault("std", (128.0,))
    return Preprocess(height=h, width=w, channels=c, color=color, resize=opts.resize, **kw)


def _check_calibration_source(cal: CalibrationOptions) -> None:
    """Cheap checks before the slow model load."""
    if cal.source is None:
        raise InputError("no calibration data",
                         "pass --calib DIR (face crops), --calib FILE.npy, or --calib random to quantize without "
                         "data (accuracy is then not meaningful)")
    if cal.count < 1:
        raise InputError("--calib-count must be at least 1")
    if cal.source == "random":
        return
    p = Path(cal.source)
    if not p.exists():
        raise InputError(f"calibration source {p} does not exist")
    if not p.is_dir() and not p.is_file():
        raise InputError(f"calibration source {p} is neither a folder nor a regular file")
    if p.is_dir() and not find_images(p):
        raise InputError(f"calibration folder {p} holds no images (jpg/png/bmp, searched recursively)",
                         "point --calib at a folder of face crops")
    if p.is_file() and p.suffix.lower() != ".npy":
        raise InputError(f"calibration file {p} is not a .npy array", "use a folder of images or a .npy file")


def calibration_images(cal: CalibrationOptions, pre: Preprocess, reporter: Reporter) -> tuple[np.ndarray, str]:
    """Prepared uint8 calibration batch and a description of where it came from."""
    assert cal.source is not None
    if cal.source == "random":
        reporter.warn("calibrating on random images: the kmodel runs, but its accuracy is not meaningful")
        rng = np.random.default_rng(cal.seed)
        n = min(cal.count, 16)
        return rng.integers(0, 256, (n, pre.height, pre.width, pre.channels), dtype=np.uint8), "random"
    p = Path(cal.source)
    if p.is_dir():
        loaded = load_folder(p, pre, cal.count, seed=cal.seed, reporter=reporter)
        return loaded.images, f"{len(loaded.images)} images from {p}"
    arr = load_array(p, pre)
    if len(arr) > cal.count:
        arr = arr[np.random.default_rng(cal.seed).choice(len(arr), cal.count, replace=False)]
    return arr, f"{len(arr)} images from {p}"


def choose_kmodel_version(board: Board, requested: int | None, reporter: Reporter) -> int:
    """v5 is what nncase 1.9 writes; v4 is transcoded from it for firmware that cannot load v5."""
    available = {5}
    if _transcoder() is not None:
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


def _transcoder() -> Any:
    try:
        from k210tool.compile.kmodel import transcode_to_v4
    except ImportError:
        return None
    return transcode_to_v4


def flash_room(board: Board) -> int:
    """Bytes of flash from the board's kmodel address up to the next reserved region (or the end)."""
    start = board.kmodel_address
    end = board.flash_size
    for region in board.firmware.flash_reserved:
        if region.start >= start:
            end = min(end, region.start)
    return max(0, end - start)


def convert(opts: ConvertOptions, reporter: Reporter | None = None) -> ConvertResult:
    rep = reporter or Reporter()
    board = get_board(opts.board, opts.firmware)
    out = check_output_path(opts.output or default_output(Path(opts.model)), _inputs(opts))
    for extra in (summary_path(out), rewritten_path(out)):
        check_output_path(extra, _inputs(opts))
    if opts.backend not in BACKENDS:
        raise InputError(f"--backend {opts.backend!r}", f"use one of {', '.join(BACKENDS)}")
    _check_calibration_source(opts.calibration)
    version = choose_kmodel_version(board, opts.kmodel_version, rep)

    with rep.stage("load"):
        loaded = load_model(opts.model, opts.load, rep)
    _check_input_fits(loaded.input_shape, board, opts.allow_overflow)
    refuse_what_cannot_fit(loaded, board, opts.allow_overflow)
    pre = make_preprocess(opts, loaded.input_shape)
    with rep.stage("calibration data"):
        calib, calib_desc = calibration_images(opts.calibration, pre, rep)
    rewrite_report = _rewrite(loaded, opts, pre.normalize(calib[:64]), calib_desc, rep)
    compiled = compile_model(loaded, opts, pre, calib, rep, version, board)
    kmodel = compiled.kmodel
    if version == 4:
        with rep.stage("transcode to v4"):
            kmodel = _transcoder()(kmodel)

    summary = _summarize(opts, loaded, out, kmodel, version, board, pre, compiled, calib_desc, rewrite_report, rep)
    _check_fit(summary, board, opts, rep, kmodel)
    summary.float_model = _save_reference(loaded, out) or str(opts.model)
    summary_file = summary_path(out)
    write_together([(out, kmodel), (summary_file, json_text(summary.to_dict()).encode())])
    return ConvertResult(out, summary_file, summary)


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


def fits_memory(v5: bytes, version: int, board: Board) -> bool:
    """Whether the kmodel, in the version the board gets, loads on the board's firmware (memory)."""
    from k210tool.compile.kmodel.footprint import board_fit

    return board_fit(_transcoder()(v5) if version == 4 else v5, board.firmware).problem in ("", "version")


def compile_model(loaded: LoadedModel, opts: ConvertOptions, pre: Preprocess, calib: np.ndarray, rep: Reporter,
                  version: int, board: Board) -> Compiled:
    """k210tool's KPU backend, or nncase 1.9 when the backend cannot express the model (or is not asked)."""
    from k210tool.compile.netplan import KpuRamError, PlanError

    method = opts.calibration.method
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
    return Compiled(kmodel, "nncase", quant, ops, dump.memory, fallback=why)


K210_SRAM = 8 << 20  # all of the K210's SRAM (6 MiB general + 2 MiB KPU): no input larger than this can run


def _check_input_fits(shape: tuple[int, int, int], board: Board, allow_overflow: bool) -> None:
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
    return flash_room(board) if allow_overflow else min(flash_room(board), board.model_memory)


def _backend_limit(opts: ConvertOptions, board: Board) -> int | None:
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
    room = flash_room(board)
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


def _model_bytes(loaded: LoadedModel) -> bytes:
    """The model for nncase: the file as given, or the lowered Keras model (turned, if it was) as TFLite."""
    if loaded.raw is not None:
        return loaded.raw
    from k210tool.compile.tflite import export_tflite

    return export_tflite(loaded.model, loaded.input_shape)


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
    loads_on = sorted(f.id for f in all_firmware().values() if f.loads(version))
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
        fits_flash=len(kmodel) <= flash_room(board),
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
            f"the kmodel ({s.kmodel_size:,} bytes) does not fit the {flash_room(board):,} bytes of flash "
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
