"""KPU RAM (issue 15): a bottleneck whose maps do not fit the KPU's 2 MiB runs in channel groups whose
projections are summed on the KPU - the same function, so nncase's Simulator and k210tool's interpreter agree
bit for bit and the kmodel stays close to the float model - and a layer that cannot be split is refused in
seconds, naming it and what to change, by `check` and `convert` alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, kmodel_cosines, run_cli
from model_factory import save_h5, too_wide_for_kpu_ram, wide_bottleneck

from k210tool.compile.kmodel import read_kmodel
from k210tool.compile.kmodel.footprint import census
from k210tool.compile.kmodel.gen.alloc import KPU_RAM
from k210tool.compile.kpu_backend import compile_kpu, plan_for
from k210tool.compile.netplan import Add, PlanError, fold_cpu_linear, place, plan_from_graph
from k210tool.compile.ramsplit import layer_need
from k210tool.model.graph import annotate_shapes, graph_from_model
from k210tool.model.rewrite import RewriteOptions, rewrite
from k210tool.preprocess import Preprocess
from k210tool.sim.engine import NncaseEngine
from k210tool.sim.interp import NumpyEngine
from k210tool.train.data.synthetic import identity_images

SIZE = 64


def _faces(seed: int, n: int, pre: Preprocess) -> np.ndarray:
    return np.stack([pre.prepare(img) for i in range(n) for img in identity_images(seed + i, 1, size=SIZE)])


@pytest.fixture(scope="module")
def lowered() -> tuple:
    model = wide_bottleneck(SIZE, expand=384)
    graph = graph_from_model(model)
    annotate_shapes(graph, model)
    return model, rewrite(graph, model, None, RewriteOptions()), Preprocess(height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def built(lowered: tuple) -> tuple:
    model, low, pre = lowered
    return compile_kpu(low.model, low.graph, pre, _faces(200, 16, pre)), pre, model


def test_the_bottleneck_cannot_fit_whole(lowered: tuple) -> None:
    _model, low, _pre = lowered
    plan = plan_from_graph(low.graph)
    place(plan)
    fold_cpu_linear(plan)
    dw = next(op for op in plan.ops if op.name == "depthwise")
    # 384 x 64 x 64 in and out, one channel per 64-byte row: 3 MiB even stored as compactly as can be
    assert dw.kpu and layer_need(plan, dw, compact=True) == 2 * 384 * 64 * 64 > KPU_RAM


def test_without_the_split_the_generator_runs_out_of_kpu_ram(lowered: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    import k210tool.compile.kpu_backend as backend

    _model, low, pre = lowered
    monkeypatch.setattr(backend, "split_for_kpu_ram", lambda plan: plan)
    with pytest.raises(PlanError, match="KPU RAM"):
        compile_kpu(low.model, low.graph, pre, _faces(200, 2, pre))


def test_the_bottleneck_runs_in_channel_groups_summed_on_the_kpu(built: tuple) -> None:
    res, _pre, _model = built
    assert len(res.splits) == 1 and res.splits[0].startswith("expand -> depthwise -> project: 3 channel groups")
    assert any("split to fit KPU RAM" in n for n in res.stats.notes)
    plan = res.plan
    parts = [op for op in plan.ops if op.name.startswith(("expand[", "depthwise[", "project["))]
    sums = [op for op in plan.ops if isinstance(op, Add) and op.name.startswith("project+sum")]
    assert len(parts) == 9 and len(sums) == 2 and all(op.kpu for op in parts + sums)
    assert sums[-1].dst == "project"  # the residual add reads the whole projection, as before
    assert all(layer_need(plan, op) <= KPU_RAM for op in plan.ops if op.kpu)
    assert res.stats.kpu_ram_peak <= KPU_RAM
    c = census(read_kmodel(res.kmodel))
    assert c.kpu_uploads == 1 and set(c.cpu_compute_ops) == {"conv2d"}  # everything but GDConv + embedding


def test_simulator_and_interpreter_agree_bit_for_bit(built: tuple) -> None:
    res, pre, _model = built
    images = _faces(300, 2, pre)
    assert np.array_equal(NncaseEngine(res.kmodel).run(images)[0], NumpyEngine(res.kmodel).run(images)[0])


def test_the_kmodel_computes_the_float_network(built: tuple) -> None:
    res, pre, model = built
    cos = kmodel_cosines(res.kmodel, model, pre, _faces(500, 8, pre))
    assert cos.mean() > 0.99 and cos.min() > 0.98, cos


def test_check_reports_the_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_h5(wide_bottleneck(SIZE, expand=384), tmp_path / "wide.h5")
    run = run_cli(capsys, "check", src, "--json")
    assert run.code == 0, run.err
    r = json.loads(run.out)
    assert r["backend"] == "k210tool" and r["kpu"]["kpu_ram_peak"] <= KPU_RAM
    assert [s.split(":")[0] for s in r["kpu"]["splits"]] == ["expand -> depthwise -> project"]
    needs = {p["layer"]: float(p["reason"].split("input + output maps ")[1].split()[0]) for p in r["layers"]
             if p["placement"] == "KPU"}
    assert needs["depthwise[0:128]"] == 1.5  # 128 channels in, stored as 256 (PReLU before a dense layer) out
    assert max(needs.values()) <= 2.0


def test_check_and_convert_refuse_what_cannot_be_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_h5(too_wide_for_kpu_ram(SIZE, 512), tmp_path / "too_wide.h5")
    start = time.perf_counter()
    run = run_cli(capsys, "check", src)
    # 16 x 64 x 64 in + 512 x 64 x 64 out > 2 MiB; its output goes to the CPU (global pooling) in one piece
    assert_one_line_error(run, "layer 'too_wide' does not fit the KPU's 2 MiB of RAM", "at most 496 channels")
    assert "KPU RAM: DOES NOT FIT" in run.out
    run = run_cli(capsys, "convert", src, "--calib", "random", "-o", tmp_path / "m.kmodel")
    assert_one_line_error(run, "layer 'too_wide'", "at most 496 channels")  # not handed to nncase to fail
    assert not (tmp_path / "m.kmodel").exists()
    assert time.perf_counter() - start < 60
    model = too_wide_for_kpu_ram(SIZE, 496)  # what the hint says is enough
    graph = graph_from_model(model)
    annotate_shapes(graph, model)
    assert plan_for(rewrite(graph, model, None, RewriteOptions()).graph).splits == []
