"""k210tool's own KPU backend: a lowered Keras model + calibration images -> kmodel v5, exactly.

nncase 1.9 cannot put a per-channel PReLU on the KPU (it leaves it on the CPU: a round trip per layer, 9.85 MB
for a MobileFaceNet) and quantizes every map with one scale. This backend reads the model into a
:class:`~k210tool.compile.netplan.NetPlan`, measures per-channel ranges on the calibration images and writes
the kmodel itself (:mod:`k210tool.compile.kmodel.gen`): per-channel scales everywhere, PReLU in the KPU's
activation tables, residual adds on the KPU, one upload. nncase's Simulator runs the files it writes and
agrees with k210tool's interpreter bit for bit (tests). Models it cannot express raise
:class:`~k210tool.compile.netplan.PlanError`, and ``convert`` compiles them with nncase instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from k210tool.compile.calibrate import Ranges, calibrate
from k210tool.compile.kmodel.gen.kpu import PRELU_MODES
from k210tool.compile.kmodel.gen.program import GenStats, generate
from k210tool.compile.netplan import NetPlan, PlanError, fold_cpu_linear, mark_head, place, plan_from_graph
from k210tool.compile.ramsplit import split_for_kpu_ram
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

CALIBRATION_METHODS = ("minmax", "percentile")


@dataclass(frozen=True)
class BackendOptions:
    calibration: str = "minmax"  # minmax | percentile
    # how per-channel PReLU goes on the KPU: split where a dense layer follows (fewer KPU layers, bigger
    # weights), else zones; "zones" everywhere (smallest file); "auto": the first of those that fits
    prelu: str = "auto"
    # the embedding's dense layer: on the KPU (uint8 weights, a quarter of the bytes, a second upload, a
    # little less exact) or on the CPU in float; "auto": on the CPU unless the model does not fit otherwise
    dense: str = "auto"


@dataclass
class BackendResult:
    kmodel: bytes  # v5
    plan: NetPlan
    stats: GenStats
    ranges: Ranges
    seconds: float
    layout: str = ""  # the PReLU layout used (mixed, zones or split)
    dense: str = "cpu"  # where the embedding's dense layer runs (kpu or cpu)
    splits: list[str] = field(default_factory=list)  # layers run in channel groups to fit KPU RAM


def plan_for(graph: object) -> NetPlan:
    """The graph's plan with the KPU placement decided and the layers too big for KPU RAM split
    (:mod:`k210tool.compile.ramsplit`); :class:`PlanError` when nothing fits the KPU,
    :class:`~k210tool.compile.netplan.KpuRamError` for a layer that cannot fit KPU RAM."""
    plan = plan_from_graph(graph)  # type: ignore[arg-type]
    if place(plan) == 0:
        raise PlanError("no layer of this model can run on the KPU")
    fold_cpu_linear(plan)
    return split_for_kpu_ram(plan)


DENSE_MODES = ("auto", "kpu", "cpu")


def compile_kpu(model: object, graph: object, pre: Preprocess, calib: np.ndarray, opts: BackendOptions | None = None,
                reporter: Reporter | None = None, fits: Callable[[bytes], bool] | None = None) -> BackendResult:
    """``calib``: uint8 (N, H, W, C) prepared images, upright (the kmodel turns them itself if needed).

    With ``prelu="auto"`` and ``dense="auto"``, the most exact layout comes first (PReLU split where that saves
    KPU layers, the embedding's dense layer in float on the CPU); while ``fits(kmodel)`` says the result is
    too big for the board, the dense layer moves to the KPU, then PReLU goes in zones everywhere."""
    opts = opts or BackendOptions()
    rep = reporter or Reporter()
    if opts.calibration not in CALIBRATION_METHODS:
        raise PlanError(f"calibration method {opts.calibration!r} belongs to nncase, not k210tool's backend",
                        f"use one of {', '.join(CALIBRATION_METHODS)}")
    if opts.prelu not in PRELU_MODES + ("auto",):
        raise PlanError(f"--prelu-layout {opts.prelu!r}", f"use auto or one of {', '.join(PRELU_MODES)}")
    if opts.dense not in DENSE_MODES:
        raise PlanError(f"--dense {opts.dense!r}", f"use one of {', '.join(DENSE_MODES)}")
    start = time.perf_counter()
    plan = plan_for(graph)
    images = pre.normalize(calib)
    if plan.rotation == 180:
        images = np.ascontiguousarray(images[:, ::-1, ::-1])
    ranges = calibrate(plan, model, images, opts.calibration)
    rep.info(f"KPU backend: {sum(op.kpu for op in plan.ops)} ops on the KPU, "
             f"{len(plan.ops) - sum(op.kpu for op in plan.ops)} on the CPU")
    for s in plan.splits:
        rep.info(f"split to fit KPU RAM: {s}")
    tries = [(layout, dense) for layout, dense in _ORDER if opts.dense in ("auto", dense)
             and (opts.prelu == layout or (opts.prelu == "auto" and layout != "split"))]
    for layout, dense in tries:
        if mark_head(plan, dense == "kpu") == 0 and dense == "kpu" and opts.dense == "auto":
            continue  # no dense layer to move: the file just tried
        gen = generate(plan, ranges.lo, ranges.hi, pre.mean, pre.std, layout)
        if fits is None or fits(gen.kmodel):
            break
        rep.info(f"PReLU layout {layout}, dense layer on the {dense.upper()}: too big for the board "
                 f"({len(gen.kmodel) / 2**20:.2f} MiB kmodel v5)")
    dense_on = "kpu" if any(getattr(op, "head", False) for op in plan.ops) else "cpu"
    gen.stats.notes.append(f"prelu layout: {layout}; embedding dense layer on the {dense_on.upper()}")
    gen.stats.notes += [f"split to fit KPU RAM: {s}" for s in plan.splits]
    return BackendResult(gen.kmodel, plan, gen.stats, ranges, time.perf_counter() - start, layout, dense_on,
                         list(plan.splits))


# fidelity first: the float dense layer, then the same on the KPU (-330 KB on a MobileFaceNet, cosine
# -0.0004), then PReLU in zones everywhere (half the PReLU weights, twice the layers)
_ORDER = (("mixed", "cpu"), ("mixed", "kpu"), ("zones", "cpu"), ("zones", "kpu"), ("split", "cpu"),
          ("split", "kpu"))
