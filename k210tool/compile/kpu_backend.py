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
from dataclasses import dataclass

import numpy as np

from k210tool.compile.calibrate import Ranges, calibrate
from k210tool.compile.kmodel.gen.kpu import PRELU_MODES
from k210tool.compile.kmodel.gen.program import GenStats, generate
from k210tool.compile.netplan import NetPlan, PlanError, fold_cpu_linear, place, plan_from_graph
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

CALIBRATION_METHODS = ("minmax", "percentile")


@dataclass(frozen=True)
class BackendOptions:
    calibration: str = "minmax"  # minmax | percentile
    prelu: str = "auto"  # auto | zones | split: how per-channel PReLU goes on the KPU


@dataclass
class BackendResult:
    kmodel: bytes  # v5
    plan: NetPlan
    stats: GenStats
    ranges: Ranges
    seconds: float


def plan_for(graph: object) -> NetPlan:
    """The graph's plan with the KPU placement decided; :class:`PlanError` when nothing fits the KPU."""
    plan = plan_from_graph(graph)  # type: ignore[arg-type]
    if place(plan) == 0:
        raise PlanError("no layer of this model can run on the KPU")
    fold_cpu_linear(plan)
    return plan


def compile_kpu(model: object, graph: object, pre: Preprocess, calib: np.ndarray, opts: BackendOptions | None = None,
                reporter: Reporter | None = None) -> BackendResult:
    """``calib``: uint8 (N, H, W, C) prepared images, upright (the kmodel turns them itself if needed)."""
    opts = opts or BackendOptions()
    rep = reporter or Reporter()
    if opts.calibration not in CALIBRATION_METHODS:
        raise PlanError(f"calibration method {opts.calibration!r} belongs to nncase, not k210tool's backend",
                        f"use one of {', '.join(CALIBRATION_METHODS)}")
    if opts.prelu not in PRELU_MODES:
        raise PlanError(f"--prelu-layout {opts.prelu!r}", f"use one of {', '.join(PRELU_MODES)}")
    start = time.perf_counter()
    plan = plan_for(graph)
    images = pre.normalize(calib)
    if plan.rotation == 180:
        images = np.ascontiguousarray(images[:, ::-1, ::-1])
    ranges = calibrate(plan, model, images, opts.calibration)
    rep.info(f"KPU backend: {sum(op.kpu for op in plan.ops)} ops on the KPU, "
             f"{len(plan.ops) - sum(op.kpu for op in plan.ops)} on the CPU")
    gen = generate(plan, ranges.lo, ranges.hi, pre.mean, pre.std, opts.prelu)
    return BackendResult(gen.kmodel, plan, gen.stats, ranges, time.perf_counter() - start)
