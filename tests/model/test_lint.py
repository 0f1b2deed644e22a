"""The KPU placement prediction of `check`, validated against what nncase 1.9 actually compiled."""

from __future__ import annotations

import numpy as np
import pytest
from model_factory import mobilenetv2_dense, save_h5, tiny_backbone

from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
from k210tool.compile.tflite import export_tflite
from k210tool.model.lint import dump_placement, estimate_memory, predict
from k210tool.model.load import load_model
from k210tool.model.rewrite import RewriteOptions, rewrite_loaded
from k210tool.preprocess import Preprocess


def _compile(loaded):  # type: ignore[no-untyped-def]
    h, w, c = loaded.input_shape
    calib = np.random.default_rng(0).integers(0, 256, (4, h, w, c), dtype=np.uint8)
    return compile_kmodel(export_tflite(loaded.model, loaded.input_shape), NncaseSettings(Preprocess(h, w)), calib)


@pytest.fixture(scope="module", params=["paper", "rewritten", "mobilenetv2", "mobilenetv2_112"])
def compiled(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp(request.param)
    if request.param.startswith("mobilenetv2"):
        size = 112 if request.param.endswith("112") else 48  # 48: layers below the KPU's 4x4; 112: odd 7x7
        loaded = load_model(save_h5(mobilenetv2_dense(size=size), folder / "m.h5"))
    else:
        loaded = load_model(save_h5(tiny_backbone(size=32), folder / "m.h5"))
        if request.param == "rewritten":
            rewrite_loaded(loaded, RewriteOptions())
    return request.param, loaded, _compile(loaded)


def test_placement_of_every_conv_dense_and_add_agrees_with_nncase(compiled) -> None:
    name, loaded, result = compiled
    predicted = {p.layer: p.placement for p in predict(loaded.graph)[0]}
    actual = dump_placement(result.dump, loaded.graph)
    assert actual, "no conv/dense/add layers found"
    disagree = {k: (v, predicted[k]) for k, v in actual.items() if (v == "KPU") != (predicted[k] in ("KPU", "CPU+KPU"))}
    assert not disagree, f"{name}: dump vs prediction {disagree}"
    assert sum(v == "KPU" for v in actual.values()) > 0


def test_round_trips_and_problem_ops_agree(compiled) -> None:
    name, loaded, result = compiled
    layers, cpu_ops = predict(loaded.graph)
    uploads = sum(p.upload for p in layers)
    assert uploads == result.dump.kpu_uploads, (name, uploads, result.dump.kpu_uploads)
    for op in ("Binary", "TableLookup1D"):
        assert (cpu_ops.get(op, 0) > 0) == (result.dump.cpu_ops.get(op, 0) > 0), (name, op)


def test_memory_estimate_is_close_to_nncase(compiled) -> None:
    name, loaded, result = compiled
    layers, _ = predict(loaded.graph)
    estimate, _ = estimate_memory(loaded.graph, layers)
    measured = result.dump.memory.total
    assert 0.6 * measured <= estimate <= 1.6 * measured, (name, estimate, measured)


def test_rewrite_removes_the_cpu_round_trips() -> None:
    loaded = load_model(save_h5(tiny_backbone(size=32), __import__("pathlib").Path(
        __import__("tempfile").mkdtemp()) / "m.h5"))
    before = sum(p.upload for p in predict(loaded.graph)[0])
    rewrite_loaded(loaded, RewriteOptions(prelu="relu", approximate=("symmetric-stride2",)))
    layers, cpu_ops = predict(loaded.graph)
    assert sum(p.upload for p in layers) < before
    assert not {"Binary", "TableLookup1D"} & set(cpu_ops)
