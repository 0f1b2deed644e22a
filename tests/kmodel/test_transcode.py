"""v5 (nncase 1.9) -> v4: the file (no constant stored twice), its KPU layers, and its outputs in the interpreter
against the v5 original, on every model the kmodel tests compile."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_v4_stores_nothing_twice

from k210tool.compile.kmodel import (
    KpuConv,
    TranscodeError,
    kmodel_version,
    read_kmodel,
    transcode_to_v4,
    write_v4,
)
from k210tool.compile.kmodel.model import Op
from k210tool.compile.kmodel.transcode import transcode
from k210tool.errors import K210ToolError
from k210tool.sim.interp import NumpyEngine, compare_outputs
from k210tool.sim.interp.cpu5 import build_quantize
from k210tool.sim.interp.program4 import _quantize

ADDRESS_FIELDS = ("bwsx_base_addr", "active_addr", "para_start_addr", "send_data_out")


def _kpu_convs(model) -> list[KpuConv]:
    if model.v4 is not None:
        return [n.op for n in model.v4.nodes if isinstance(n.op, KpuConv)]
    return [op for m in model.v5.modules for fn in m.functions for op in fn.ops if isinstance(op, KpuConv)]


@pytest.mark.parametrize("name", ["tiny_relu", "tiny_prelu", "tiny_leaky", "tiny_relu6"])
def test_transcoded_v4_runs_like_the_v5_original(compiled, name):
    v5 = compiled.kmodel(name)
    v4 = transcode_to_v4(v5)
    assert kmodel_version(v4) == 4
    m4, m5 = read_kmodel(v4), read_kmodel(v5)
    assert write_v4(m4) == v4  # our own output reads back into the same bytes
    assert_v4_stores_nothing_twice(v5, v4)
    # KPU layers: same words but the three v4 address fields (padding counts) and the output flag
    k4, k5 = _kpu_convs(m4), _kpu_convs(m5)
    assert len(k4) == len(k5) > 0
    for a, b in zip(k4, k5, strict=True):
        assert a.layer.replace(**dict.fromkeys(ADDRESS_FIELDS, 0)) == b.layer.replace(**dict.fromkeys(ADDRESS_FIELDS, 0))
        assert np.array_equal(a.weights, b.weights) and np.array_equal(a.batch_norm.words, b.batch_norm.words)
        assert np.array_equal(a.activation.words, b.activation.words)
    assert {n.name for n in m4.v4.nodes} <= {"kpu_upload", "kpu_conv2d", "dequantize", "quantize", "binary",
                                             "conv2d", "pad", "strided_slice", "transpose", "table_lookup1d"}
    images = compiled.images(name)
    diffs = compare_outputs(NumpyEngine(v5).run(images), NumpyEngine(v4).run(images))
    assert all(d.identical for d in diffs), diffs  # the message lists every tensor's difference


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilefacenet", "mobilefacenet_kpu"])
def test_transcoded_mobilefacenet(compiled, name):
    v5 = compiled.kmodel(name)
    m4 = transcode(read_kmodel(v5))
    assert m4.report.folded_downloads > 10
    v4 = write_v4(m4)
    assert_v4_stores_nothing_twice(v5, v4)
    images = compiled.images(name)[:3]
    diffs = compare_outputs(NumpyEngine(v5).run(images), NumpyEngine(v4).run(images))
    assert all(d.identical for d in diffs), diffs


# The CPU ops each backbone tail must become in v4 (a transcoder that skipped or merged one fails here)
POOL_OPS = {"pool_gap7": {("reduce_window2d", 2), ("reduce_window2d", 0), ("concat", None), ("reduce", 3),
                          ("binary", 3)},
            "pool_gmax4": {("reduce_window2d", 2), ("reduce", 2), ("reduce", 0), ("concat", None)}}


@pytest.mark.parametrize("name", sorted(POOL_OPS))
def test_pooling_and_concat_tails_equal_nncase_in_v4_bit_for_bit(compiled, name):
    """Global average/max pools (reduce), CPU max/average pools with partial windows (reduce_window2d), and
    concatenations nncase writes as strided views: the v4 interpreter, the v5 interpreter and nncase's
    Simulator give the same bits."""
    from k210tool.sim.engine import NncaseEngine

    v5 = compiled.kmodel(name)
    v4 = transcode_to_v4(v5)
    nodes = read_kmodel(v4).v4.nodes
    made = {(n.name, n.op.args.get("reduce_op", n.op.args.get("binary_op"))) for n in nodes if isinstance(n.op, Op)}
    made |= {(n.name, None) for n in nodes if n.name == "concat"}
    assert POOL_OPS[name] <= made
    images = compiled.images(name)
    want = NncaseEngine(v5).run(images)
    for got in (NumpyEngine(v5).run(images), NumpyEngine(v4).run(images)):
        diffs = compare_outputs(want, got)
        assert all(d.identical for d in diffs), diffs
    assert np.abs(want[0]).max() > 0  # the pools saw a live network


def test_strided_writes_become_a_concat_only_when_they_tile_a_map():
    from k210tool.compile.kmodel.model import MemoryRange
    from k210tool.compile.kmodel.views import Views

    views = Views(1000)
    parent = MemoryRange(1, 0, 0, 0)
    # a (1, 4, 3, 2) float map written as columns 0..1 and 2 (strides of the whole map: 24, 6, 2, 1)
    a = views.write(parent, (1, 4, 2, 2), (24, 6, 2, 1), 4, "op a")
    assert a.start >= 1000 and a.size == 64 and views.complete() == []
    with pytest.raises(TranscodeError, match="op b: it reads a map whose parts written by op a"):
        views.check_read(MemoryRange(1, 0, 8, 4), "op b")
    views.check_read(MemoryRange(1, 0, 96, 4), "op b")  # after the map: fine
    b = views.write(MemoryRange(1, 0, 16, 0), (1, 4, 1, 2), (24, 6, 2, 1), 4, "op c")
    (concat,) = views.complete()
    assert concat.args["inputs"] == [a, b] and concat.args["dims"] == [2, 1]
    assert (concat.args["outer_size"], concat.args["inner_size"]) == (4, 8) and concat.args["output"].size == 96
    views.leftover()
    views.write(parent, (1, 4, 2, 2), (24, 6, 2, 1), 4, "op d")
    with pytest.raises(TranscodeError, match="op d: it writes a strided view that no other op completes"):
        views.leftover()
    with pytest.raises(TranscodeError, match="not part of a concatenation"):
        Views(0).write(parent, (2, 2), (4, 2), 4, "op e")  # every other element: no dense parent


def test_the_dense_map_around_a_strided_view():
    from k210tool.compile.kmodel.views import parent_shape

    assert parent_shape((1, 32, 31, 3), (3072, 96, 3, 1)) == (1, 32, 32, 3)  # columns 0..30 of a 32x32 image
    assert parent_shape((1, 64, 1, 1), (1024, 16, 4, 1)) == (1, 64, 4, 4)  # pixel (0, 0) of 4x4 KPU maps
    assert parent_shape((1, 1, 1, 64), (1, 1, 64, 1)) == (1, 1, 1, 64)  # size-1 strides that mean nothing
    assert parent_shape((2, 1, 3), (10, 7, 1)) == (2, 1, 10)
    assert parent_shape((2, 2), (4, 2)) is None  # every other element: no dense map has it as a corner


def test_op_without_v4_form_names_the_op_its_layer_and_the_fix(compiled):
    data = compiled.kmodel("tiny_softmax")
    where = [layer.op for layer in read_kmodel(data).layers].index("softmax")
    with pytest.raises(TranscodeError) as info:
        transcode_to_v4(data)
    msg = str(info.value)
    assert isinstance(info.value, K210ToolError) and "\n" not in msg
    assert "softmax" in msg and f"layer {where} of `k210tool inspect`" in msg and "drop the Softmax" in msg


def test_transcode_rejects_files_that_are_not_nncase19_v5(samples):
    for version in (3, 4, 5):
        with pytest.raises(TranscodeError):
            transcode_to_v4(samples[version])


def test_odd_length_quantize_tie_is_the_documented_difference():
    """v5 (x86 Simulator) rounds half to even; the K210 v4 runtime rounds its odd tail half away from zero."""
    from k210tool.compile.kmodel.model import MemoryRange

    values = np.array([[0.5, 1.5, 2.5]], np.float32)  # ties; the last is the odd tail
    v5 = build_quantize(Op("quantize", {
        "scale": 1.0, "bias": 0.0, "dst_datatype": 4, "shape": (3,), "in_strides": (1,), "out_strides": (1,),
        "input": MemoryRange(3, 9, 0, 12), "output": MemoryRange(3, 4, 16, 3)}))
    v4 = _quantize(Op("quantize", {"quant_param": {"zero_point": 0, "scale": 1.0},
                                   "input": MemoryRange(1, 0, 0, 12), "output": MemoryRange(1, 1, 16, 3)}))

    class Mem:
        def __init__(self):
            self.pool = np.zeros((1, 32), np.uint8)
            self.pool[0, :12] = values.view(np.uint8)

        def tensor(self, rng, shape, strides, dtype):
            from k210tool.sim.interp.memory import view
            return view(self.pool, rng.start, shape, strides, dtype)

    a, b = Mem(), Mem()
    v5(a)
    v4({("main",): b.pool})
    assert list(a.pool[0, 16:19]) == [0, 2, 2]  # half to even
    assert list(b.pool[0, 16:19]) == [0, 2, 3]  # the tail element: half away from zero
