"""``check``: will this model run well on the K210? Placement per layer, round trips, memory and flash fit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.boards import get_board
from k210tool.convert import flash_room
from k210tool.errors import InputError
from k210tool.model.lint import CheckResult, estimate_memory, predict, suggestions_for
from k210tool.model.load import LoadOptions, load_model
from k210tool.report import Reporter


@dataclass(frozen=True)
class CheckOptions:
    model: Path
    board: str = "maix_dock"
    firmware: str | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    rewritten: bool = False  # check the model as `convert` would compile it (after the KPU rewrite)
    prelu: str = "keep"
    compile: bool = False  # also compile with nncase (random calibration) and show its measured figures


def check(opts: CheckOptions, reporter: Reporter | None = None) -> CheckResult:
    rep = reporter or Reporter()
    board = get_board(opts.board, opts.firmware)
    with rep.stage("load"):
        loaded = load_model(opts.model, opts.load, rep)
    if loaded.graph is None:
        raise InputError(f"{opts.model} is a {loaded.format} file: check reads Keras models",
                         "check the Keras model, or convert the file and use `k210tool inspect`")
    if opts.rewritten:
        from k210tool.model.rewrite import RewriteOptions, rewrite_loaded

        with rep.stage("rewrite"):
            rewrite_loaded(loaded, RewriteOptions(prelu=opts.prelu), rep)
    graph = loaded.graph
    layers, cpu_ops = predict(graph)
    memory, kmodel = estimate_memory(graph, layers)
    room = flash_room(board)
    result = CheckResult(
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
        suggestions=suggestions_for(layers, cpu_ops) if not opts.rewritten else [],
    )
    if opts.compile:
        result.measured = _measure(loaded, rep)
        result.fits_memory = result.measured["memory_total"] <= board.model_memory
        result.fits_flash = result.measured["kmodel_size"] <= room
    return result


def _measure(loaded: Any, rep: Reporter) -> dict[str, Any]:
    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.compile.tflite import export_tflite
    from k210tool.model.lint import dump_placement
    from k210tool.preprocess import Preprocess

    h, w, c = loaded.input_shape
    pre = Preprocess(height=h, width=w, channels=c)
    calib = np.random.default_rng(0).integers(0, 256, (4, h, w, c), dtype=np.uint8)
    with rep.stage("tflite"):
        tfl = export_tflite(loaded.model, loaded.input_shape)
    with rep.stage("compile"):
        res = compile_kmodel(tfl, NncaseSettings(pre), calib, rep)
    d = res.dump
    return {
        "kpu_convs": d.kpu_convs,
        "kpu_uploads": d.kpu_uploads,
        "cpu_compute_ops": d.cpu_compute_ops,
        "memory_total": d.memory.total,
        "kmodel_size": len(res.kmodel),
        "placement": dump_placement(d, loaded.graph),
    }
