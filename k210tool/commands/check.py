"""``check``: will this model run well on the K210? Placement per layer, round trips, memory and flash fit.

By default ``check`` looks at the model the way ``convert`` compiles it: the same exact lowering, then
k210tool's KPU backend, run for real on synthetic faces (it takes seconds), so the KPU layers, uploads,
kmodel size and memory it reports are those of an actual kmodel - only the calibration images differ from
yours, which can move the PReLU layer count by a few. A model the backend cannot express is predicted the
way nncase would compile it (:mod:`k210tool.model.lint`), and ``--compile`` adds nncase's measured figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.boards import Board, get_board
from k210tool.compile.pipeline import choose_kmodel_version, declined_text, refuse_what_cannot_fit
from k210tool.errors import DoesNotFitError, InputError
from k210tool.model.lint import CheckResult, LayerPlacement, estimate_memory, predict, suggestions_for
from k210tool.model.load import LoadedModel, LoadOptions, load_model
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter


@dataclass(frozen=True)
class CheckOptions:
    model: Path
    board: str = "maix_dock"
    firmware: str | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    rewrite: bool = True  # lower the model as `convert` does (False: the model as it is, as nncase sees it)
    prelu: str = "keep"
    approximate: tuple[str, ...] = ()
    backend: str = "auto"  # auto | k210tool | nncase: as convert's --backend
    compile: bool = False  # nncase's view: also compile with nncase (random calibration), show what it measured


def check(opts: CheckOptions, reporter: Reporter | None = None) -> CheckResult:
    rep = reporter or Reporter()
    board = get_board(opts.board, opts.firmware)
    with rep.stage("load"):
        loaded = load_model(opts.model, opts.load, rep)
    if loaded.graph is None:
        raise InputError(f"{opts.model} is a {loaded.format} file: check reads Keras models",
                         "check the Keras model, or convert the file and use `k210tool inspect`")
    refuse_what_cannot_fit(loaded, board)  # what convert refuses before compiling
    if opts.rewrite:
        from k210tool.model.rewrite import RewriteOptions, rewrite_loaded

        with rep.stage("lowering"):
            rewrite_loaded(loaded, RewriteOptions(prelu=opts.prelu, approximate=opts.approximate), rep)
    why = refused = declined = None
    if opts.rewrite and opts.backend in ("auto", "k210tool"):
        from k210tool.compile.netplan import KpuRamError, PlanError

        try:
            return _backend_check(opts, loaded, board, rep)
        except PlanError as exc:
            if opts.backend == "k210tool":
                raise
            if isinstance(exc, KpuRamError):  # nncase fails on it too: the layer and the fix, not a prediction
                refused = str(exc)
            else:
                why, declined = exc.message, f"k210tool's KPU backend {declined_text(exc)} ({exc.message})"
                rep.info(f"{declined}: predicting nncase's compile")
    if opts.rewrite and refused is None:
        try:  # what convert refuses before nncase compiles
            refuse_what_cannot_fit(loaded, board, nncase=True)
        except DoesNotFitError as exc:
            if why is None:
                raise
            raise DoesNotFitError(f"{exc.message}; {declined}", exc.hint) from None
    result = _nncase_prediction(opts, loaded, board)
    result.fallback = why
    result.refused = refused
    if opts.rewrite and result.fits:
        # convert compiles this model with nncase: so does check, or it could say "fits" to a model convert
        # then refuses (an op with no kmodel v4 form, KPU memory nncase cannot allocate)
        _compile_as_convert(opts, result, loaded, board, rep)
    elif opts.compile:
        result.measured = _measure(loaded, board, rep)
        result.fits_memory = result.measured["fit"]["fits"]
        result.fits_flash = result.measured["kmodel_size"] <= result.flash_room
    return result


def _synthetic_faces(loaded: LoadedModel) -> tuple[Preprocess, np.ndarray]:
    """convert's default preprocessing for the model, and 16 synthetic faces prepared with it."""
    from k210tool.train.data.synthetic import prepared_faces

    pre = Preprocess.for_input(loaded.input_shape)
    return pre, prepared_faces(pre, 16, first_seed=7000)


