"""k210tool's KPU backend on a MobileNetV2-shaped network (issue 15: common backbones without nncase):
ReLU6 on the KPU (the activation table's clamp at 255 is the clip), residual adds with a ReLU6 after them on
the KPU and on the CPU, GlobalAveragePooling2D and the Dense embedding after it in the float tail.
Every ReLU6 clips values on the calibration images, so a clip that is not applied shows in the cosine.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import kmodel_cosines
from model_factory import mobilenetv2_relu6

from k210tool.compile.kmodel import read_kmodel, transcode_to_v4
from k210tool.compile.kmodel.footprint import census
from k210tool.compile.kpu_backend import compile_kpu
from k210tool.compile.netplan import Add, Conv
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
def built() -> tuple:
    model = mobilenetv2_relu6(SIZE, emb=32)
    graph = graph_from_model(model)
    annotate_shapes(graph, model)
    pre = Preprocess(height=SIZE, width=SIZE)
    lowered = rewrite(graph, model, pre.normalize(_faces(100, 4, pre)), RewriteOptions())
    assert lowered.report.exact
    return compile_kpu(lowered.model, lowered.graph, pre, _faces(200, 24, pre)), pre, model


def test_relu6_and_its_adds_run_on_the_kpu_gap_and_dense_in_the_float_tail(built: tuple) -> None:
    res, _pre, _model = built
    ops = res.plan.ops
    kpu = [op for op in ops if op.kpu]
    clipped = [op for op in kpu if op.act.clip == 6.0]
    assert len(clipped) == 12 and any(isinstance(op, Add) for op in clipped)
    assert all(float(res.ranges.hi[op.pre].max()) > 6.0 for op in clipped)  # every clip is reached
    cpu = [op for op in ops if not op.kpu]
    assert any(isinstance(op, Add) and op.act.clip == 6.0 for op in cpu)  # the 2x2 stage
    gap, dense = cpu[-2:]
    assert isinstance(gap, Conv) and gap.depthwise and gap.weights.shape == (64, 1, 2, 2)
    assert np.allclose(gap.weights, 1 / 4)
    assert isinstance(dense, Conv) and dense.weights.shape == (32, 64, 1, 1) and dense.name == "embedding"
    c = census(read_kmodel(res.kmodel))
    assert c.kpu_uploads == 1 and c.kpu_convs == res.stats.kpu_layers == len(kpu)
    assert set(c.cpu_compute_ops) == {"conv2d", "binary"}  # the 2x2 stage's add and clip


def test_simulator_and_interpreter_agree_bit_for_bit(built: tuple) -> None:
    res, pre, _model = built
    images = _faces(300, 3, pre)
    assert np.array_equal(NncaseEngine(res.kmodel).run(images)[0], NumpyEngine(res.kmodel).run(images)[0])


def test_v4_runs_exactly_like_v5(built: tuple) -> None:
    res, pre, _model = built
    images = _faces(400, 4, pre)
    assert np.array_equal(NumpyEngine(transcode_to_v4(res.kmodel)).run(images)[0],
                          NumpyEngine(res.kmodel).run(images)[0])


def test_the_kmodel_computes_the_float_network(built: tuple) -> None:
    res, pre, model = built
    cos = kmodel_cosines(res.kmodel, model, pre, _faces(500, 16, pre))
    assert cos.mean() > 0.99 and cos.min() > 0.98, cos


def test_global_pooling_of_a_non_square_map() -> None:
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(1)
    L = k.layers
    inp = k.Input((24, 32, 3))
    x = L.ReLU(6.0)(L.Conv2D(16, 3, 2, padding="same")(inp))
    x = L.ReLU(6.0)(L.DepthwiseConv2D(3, 2, padding="same")(x))
    x = L.ReLU(6.0)(L.Conv2D(32, 1)(x))
    model = k.Model(inp, L.Dense(16)(L.GlobalAveragePooling2D()(x)))
    graph = graph_from_model(model)
    annotate_shapes(graph, model)
    pre = Preprocess(height=24, width=32)
    lowered = rewrite(graph, model, None, RewriteOptions())
    res = compile_kpu(lowered.model, lowered.graph, pre, _faces(200, 8, pre))
    gap = next(op for op in res.plan.ops if op.name.startswith("global_average_pooling2d"))
    assert not gap.kpu and gap.weights.shape == (32, 1, 6, 8)  # a 6x8 kernel on the CPU, not a 1x1 on the KPU
    images = _faces(300, 4, pre)
    assert np.array_equal(NncaseEngine(res.kmodel).run(images)[0], NumpyEngine(res.kmodel).run(images)[0])
    cos = kmodel_cosines(res.kmodel, model, pre, images)
    assert cos.min() > 0.99, cos
