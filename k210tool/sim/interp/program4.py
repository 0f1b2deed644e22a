"""Run a kmodel v4 with the semantics of the K210's v0 runtime (kendryte-standalone-sdk ``lib/nncase/v0``).

Memories: the constants blob, main memory and KPU RAM (``runtime/interpreter.cpp``). The KPU layer is the
same functional model as for v5. The CPU ops follow ``kernels/neutral/neutral_kernels.h`` as compiled for
the K210 (``__riscv``): dequantize is ``x * (1/scale) + (-zero_point * (1/scale))``; quantize rounds half to
even (``fcvt.w.s rne``) except the last element of an odd-length tensor, which ``roundf`` rounds half away
from zero. Float arithmetic is modelled with one rounding per operation (no fused multiply-add).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from k210tool.compile.kmodel.model import V4_CONST, V4_KPU, V4_MAIN, Kmodel, KpuConv, MemoryRange, Op
from k210tool.sim.interp import kpu, kpuram
from k210tool.sim.interp.cpu5 import (
    F32,
    Conv2dGeometry,
    UnsupportedOp,
    conv2d_f32,
    dequantize_into,
    py_slice,
    quantize_into,
)
from k210tool.sim.interp.memory import view

Step = Callable[[dict], None]
_DT = {0: np.dtype(np.float32), 1: np.dtype(np.uint8)}
KPU_RAM = 2 * 1024 * 1024


def _pool(loc: int) -> tuple[str, ...]:
    if loc == V4_CONST:
        return ("const",)
    if loc == V4_MAIN:
        return ("main",)
    if loc == V4_KPU:
        return ("kpu",)
    raise UnsupportedOp(f"memory type {loc}")


def _flat(pools: dict, rng: MemoryRange, dtype: np.dtype | None = None, count: int | None = None) -> np.ndarray:
    dt = dtype or _DT.get(rng.datatype, np.dtype(np.uint8))
    n = rng.size // dt.itemsize if count is None else count
    return view(pools[_pool(rng.location)], rng.start, (n,), None, dt)


def _t(pools: dict, rng: MemoryRange, shape: Any, dtype: np.dtype | None = None) -> np.ndarray:
    dt = dtype or _DT.get(rng.datatype, np.dtype(np.uint8))
    return view(pools[_pool(rng.location)], rng.start, tuple(int(d) for d in shape), None, dt)


class V4Program:
    def __init__(self, model: Kmodel) -> None:
        if model.v4 is None:
            raise UnsupportedOp(f"V4Program needs a kmodel v4, got v{model.version}")
        self.model = model
        v4 = model.v4
        self.const = np.frombuffer(v4.constants, np.uint8).reshape(1, -1)
        self.steps: list[tuple[str, Step]] = []
        i = 0
        from k210tool.sim.interp.fuse import runs

        for run in runs([node.op for node in v4.nodes]):
            node = v4.nodes[i]
            builder = _BUILDERS.get(node.name)
            if builder is None:
                raise UnsupportedOp(f"node {i}: the interpreter has no v4 {node.name}")
            where = f"node {i} ({node.name})" if len(run) == 1 else f"nodes {i}..{i + len(run) - 1} ({node.name})"
            self.steps.append((where, _kpu_conv2d(run) if node.name == "kpu_conv2d" else builder(node.op)))
            i += len(run)

    def new_pools(self, n: int) -> dict:
        return {("const",): self.const, ("main",): np.zeros((n, max(1, self.model.v4.main_mem)), np.uint8),
                ("kpu",): np.zeros((n, KPU_RAM), np.uint8)}

    def run_images(self, inputs: np.ndarray, pools: dict | None = None) -> list[np.ndarray]:
        pools = pools if pools is not None else self.new_pools(len(inputs))
        v4 = self.model.v4
        rng = v4.inputs[0]
        pools[("kpuram",)] = kpuram.KpuRam(pools[("kpu",)])
        if rng.location == V4_KPU:  # the runtime uploads a KPU-resident input in row layout
            shape = v4.input_shapes[0]
            pools[("kpuram",)].store(rng.start, tuple(shape), kpuram.to_cm(inputs.reshape(len(inputs), *shape)))
        else:
            _flat(pools, rng, np.dtype(np.uint8))[...] = inputs
        for where, step in self.steps:
            try:
                step(pools)
            except (kpuram.KpuModelError, UnsupportedOp, ValueError, IndexError) as exc:
                raise UnsupportedOp(f"{where}: {exc}") from exc
        for rng in v4.outputs:
            if rng.location == V4_KPU:
                raise UnsupportedOp("an output in KPU RAM")
        return [_flat(pools, rng).copy() for rng in v4.outputs]


# ------------------------------------------------------------------------------------------- ops
def _kpu_conv2d(run: list[KpuConv]) -> Step:
    from k210tool.sim.interp.fuse import merge

    conv, tables = merge(run)
    runner = kpu.KpuLayerRunner(conv, row_tables=tables)
    b = conv.batches
    in_shape = (b, *conv.layer.in_shape)
    out_shape = (b, *conv.layer.out_shape)
    src, dst = conv.layer.src_address, conv.layer.dst_address
    main = conv.main_mem_output if conv.main_mem_output is not None and conv.main_mem_output.size else None

    def step(pools: dict) -> None:
        ram = pools[("kpuram",)]
        y = runner(ram.load(src, in_shape))
        ram.store(dst, out_shape, y)
        if main is not None:
            _t(pools, main, out_shape, np.dtype(np.uint8))[...] = kpuram.from_cm(y, ram.n)
    return step


def _kpu_upload(op: Op) -> Step:
    a = op.args
    shape = tuple(int(d) for d in a["in_shape"])

    def step(pools: dict) -> None:
        pools[("kpuram",)].store(a["output"].start, shape, kpuram.to_cm(_t(pools, a["input"], shape, np.dtype(np.uint8))))
    return step


def _dequantize(op: Op) -> Step:
    a = op.args
    qp = a["quant_param"]
    scale = F32(1.0) / F32(qp["scale"])
    zero = F32(-qp["zero_point"]) * scale

    def step(pools: dict) -> None:
        src = _flat(pools, a["input"], np.dtype(np.uint8))
        dst = _flat(pools, a["output"], np.dtype(F32), src.shape[1])
        dequantize_into(src, dst, scale, zero)
    return step


def _quantize(op: Op) -> Step:
    a = op.args
    qp = a["quant_param"]
    scale, zp = F32(qp["scale"]), F32(qp["zero_point"])

    def step(pools: dict) -> None:
        src = _flat(pools, a["input"], np.dtype(F32))
        dst = _flat(pools, a["output"], np.dtype(np.uint8), src.shape[1])
        quantize_into(src, dst, scale, zp, 0, 255)
        if src.shape[1] % 2:  # the runtime's odd tail element goes through roundf (half away from zero)
            tail = src[:, -1] * scale + zp
            dst[:, -1] = np.clip(np.sign(tail) * np.floor(np.abs(tail) + F32(0.5)), 0, 255)
    return step


_BINARY = {0: np.add, 1: np.subtract, 2: np.multiply, 3: np.divide, 4: np.minimum, 5: np.maximum}


def _binary(op: Op) -> Step:
    a = op.args
    fn = _BINARY.get(a["binary_op"])
    if fn is None:
        raise UnsupportedOp(f"binary op {a['binary_op']}")
    lo, hi = (F32(v) for v in a["fused_activation"])

    def step(pools: dict) -> None:
        x = _t(pools, a["input_a"], a["in_a_shape"], np.dtype(F32))
        y = _t(pools, a["input_b"], a["in_b_shape"], np.dtype(F32))
        r = np.minimum(np.maximum(fn(x, y), lo), hi)
        _t(pools, a["output"], a["out_shape"], np.dtype(F32))[...] = r
    return step


def _conv2d(op: Op) -> Step:
    a = op.args
    n, c, h, w = a["in_shape"]
    oc = a["out_channels"]
    g = a["groups"]
    if g <= 0 or c % g:
        raise UnsupportedOp(f"conv2d with {c} channels in {g} groups")
    w_shape = (oc, c // g, a["filter_h"], a["filter_w"])
    weights = np.asarray(a["weights"], F32).reshape(w_shape)
    bias = np.asarray(a["bias"], F32)
    geometry = Conv2dGeometry((n, c, h, w), w_shape, g, (a["stride_h"], a["stride_w"]),
                              (a["dilation_h"], a["dilation_w"]), (*a["padding_h"], *a["padding_w"]),
                              tuple(F32(v) for v in a["fused_activation"]))

    def step(pools: dict) -> None:
        x = _t(pools, a["input"], a["in_shape"], np.dtype(F32))
        _t(pools, a["output"], geometry.out_shape, np.dtype(F32))[...] = conv2d_f32(x, weights, bias, geometry)
    return step


def _pad(op: Op) -> Step:
    a = op.args
    dt = _DT.get(a["input"].datatype)
    if dt is None:
        raise UnsupportedOp(f"pad of datatype {a['input'].datatype}")
    shape = tuple(a["in_shape"])
    pads = a["paddings"]
    value = np.frombuffer(bytes(a["pad_value"]["storage"])[: dt.itemsize], dt)[0]
    out_shape = tuple(d + b + e for d, (b, e) in zip(shape, pads, strict=True))
    src_sl = (slice(None),) + tuple(slice(max(0, -b), d - max(0, -e)) for d, (b, e) in zip(shape, pads, strict=True))
    dst_sl = (slice(None),) + tuple(slice(max(0, b), o - max(0, e)) for o, (b, e) in zip(out_shape, pads, strict=True))

    def step(pools: dict) -> None:
        out = _t(pools, a["output"], out_shape, dt)
        src = _t(pools, a["input"], shape, dt)[src_sl].copy()
        out[...] = value
        out[dst_sl] = src
    return step


def _strided_slice(op: Op) -> Step:
    a = op.args
    dt = _DT.get(a["input"].datatype)
    # the v0 runtime loops `stride > 0 ? i < end : i > end`, which is Python's range (end -1: down to 0)
    ranges = [np.arange(b, e, s) for b, e, s in zip(a["begin"], a["end"], a["strides"], strict=True)]
    sl = (slice(None),) + tuple(py_slice(r, s) for r, s in zip(ranges, a["strides"], strict=True))
    out_shape = tuple(len(r) for r in ranges)

    def step(pools: dict) -> None:
        src = _t(pools, a["input"], a["in_shape"], dt)
        _t(pools, a["output"], out_shape, dt)[...] = src[sl]
    return step


def _transpose(op: Op) -> Step:
    a = op.args
    dt = _DT.get(a["input"].datatype)
    perm = tuple(a["perm"])
    out_shape = tuple(a["in_shape"][p] for p in perm)

    def step(pools: dict) -> None:
        src = _t(pools, a["input"], a["in_shape"], dt)
        _t(pools, a["output"], out_shape, dt)[...] = src.transpose((0,) + tuple(p + 1 for p in perm))
    return step


def _table_lookup1d(op: Op) -> Step:
    a = op.args

    def step(pools: dict) -> None:
        table = _flat(pools, a["table"], np.dtype(np.uint8), 256)[0]
        src = _flat(pools, a["input"], np.dtype(np.uint8))
        _flat(pools, a["output"], np.dtype(np.uint8), src.shape[1])[...] = table[src]
    return step


def _memory_copy(op: Op) -> Step:
    a = op.args

    def step(pools: dict) -> None:  # the runtime copies input.size / 4 floats
        src = _flat(pools, a["input"], np.dtype(F32))
        _flat(pools, a["output"], np.dtype(F32), src.shape[1])[...] = src
    return step


def _concat(op: Op) -> Step:
    a = op.args

    def step(pools: dict) -> None:
        outer, inner = a["outer_size"], a["inner_size"]
        parts = [_flat(pools, rng, np.dtype(np.uint8), outer * inner * int(d)).reshape(-1, outer, inner * int(d))
                 for rng, d in zip(a["inputs"], a["dims"], strict=True)]
        joined = np.concatenate(parts, axis=2)
        _flat(pools, a["output"], np.dtype(np.uint8), joined.shape[1] * joined.shape[2])[...] = \
            joined.reshape(joined.shape[0], -1)
    return step


def _reduce(op: Op) -> Step:
    from k210tool.sim.interp import reduce as red

    a = op.args
    in_shape, out_shape = tuple(a["in_shape"]), tuple(a["out_shape"])
    if any(o not in (i, 1) for i, o in zip(in_shape, out_shape, strict=True)):
        raise UnsupportedOp(f"reduce of {list(in_shape)} to {list(out_shape)}")
    axes = tuple(i for i, (d, o) in enumerate(zip(in_shape, out_shape, strict=True)) if o == 1 and d != 1)
    kind = int(a["reduce_op"])
    # reduce_mean: the sum times (float)output.size() / input.size(), the two memory ranges' float counts
    mul = F32(a["output"].size // 4) / F32(a["input"].size // 4) if a["input"].size >= 4 else F32(0)

    def step(pools: dict) -> None:
        x = _t(pools, a["input"], in_shape, np.dtype(F32))
        r = red.fold(x, axes, kind, a["init_value"])
        if kind == red.REDUCE_MEAN:
            r = r * mul
        _t(pools, a["output"], out_shape, np.dtype(F32))[...] = r.reshape((len(r),) + out_shape)
    return step


def _reduce_window2d(op: Op) -> Step:
    from k210tool.sim.interp import reduce as red

    a = op.args
    geometry = red.window_args(a, (*a["padding_h"], *a["padding_w"]), tuple(a["fused_activation"]))

    def step(pools: dict) -> None:
        x = _t(pools, a["input"], a["in_shape"], np.dtype(F32))
        r = red.window2d(x, **geometry)
        _t(pools, a["output"], r.shape[1:], np.dtype(F32))[...] = r
    return step


_BUILDERS: dict[str, Callable[[Any], Step]] = {
    "kpu_conv2d": _kpu_conv2d, "kpu_upload": _kpu_upload, "dequantize": _dequantize, "quantize": _quantize,
    "binary": _binary, "conv2d": _conv2d, "pad": _pad, "strided_slice": _strided_slice, "transpose": _transpose,
    "table_lookup1d": _table_lookup1d, "memory_copy": _memory_copy, "concat": _concat, "reduce": _reduce,
    "reduce_window2d": _reduce_window2d,
}
