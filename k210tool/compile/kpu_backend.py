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
from typing import Any

import numpy as np

from k210tool.compile.calibrate import Ranges, calibrate
from k210tool.compile.kmodel.gen.kpu import PRELU_MODES
from k210tool.compile.kmodel.gen.program import GenStats, generate
from k210tool.compile.netplan import (
    BackendTooBig,
    Conv,
    NetPlan,
    PlanError,
    fold_cpu_linear,
    kpu_conv_problem,
    mark_head,
    place,
    plan_from_graph,
)
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


def weight_bytes(plan: NetPlan) -> tuple[int, list[str]]:
    """The fewest bytes the plan's convolution weights take in any layout: a byte per weight on the KPU (the
    embedding's dense layer included, which can move there), four for the float CPU tail; and the CPU tail's
    convolutions, largest first."""
    mark_head(plan, True)
    total, cpu = 0, []
    for op in plan.ops:
        if isinstance(op, Conv):
            on_kpu = op.kpu or op.head
            total += op.weights.size * (1 if on_kpu else 4)
            if not on_kpu:
                cpu.append((op.weights.size, op.name))
    mark_head(plan, False)
    return int(total), [name for _, name in sorted(cpu, reverse=True)]


def _refuse_float_tail(plan: NetPlan, max_file: int) -> None:
    """Raise :class:`BackendTooBig` before calibrating when the weights alone exceed ``max_file`` bytes."""
    need, cpu = weight_bytes(plan)
    if need <= max_file:
        return
    first = next((op for op in plan.ops if not op.kpu), None)
    why = ""
    if isinstance(first, Conv) and first.src in plan.shapes:
        problem = kpu_conv_problem(first, plan.shapes[first.src])
        why = f" from {first.name!r} on ({problem})" if problem else ""
    raise BackendTooBig(
        f"k210tool's backend keeps the layers{why} on the CPU in float32: its weights alone make at least "
        f"{need / 2**20:.2f} MiB of kmodel, more than the board's {max_file / 2**20:.2f} MiB"
        + (f" (largest on the CPU: {', '.join(cpu[:3])})" if cpu else ""),
        "a model whose layers the KPU runs (1x1/3x3 convolutions, stride 1 or 2) until the embedding")


def compile_kpu(model: object, graph: object, pre: Preprocess, calib: np.ndarray, opts: BackendOptions | None = None,
                reporter: Reporter | None = None, fits: Callable[[bytes], bool] | None = None,
                max_file: int | None = None) -> BackendResult:
    """``calib``: uint8 (N, H, W, C) prepared images, upright (the kmodel turns them itself if needed).

    With ``prelu="auto"`` and ``dense="auto"``, the most exact layout comes first (PReLU split where that saves
    KPU layers, the embedding's dense layer in float on the CPU); while ``fits(kmodel)`` says the result is
    too big for the board, the smallest layout is tried next and, when it fits, the ones between in order of
    fidelity. With ``max_file`` (the most bytes the board takes), a model whose weights alone exceed it is
    refused before calibrating, and one whose smallest layout does not fit too (:class:`BackendTooBig`);
    without it the smallest layout is returned."""
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
    if max_file is not None:
        _refuse_float_tail(plan, max_file)
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
    has_head = mark_head(plan, True) > 0
    tries = [t for t in tries if t[1] == "cpu" or has_head or opts.dense != "auto"]  # no dense layer to move
    layout, dense, gen = _first_that_fits(plan, ranges, pre, tries, fits, max_file is not None, rep)
    mark_head(plan, dense == "kpu")
    dense_on = "kpu" if any(getattr(op, "head", False) for op in plan.ops) else "cpu"
    gen.stats.notes.append(f"prelu layout: {layout}; embedding dense layer on the {dense_on.upper()}")
    gen.stats.notes += [f"split to fit KPU RAM: {s}" for s in plan.splits]
    return BackendResult(gen.kmodel, plan, gen.stats, ranges, time.perf_counter() - start, layout, dense_on,
                         list(plan.splits))


def _first_that_fits(plan: NetPlan, ranges: Ranges, pre: Preprocess, tries: list[tuple[str, str]],
                     fits: Callable[[bytes], bool] | None, strict: bool, rep: Reporter) -> tuple[str, str, Any]:
    """The most exact of ``tries`` (in order of fidelity, the last the smallest) that ``fits``. The smallest is
    tried second: when it does not fit, none will (``strict``: :class:`BackendTooBig`; else it is returned)."""
    made: dict[tuple[str, str], Any] = {}

    def make(t: tuple[str, str]) -> bool:
        mark_head(plan, t[1] == "kpu")
        made[t] = generate(plan, ranges.lo, ranges.hi, pre.mean, pre.std, t[0])
        ok = fits is None or fits(made[t].kmodel)
        if not ok:
            rep.info(f"PReLU layout {t[0]}, dense layer on the {t[1].upper()}: too big for the board "
                     f"({len(made[t].kmodel) / 2**20:.2f} MiB kmodel v5)")
        return ok

    if make(tries[0]) or len(tries) == 1:
        return (*tries[0], made[tries[0]])
    smallest = tries[-1]
    if not make(smallest):
        if strict:
            raise BackendTooBig(f"k210tool's backend makes at least a {len(made[smallest].kmodel) / 2**20:.2f} MiB "
                                f"kmodel (v5, in its smallest layout: PReLU {smallest[0]}, the dense layer on the "
                                f"{smallest[1].upper()}), more than the board takes", "fewer channels or a smaller input")
        return (*smallest, made[smallest])  # nothing fits: the smallest, for the caller to judge
    for t in tries[1:-1]:
        if make(t):
            return (*t, made[t])
    return (*smallest, made[smallest])


# fidelity first: the float dense layer, then the same on the KPU (-330 KB on a MobileFaceNet, cosine
# -0.0004), then PReLU in zones everywhere (half the PReLU weights, twice the layers)
_ORDER = (("mixed", "cpu"), ("mixed", "kpu"), ("zones", "cpu"), ("zones", "kpu"), ("split", "cpu"),
          ("split", "kpu"))
