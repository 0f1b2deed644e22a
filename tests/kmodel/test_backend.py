"""k210tool's KPU backend end to end on a small per-channel-PReLU network (MobileFaceNet-shaped).

The generated kmodel v5 must run in nncase's Simulator and agree bit for bit with k210tool's interpreter;
its v4 form must agree with it too; it must compute the float network (cosine) with every PReLU on the KPU
and one upload.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_v4_stores_nothing_twice
from model_factory import prelu_facenet

from k210tool.compile.kmodel import read_kmodel, transcode_to_v4
from k210tool.compile.kmodel.footprint import census
from k210tool.compile.kpu_backend import BackendOptions, compile_kpu
from k210tool.model.graph import annotate_shapes, graph_from_model
from k210tool.model.rewrite import RewriteOptions, rewrite
from k210tool.preprocess import Preprocess
from k210tool.sim.engine import NncaseEngine
from k210tool.sim.interp import NumpyEngine
from k210tool.train.data.synthetic import identity_images

SIZE = 32


def _faces(seed: int, n: int, pre: Preprocess) -> np.ndarray:
    return np.stack([pre.prepare(img) for i in range(n) for img in identity_images(seed + i, 1, size=64)])


@pytest.fixture(scope="module")
def network() -> tuple:
    model = prelu_facenet(SIZE, emb=128)  # an embedding layer big enough to go on the KPU when asked
    graph = graph_from_model(model)
    annotate_shapes(graph, model)
    pre = Preprocess(height=SIZE, width=SIZE)
    lowered = rewrite(graph, model, pre.normalize(_faces(100, 8, pre)), RewriteOptions())
    return model, lowered, pre


@pytest.fixture(scope="module", params=[("mixed", "cpu"), ("zones", "cpu"), ("mixed", "kpu")], ids="-".join)
def built(request: pytest.FixtureRequest, network: tuple) -> tuple:
    model, lowered, pre = network
    layout, dense = request.param
    res = compile_kpu(lowered.model, lowered.graph, pre, _faces(200, 24, pre), BackendOptions(prelu=layout, dense=dense))
    assert res.dense == dense
    return res, pre, model


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_lowering_is_exact_and_turns_the_network(network: tuple) -> None:
    _model, lowered, _pre = network
    assert lowered.report.input_rotation == 180
    assert lowered.report.exact and lowered.report.cosine_min > 0.99999
    assert {c.rule for c in lowered.report.changes} == {"rotate180"}


def test_simulator_and_interpreter_agree_bit_for_bit(built: tuple) -> None:
    res, pre, _model = built
    images = _faces(300, 3, pre)
    sim = NncaseEngine(res.kmodel).run(images)[0]
    ours = NumpyEngine(res.kmodel).run(images)[0]
    assert np.array_equal(sim, ours)


def test_v4_runs_exactly_like_v5(built: tuple) -> None:
    res, pre, _model = built
    images = _faces(400, 8, pre)
    v4 = transcode_to_v4(res.kmodel)
    assert_v4_stores_nothing_twice(res.kmodel, v4)
    assert np.array_equal(NumpyEngine(v4).run(images)[0], NumpyEngine(res.kmodel).run(images)[0])


def test_the_kmodel_computes_the_float_network(built: tuple) -> None:
    res, pre, model = built
    images = _faces(500, 16, pre)
    ours = NumpyEngine(res.kmodel).run(images)[0]
    ref = np.asarray(model(pre.normalize(images), training=False))
    cos = _cosines(ours, ref)
    assert cos.mean() > 0.99 and cos.min() > 0.98, cos


def test_every_prelu_runs_on_the_kpu_with_one_upload(built: tuple) -> None:
    res, _pre, _model = built
    km = read_kmodel(res.kmodel)
    c = census(km)
    if res.dense == "cpu":
        assert c.kpu_uploads == res.stats.uploads == 1
        assert set(c.cpu_compute_ops) == {"conv2d"}  # only the GDConv and the embedding stay on the CPU
    else:  # the embedding's dense layer: quantized on the CPU (multiply, add), uploaded a second time
        assert c.kpu_uploads == res.stats.uploads == 2
        assert set(c.cpu_compute_ops) == {"conv2d", "binary"}
        assert res.stats.cpu_weight_bytes < 32 * 128 * 4  # less than the dense layer's float weights alone
    assert c.kpu_convs == res.stats.kpu_layers > sum(op.kpu for op in res.plan.ops)  # PReLU layers split


def test_zones_mode_puts_several_slopes_in_one_table(built: tuple) -> None:
    res, _pre, _model = built
    km = read_kmodel(res.kmodel)
    tables = [layer.args for layer in km.layers if layer.kpu is not None]
    assert tables
    from k210tool.compile.kmodel import KpuConv

    convs = [op for mod in km.v5.modules if mod.type == "k210" for fn in mod.functions for op in fn.ops
             if isinstance(op, KpuConv)]
    slopes_per_table = [len({s["y_mul"] for s in c.activation.segments() if s["y_mul"]}) for c in convs]
    assert max(slopes_per_table) >= 5  # several PReLU shapes share one 16-segment table