def _compile_as_convert(opts: CheckOptions, result: CheckResult, loaded: LoadedModel, board: Board,
                        rep: Reporter) -> None:
    """Compile with nncase the way convert does (synthetic calibration), in the kmodel version the board gets:
    the memory and size become the kmodel's; an error convert would raise becomes ``result.problem``."""
    from k210tool.compile.kmodel import transcode_to_v4
    from k210tool.compile.kmodel.footprint import board_fit
    from k210tool.compile.pipeline import CompileOptions, compile_model
    from k210tool.errors import K210ToolError

    pre, faces = _synthetic_faces(loaded)
    version = choose_kmodel_version(board, None, Reporter())
    try:
        with rep.stage("compile (nncase, synthetic calibration)"):
            compiled = compile_model(loaded, CompileOptions(backend="nncase"), pre, faces[:8], rep,
                                     version, board)
            kmodel = transcode_to_v4(compiled.kmodel) if version == 4 else compiled.kmodel
    except K210ToolError as exc:
        result.problem, result.problem_hint = exc.message, exc.hint
        return
    fit = board_fit(kmodel, board.firmware)
    result.memory_estimate, result.kmodel_estimate, result.board_limit = fit.total, fit.file, fit.limit
    result.fits_memory, result.fits_flash = fit.fits, fit.file <= result.flash_room
    result.backend, result.fit = "nncase (compiled)", fit.to_dict()
    if compiled.ops is not None:
        result.measured = {"kpu_convs": compiled.ops.kpu_convs, "kpu_uploads": compiled.ops.kpu_uploads,
                           "cpu_compute_ops": dict(compiled.ops.cpu_compute_ops), "memory_total": fit.total,
                           "kmodel_size": fit.file, "kmodel_version": version, "fit": fit.to_dict()}


def _backend_check(opts: CheckOptions, loaded: LoadedModel, board: Board, rep: Reporter) -> CheckResult:
    """Generate the kmodel for real (synthetic faces as calibration) and report what it is."""
    from k210tool.compile.kmodel import read_kmodel, transcode_to_v4
    from k210tool.compile.kmodel.footprint import board_fit, census
    from k210tool.compile.kpu_backend import compile_kpu
    from k210tool.compile.pipeline import fits_memory, max_file
    from k210tool.compile.ramsplit import layer_need

    pre, faces = _synthetic_faces(loaded)
    version = choose_kmodel_version(board, None, Reporter())
    with rep.stage("KPU backend (synthetic calibration)"):  # the layouts convert tries, judged as convert does
        res = compile_kpu(loaded.model, loaded.graph, pre, faces, reporter=rep,
                          fits=lambda v5: fits_memory(v5, version, board), max_file=max_file(board))
    kmodel = transcode_to_v4(res.kmodel) if version == 4 else res.kmodel
    km = read_kmodel(kmodel)
    fit, ops = board_fit(km, board.firmware), census(km)
    per_op = {r["op"]: r for r in res.stats.per_op}
    layers = []
    for op in res.plan.ops:
        shape = list(res.plan.shapes.get(op.dst, ()))
        if op.kpu:
            row = per_op.get(op.name, {"layers": 0, "macs": 0, "weights": 0})
            reason = f"{row['layers']} KPU layer{'s' if row['layers'] != 1 else ''}" + (
                f" ({op.act.kind}: per-channel slopes in the KPU's activation tables)" if op.act.kind == "prelu" else "")
            reason += f"; input + output maps {layer_need(res.plan, op) / 2**20:.2f} of 2 MiB KPU RAM at most"
            layers.append(LayerPlacement(op.name, type(op).__name__, "KPU", reason, [None, *shape], row["weights"],
                                         row["macs"]))
        else:
            layers.append(LayerPlacement(op.name, type(op).__name__, "CPU", _cpu_reason(op, res.plan), [None, *shape],
                                         0, 0))
    room = board.flash_room
    return CheckResult(
        model=str(opts.model), layers=layers, kpu_layers=ops.kpu_convs, kpu_uploads=ops.kpu_uploads,
        cpu_ops=dict(ops.cpu_compute_ops), memory_estimate=fit.total, kmodel_estimate=fit.file, board=board.id,
        firmware=board.firmware.id, board_limit=fit.limit, fits_memory=fit.fits,
        flash_room=room, fits_flash=fit.file <= room, backend="k210tool",
        kpu={"layers": res.stats.kpu_layers, "kpu_macs": res.stats.kpu_macs, "cpu_macs": res.stats.cpu_macs,
             "kpu_weight_bytes": res.stats.kpu_weight_bytes, "cpu_weight_bytes": res.stats.cpu_weight_bytes,
             "kpu_ram_peak": res.stats.kpu_ram_peak, "kmodel_version": km.version, "prelu_layout": res.layout,
             "dense": res.dense, "working_memory": fit.working, "splits": res.splits},
        fit=fit.to_dict())


