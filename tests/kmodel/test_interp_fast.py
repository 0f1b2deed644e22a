"""The interpreter's fast paths against the runtime's exact integer formula.

The compiled kernels (numba) and NumPy's certified float path must give the same bytes as
``bn_act_exact`` (the runtime's int64 code) on every layer: real layers of the compiled test models, and
synthetic variants of them that reach the cases the models do not (negative and zero batch-norm
multipliers, select pools at stride 2 and 4, max/mean pools, 1x1 depthwise, 600- and 1152-long dot
products, extreme ``arg_x``), on random maps plus all-0, all-255 and flat maps.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from k210tool.compile.kmodel import KpuConv, read_kmodel
from k210tool.compile.kmodel.kpu import POOL_GEOMETRY, BatchNorm
from k210tool.sim.interp import jit
from k210tool.sim.interp import kpu as kpu_model
from k210tool.sim.interp.actfast import bn_act_exact, y_thresholds
from k210tool.sim.interp.levels import build_levels, lookup

needs_numba = pytest.mark.skipif(not jit.enabled(), reason="numba is not installed (the NumPy path is tested)")


def _convs(compiled, name: str) -> list[KpuConv]:
    model = read_kmodel(compiled.kmodel(name))
    return [op for fn in model.v5.modules[1].functions for op in fn.ops if isinstance(op, KpuConv)]


def _maps(rng: np.random.Generator, shape: tuple[int, int, int], m: int = 12) -> np.ndarray:
    c, h, w = shape
    x = rng.integers(0, 256, (c, m, h, w), dtype=np.uint8)
    x[:, 0], x[:, 1] = 0, 255
    x[:, 2] = rng.integers(0, 256, (c, 1, 1), dtype=np.uint8)  # flat maps
    x[:, 3] = np.where(rng.random((c, h, w)) < 0.5, 0, rng.integers(0, 40, (c, h, w))).astype(np.uint8)  # ReLU-like
    return x


def _runners(conv: KpuConv, monkeypatch: pytest.MonkeyPatch) -> dict[str, kpu_model.KpuLayerRunner]:
    runners = {"exact": kpu_model.KpuLayerRunner(conv, fast=False)}
    monkeypatch.setenv("K210TOOL_INTERP_JIT", "0")
    runners["numpy"] = kpu_model.KpuLayerRunner(conv)
    monkeypatch.delenv("K210TOOL_INTERP_JIT")
    if jit.enabled():
        runners["jit"] = kpu_model.KpuLayerRunner(conv)
    return runners


def _check(conv: KpuConv, x: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> dict[str, kpu_model.KpuLayerRunner]:
    runners = _runners(conv, monkeypatch)
    want = runners.pop("exact")(x)
    for name, runner in runners.items():
        got = runner(x)
        assert got.shape == want.shape
        bad = np.argwhere(got != want)
        assert not len(bad), f"{name} path differs at {len(bad)} items, first {bad[0]}: {conv.layer.summary()}"
    return runners


def _bn_words(mul: np.ndarray, add: np.ndarray, shift: np.ndarray) -> BatchNorm:
    words = (np.asarray(mul, np.int64) & 0xFFFFFF) | ((np.asarray(add, np.int64) & 0xFFFFFFFF) << 24) \
        | ((np.asarray(shift, np.int64) & 0xF) << 56)
    return BatchNorm(words.astype(np.uint64))


def _variant(conv: KpuConv, rng: np.random.Generator, ic: int | None = None, oc: int | None = None,
             size: int = 8, **fields: int) -> KpuConv:
    """A layer like ``conv`` (its activation table, its batch-norm scale) with other shapes and settings."""
    layer = conv.layer
    depthwise = bool(fields.get("depth_wise_layer", layer.depthwise))
    ic = ic or layer.in_channels
    oc = ic if depthwise else (oc or layer.out_channels)
    f = 3 if fields.get("kernel_type", layer.get("kernel_type")) == 1 else 1
    stride = POOL_GEOMETRY[fields.get("pool_type", layer.pool_type)][1]
    layer = layer.replace(i_ch_num=ic - 1, o_ch_num=oc - 1, i_row_wid=size - 1, i_col_high=size - 1,
                          o_row_wid=size // stride - 1, o_col_high=size // stride - 1, **fields)
    bn = conv.batch_norm
    pick = rng.integers(0, len(bn.mul), oc)
    weights = rng.integers(0, 256, oc * (1 if depthwise else ic) * f * f).astype(np.uint8)
    return KpuConv(layer, _bn_words(bn.mul[pick], bn.add[pick], bn.shift[pick]), conv.activation, weights)


# ------------------------------------------------------------------------------------ thresholds
@pytest.mark.parametrize("name", ["tiny_relu", "tiny_leaky", "tiny_relu6"])
def test_thresholds_give_the_runtime_output_at_and_around_every_step(compiled, name):
    """The level table is exact: for alu at each threshold and one below/above, lookup == bn_act_exact."""
    rng = np.random.default_rng(3)
    tables = 0
    for conv in _convs(compiled, name)[:6]:
        runner = kpu_model.KpuLayerRunner(conv, fast=False)
        mul, shift, add = runner.bn
        mul = mul * np.where(rng.random(len(mul)) < 0.3, -1, 1)  # negative multipliers too ...
        mul[0] = 0  # ... and a dead channel
        bn = (mul, shift, add)
        offset = rng.integers(-5000, 5000, len(mul))
        bound = np.full(len(mul), 1 << 26)
        table = build_levels(bn, runner.act, offset, bound)
        if table is None:  # nncase's leaky tables may step down by one at a segment boundary
            assert y_thresholds(runner.act) is None
            continue
        tables += 1
        steps = table.thresholds[:, :-1]
        channel = np.repeat(np.arange(len(mul)), steps.shape[1] * 3)
        a = (steps[:, :, None] + np.array([-1, 0, 1])).reshape(-1)
        a = np.clip(a, -(1 << 26), 1 << 26)
        alu = table.sign[channel] * a + offset[channel]
        assert np.array_equal(lookup(table, a, channel), bn_act_exact(alu, channel, bn, runner.act))
    assert tables >= 3


def test_thresholds_refuse_a_table_that_is_not_monotone(compiled):
    runner = kpu_model.KpuLayerRunner(_convs(compiled, "tiny_relu")[0], fast=False)
    act = runner.act
    falling = type(act)(act.x, -np.abs(act.mul) - 1, act.shift, act.bias)
    assert build_levels(runner.bn, falling, np.zeros(len(runner.bn[0]), np.int64), np.full(len(runner.bn[0]), 1000)) \
        is None


# ------------------------------------------------------------------------- whole layers, real ones
@pytest.mark.parametrize("name", ["tiny_relu", "tiny_leaky", "tiny_relu6", "tiny_prelu"])
def test_every_fast_path_equals_the_exact_path_on_the_model_layers(compiled, name, monkeypatch):
    rng = np.random.default_rng(1)
    convs = _convs(compiled, name)
    used = {"jit": 0, "numpy": 0}
    for conv in convs:
        runners = _check(conv, _maps(rng, conv.layer.in_shape), monkeypatch)
        used["numpy"] += runners["numpy"].fast is not None
        used["jit"] += "jit" in runners and runners["jit"].levels is not None
    if name == "tiny_relu":  # ReLU tables are monotone and regular: every layer takes both fast paths
        assert used["numpy"] == len(convs)
        assert used["jit"] == (len(convs) if jit.enabled() else 0)


# ----------------------------------------------------------------- synthetic layers: other settings
VARIANTS = {
    "depthwise 3x3 select stride 2": dict(depth_wise_layer=1, kernel_type=1, pool_type=5),
    "depthwise 3x3 right-top select": dict(depth_wise_layer=1, kernel_type=1, pool_type=6),
    "depthwise 3x3 select stride 4": dict(depth_wise_layer=1, kernel_type=1, pool_type=7),
    "depthwise 1x1": dict(depth_wise_layer=1, kernel_type=0, pool_type=0),
    "depthwise 3x3 max pool": dict(depth_wise_layer=1, kernel_type=1, pool_type=1),
    "depthwise 3x3 pad 255": dict(depth_wise_layer=1, kernel_type=1, pool_type=0, pad_value=255),
    "depthwise 3x3 pad 97, 1-pixel wide": dict(depth_wise_layer=1, kernel_type=1, pool_type=0, pad_value=97,
                                               _size=1),
    "depthwise 3x3 big arg_x": dict(depth_wise_layer=1, kernel_type=1, pool_type=0, arg_x=(1 << 23) - 5, shr_x=3),
    "depthwise 3x3 negative arg_x": dict(depth_wise_layer=1, kernel_type=1, pool_type=0, arg_x=(1 << 24) - 700,
                                         shr_x=0),
    "dense 3x3 mean pool": dict(depth_wise_layer=0, kernel_type=1, pool_type=2),
    "dense 3x3 stride-1 max pool": dict(depth_wise_layer=0, kernel_type=1, pool_type=9),
    "dense 1x1 select stride 2": dict(depth_wise_layer=0, kernel_type=0, pool_type=5),
    "dense 1x1 K=600 (centred x)": dict(depth_wise_layer=0, kernel_type=0, pool_type=0, _ic=600),
    "dense 3x3 K=1152 (float64 chunks)": dict(depth_wise_layer=0, kernel_type=1, pool_type=0, _ic=128),
    "dense 1x1 big arg_x": dict(depth_wise_layer=0, kernel_type=0, pool_type=0, arg_x=(1 << 23) - 1, shr_x=15),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", ["tiny_relu", "tiny_leaky"])
def test_every_fast_path_equals_the_exact_path_on_synthetic_layers(compiled, name, variant, monkeypatch):
    rng = np.random.default_rng(zlib.crc32(variant.encode()))
    fields = dict(VARIANTS[variant])
    ic = fields.pop("_ic", 24)
    size = fields.pop("_size", 8)
    base = next(c for c in _convs(compiled, name) if c.layer.depthwise == bool(fields["depth_wise_layer"]))
    conv = _variant(base, rng, ic=ic, oc=20, size=size, **fields)
    # negative and zero multipliers in some channels
    bn = conv.batch_norm
    mul = np.where(rng.random(len(bn.mul)) < 0.3, -bn.mul, bn.mul)
    mul[1] = 0
    conv_mixed = KpuConv(conv.layer, _bn_words(mul, bn.add, bn.shift), conv.activation, conv.weights)
    for c in (conv, conv_mixed):
        _check(c, _maps(rng, c.layer.in_shape, m=6), monkeypatch)


# ------------------------------------------------------------------------------- kernel at the edges
@needs_numba
def test_dense_kernel_is_exact_at_every_threshold(compiled):
    """Feed the dense kernel sums sitting exactly on each step (and one off): the certified line flags
    them and the thresholds decide, so the output is the runtime's."""
    conv = next(c for c in _convs(compiled, "tiny_leaky") if not c.layer.depthwise)
    runner = kpu_model.KpuLayerRunner(conv)
    assert runner.levels is not None
    lv, oc = runner.levels, len(runner.bn[0])
    steps = lv.thresholds[:, :-1]
    a = (steps[:, :, None] + np.array([-1, 0, 1])).reshape(oc, -1) * lv.sign[:, None]
    keep = np.abs(a).max(axis=0) < 1 << 23  # exact in float32
    d = np.zeros((oc + 1, int(keep.sum())), np.float32)
    d[:oc] = a[:, keep]  # column sums of x are 0: a = D
    out = np.empty((oc, d.shape[1]), np.uint8)
    jit.dense_levels(d, oc, 0, d.shape[1], 0, runner.arg_x, runner.shr_x, *runner.jit_args, lv.base, out, 0)
    alu = a[:, keep].astype(np.int64) + runner.h[:, None]
    assert np.array_equal(out, bn_act_exact(alu, None, runner.bn, runner.act))


# ---------------------------------------------------------------------------- compiled CPU ops
@needs_numba
@pytest.mark.parametrize("dst", [np.uint8, np.int8])
def test_compiled_quantize_and_dequantize_equal_numpy(dst):
    """nncase's float32 order (multiply, then add, round half to even, clamp), edge values included."""
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(0, 200, 5000), np.arange(-300, 300) + 0.5, [0.0, -0.0, 1e30, -1e30]])
    x = x.astype(np.float32)
    scale, bias = np.float32(0.731), np.float32(11.5)
    info = np.iinfo(dst)
    want = np.clip(np.rint(x * scale + bias), info.min, info.max).astype(dst)
    got = np.empty(len(x), dst)
    jit.quantize(x, scale, bias, np.float32(info.min), np.float32(info.max), got)
    assert np.array_equal(got, want)
    q = rng.integers(info.min, info.max + 1, 3000).astype(dst)
    back = np.empty(len(q), np.float32)
    jit.dequantize(q, scale, bias, back)
    assert np.array_equal(back.view(np.uint32), (q.astype(np.float32) * scale + bias).view(np.uint32))