def _cpu_reason(op: Any, plan: Any) -> str:
    from k210tool.compile.netplan import Conv, kpu_conv_problem

    if isinstance(op, Conv) and op.src in plan.shapes:
        problem = kpu_conv_problem(op, plan.shapes[op.src])
        if problem:
            return problem + "; float on the CPU"
    return "after the last map the KPU computes; float on the CPU"


def _nncase_prediction(opts: CheckOptions, loaded: LoadedModel, board: Board) -> CheckResult:
    graph = loaded.graph
    layers, cpu_ops = predict(graph)
    memory, kmodel = estimate_memory(graph, layers)
    memory += board.firmware.model_overhead  # counted as board_fit counts it for a real kmodel
    room = board.flash_room
    return CheckResult(
        model=str(opts.model),
        layers=layers,
        kpu_layers=sum(1 for p in layers if p.placement in ("KPU", "CPU+KPU")),
        kpu_uploads=sum(1 for p in layers if p.upload),
        cpu_ops=dict(cpu_ops),
        memory_estimate=memory,
        kmodel_estimate=kmodel,
        board=board.id,
        firmware=board.firmware.id,
        board_limit=board.model_memory,
        fits_memory=memory <= board.model_memory,
        flash_room=room,
        fits_flash=kmodel <= room,
        suggestions=suggestions_for(layers, cpu_ops) if not opts.rewrite else [],
        backend="nncase (prediction)",
    )


def _measure(loaded: Any, board: Board, rep: Reporter) -> dict[str, Any]:
    """nncase's compile for real (synthetic calibration, convert's compile stage), in the kmodel version the board
    gets; where nncase places each layer, from its dump."""
    from k210tool.compile.kmodel import transcode_to_v4
    from k210tool.compile.kmodel.footprint import board_fit
    from k210tool.compile.pipeline import CompileOptions, compile_model
    from k210tool.model.lint import dump_placement

    pre, faces = _synthetic_faces(loaded)
    version = choose_kmodel_version(board, None, Reporter())
    compiled = compile_model(loaded, CompileOptions(backend="nncase", allow_overflow=True), pre, faces[:4], rep,
                             version, board)
    kmodel = transcode_to_v4(compiled.kmodel) if version == 4 else compiled.kmodel
    fit = board_fit(kmodel, board.firmware)
    d = compiled.dump
    return {
        "kpu_convs": d.kpu_convs,
        "kpu_uploads": d.kpu_uploads,
        "cpu_compute_ops": d.cpu_compute_ops,
        "memory_total": fit.total,
        "kmodel_size": fit.file,
        "kmodel_version": fit.version,
        "fit": fit.to_dict(),
        "placement": dump_placement(d, loaded.graph),
    }
