"""nncase 1.9's CPU tensor functions (the stackvm ops) in NumPy, bit-exact with its x86 kernels.

Float arithmetic is float32 one operation at a time, as the C++ does it (no fused multiply-add), in the
same order where order matters: ``conv2d`` accumulates ``bias + x*w`` over (input channel, ky, kx) like
``src/kernels/cpu/reference/convolution.cpp``; ``quantize`` rounds half to even (``nearbyintf``).
Each ``build_*`` turns one lifted op into a step ``f(memory) -> None``; ``memory.tensor(range, shape,
strides)`` returns the (N, ...) view of a buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from k210tool.compile.kmodel.model import MemoryRange, Op
from k210tool.compile.kmodel.stackvm import i32, reduced_shape
from k210tool.errors import InputError
from k210tool.sim.interp import jit
from k210tool.sim.interp import reduce as red
from k210tool.sim.interp.memory import v5_dtype
from k210tool.sim.interp.workers import parallel, threads

Step = Callable[[Any], None]
F32 = np.float32


class UnsupportedOp(InputError):
    """An op (or an op setting) the interpreter does not implement (use nncase's Simulator for that model)."""


def _t(mem: Any, rng: MemoryRange, shape: Any, strides: Any, dtype: np.dtype | None = None) -> np.ndarray:
    return mem.tensor(rng, shape, strides, dtype or v5_dtype(rng.datatype))


def build_dequantize(op: Op) -> Step:
    a = op.args
    scale, bias = F32(a["scale"]), F32(a["bias"])

    def step(mem: Any) -> None:
        dequantize_into(_t(mem, a["input"], a["shape"], a["in_strides"]),
                        _t(mem, a["output"], a["shape"], a["out_strides"]), scale, bias)
    return step


def build_quantize(op: Op) -> Step:
    a = op.args
    scale, bias = F32(a["scale"]), F32(a["bias"])
    info = np.iinfo(v5_dtype(a["dst_datatype"]))

    def step(mem: Any) -> None:
        quantize_into(_t(mem, a["input"], a["shape"], a["in_strides"]),
                      _t(mem, a["output"], a["shape"], a["out_strides"]), scale, bias, info.min, info.max)
    return step


def dequantize_into(src: np.ndarray, dst: np.ndarray, scale: np.float32, bias: np.float32) -> None:
    """``dst = src * scale + bias`` in float32, by the compiled kernel image by image where it can."""
    rows = row_views(src, dst)
    if rows is not None and dst.dtype == F32:
        by_images(lambda s, d: jit.dequantize(s, scale, bias, d), *rows)
    else:
        dst[...] = src.astype(F32) * scale + bias


def quantize_into(src: np.ndarray, dst: np.ndarray, scale: np.float32, bias: np.float32, lo: int, hi: int) -> None:
    """``dst = clip(rint(src * scale + bias), lo, hi)``, by the compiled kernel image by image where it can."""
    rows = row_views(src, dst)
    if rows is not None and src.dtype == F32:
        f_lo, f_hi = F32(lo), F32(hi)
        by_images(lambda s, d: jit.quantize(s, scale, bias, f_lo, f_hi, d), *rows)
    else:
        dst[...] = np.clip(np.rint(src * scale + bias), lo, hi)


def row_views(*xs: np.ndarray) -> list[list[np.ndarray]] | None:
    """Per image, a 1-D view of each (N, ...) tensor whose per-image part is dense (the compiled kernels
    vectorize on those); None when numba is off or a tensor is strided inside an image."""
    if not jit.enabled():
        return None
    out = []
    for x in xs:
        want = x.itemsize
        for d, s in zip(reversed(x.shape[1:]), reversed(x.strides[1:]), strict=True):
            if d > 1 and s != want:
                return None
            want *= d
        count = int(np.prod(x.shape[1:]))
        flat = np.lib.stride_tricks.as_strided(x, (x.shape[0], count), (x.strides[0], x.itemsize))
        out.append(list(flat))
    return out


def by_images(fn: Callable[[np.ndarray, np.ndarray], None], src: list[np.ndarray], dst: list[np.ndarray]) -> None:
    """``fn`` on each image's (source, destination), the images shared among the interpreter's threads."""
    n = len(src)
    step = max(1, -(-n // threads()))

    def part(i: int) -> None:
        for k in range(i, min(n, i + step)):
            fn(src[k], dst[k])
    parallel(part, range(0, n, step))


_BINARY: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    0: np.add, 1: np.subtract, 2: np.multiply, 3: np.divide, 4: np.minimum, 5: np.maximum,
}


def build_binary(op: Op) -> Step:
    a = op.args
    if a["binary_op"] not in _BINARY or a["datatype"] != 9:
        raise UnsupportedOp(f"binary op {a['binary_op']} on datatype {a['datatype']}")
    fn = _BINARY[a["binary_op"]]
    lo, hi = F32(a["fused_clamp_low"]), F32(a["fused_clamp_high"])
    clamp = not (np.isneginf(lo) and np.isposinf(hi))

    def step(mem: Any) -> None:
        x = _t(mem, a["input_a"], a["in_a_shape"], a["in_a_strides"])
        y = _t(mem, a["input_b"], a["in_b_shape"], a["in_b_strides"])
        r = fn(_rank(x, len(a["out_shape"])), _rank(y, len(a["out_shape"])))
        if clamp:
            r = np.minimum(np.maximum(r, lo), hi)
        _t(mem, a["output"], a["out_shape"], a["out_strides"])[...] = r
    return step


def _rank(x: np.ndarray, rank: int) -> np.ndarray:
    """Right-align a (N, ...) view to ``rank`` dims after the batch axis (nncase get_reduced_offset)."""
    missing = rank - (x.ndim - 1)
    return x.reshape((x.shape[0],) + (1,) * missing + x.shape[1:]) if missing > 0 else x


def build_conv2d(op: Op) -> Step:
    a = op.args
    n, c, h, w = a["in_shape"]
    oc, g_ic, kh, kw = a["w_shape"]
    (pt, pb, _), (pl, pr, _) = a["padding_h"], a["padding_w"]
    geometry = Conv2dGeometry((n, c, h, w), (oc, g_ic, kh, kw), a["groups"], (a["stride_h"], a["stride_w"]),
                              (a["dilation_h"], a["dilation_w"]), (pt, pb, pl, pr),
                              (F32(a["fused_clamp_low"]), F32(a["fused_clamp_high"])))

    def step(mem: Any) -> None:
        x = _t(mem, a["input"], a["in_shape"], a["in_strides"], np.dtype(F32))
        wts = _t(mem, a["weights"], a["w_shape"], a["w_strides"], np.dtype(F32))[0]
        bias = mem.tensor(a["bias"], (oc,), a["bias_strides"][-1:] or (1,), np.dtype(F32))[0]
        out = _t(mem, a["output"], geometry.out_shape, a["out_strides"], np.dtype(F32))
        out[...] = conv2d_f32(x, wts, bias, geometry)
    return step


class Conv2dGeometry:
    """Shapes and settings of a float conv2d, validated once."""

    def __init__(self, in_shape: tuple, w_shape: tuple, groups: int, stride: tuple, dilation: tuple,
                 pads: tuple, clamp: tuple) -> None:
        n, c, h, w = in_shape
        oc, g_ic, kh, kw = w_shape
        if groups <= 0 or c != g_ic * groups or oc % groups or min(stride) <= 0:
            raise UnsupportedOp(f"conv2d with {c} channels, weights {list(w_shape)} and {groups} groups")
        pt, pb, pl, pr = pads
        oh = (h + pt + pb - ((kh - 1) * dilation[0] + 1) + stride[0]) // stride[0]
        ow = (w + pl + pr - ((kw - 1) * dilation[1] + 1) + stride[1]) // stride[1]
        self.in_shape, self.w_shape, self.groups = in_shape, w_shape, groups
        self.out_shape = (n, oc, oh, ow)
        # output pixel (y, x) reads input row y*stride - pad + k*dilation; taps outside are skipped
        self.ys = np.arange(oh) * stride[0] - pt
        self.xs = np.arange(ow) * stride[1] - pl
        self.dilation = dilation
        self.clamp = clamp


def conv2d_f32(x: np.ndarray, wts: np.ndarray, bias: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """float32 conv, accumulating ``bias + x*w`` over (input channel, ky, kx) in the order of nncase's
    reference kernel (and the v0 runtime's neutral conv2d), one rounding per operation: (M, n, oc, oh, ow)."""
    m = x.shape[0]
    n, c, h, w = g.in_shape
    oc, g_ic, kh, kw = g.w_shape
    _, _, oh, ow = g.out_shape
    groups = g.groups
    g_oc = oc // groups
    acc = np.broadcast_to(bias.astype(F32).reshape(1, 1, oc, 1, 1), (m, n, oc, oh, ow)).astype(F32)
    xg = x.reshape(m, n, groups, g_ic, h, w)
    for ic in range(g_ic):
        for ky in range(kh):
            iy = g.ys + ky * g.dilation[0]
            vy = (iy >= 0) & (iy < h)
            if not vy.any():
                continue
            for kx in range(kw):
                ix = g.xs + kx * g.dilation[1]
                vx = (ix >= 0) & (ix < w)
                if not vx.any():
                    continue
                patch = xg[:, :, :, ic][:, :, :, np.clip(iy, 0, h - 1)][..., np.clip(ix, 0, w - 1)]
                wv = wts[:, ic, ky, kx].astype(F32).reshape(1, 1, groups, g_oc, 1, 1)
                prod = (patch[:, :, :, None] * wv).reshape(m, n, oc, oh, ow)
                valid = vy[:, None] & vx[None, :]
                acc = np.where(valid, acc + prod, acc) if not valid.all() else acc + prod
    lo, hi = g.clamp
    if not (np.isneginf(lo) and np.isposinf(hi)):
        acc = np.minimum(np.maximum(acc, lo), hi)
    return acc


def build_pad(op: Op) -> Step:
    a = op.args
    if a["pad_mode"] != 0:
        raise UnsupportedOp(f"pad mode {a['pad_mode']} (only constant padding is implemented)")
    if any(p[2] for p in a["paddings"]):
        raise UnsupportedOp("interior padding")
    shape = tuple(a["shape"])
    pads = [(p[0], p[1]) for p in a["paddings"]]
    out_shape = tuple(d + b + e for d, (b, e) in zip(shape, pads, strict=True))
    src_sl = tuple(slice(max(0, -b), d - max(0, -e)) for d, (b, e) in zip(shape, pads, strict=True))
    dst_sl = tuple(slice(max(0, b), o - max(0, e)) for o, (b, e) in zip(out_shape, pads, strict=True))

    def step(mem: Any) -> None:
        src = _t(mem, a["input"], shape, a["in_strides"])
        dst = _t(mem, a["output"], out_shape, a["out_strides"], src.dtype)
        dst[...] = a["pad_value"]
        dst[(slice(None),) + dst_sl] = src[(slice(None),) + src_sl]
    return step


def build_slice(op: Op) -> Step:
    a = op.args
    shape = tuple(a["shape"])
    idx = []
    for d, b, e, s in zip(shape, a["begins"], a["ends"], a["strides"], strict=True):
        e, s = i32(e), i32(s)
        if s == 0:
            raise UnsupportedOp("slice with stride 0")
        idx.append(np.arange(b, min(e, d), s) if s > 0 else np.arange(b, max(e, -1), s))
    out_shape = tuple(len(i) for i in idx)
    sl = tuple(py_slice(i, i32(s)) for i, s in zip(idx, a["strides"], strict=True))

    def step(mem: Any) -> None:
        src = _t(mem, a["input"], shape, a["in_strides"])
        _t(mem, a["output"], out_shape, a["out_strides"], src.dtype)[...] = src[(slice(None),) + sl]
    return step


def py_slice(idx: np.ndarray, step: int) -> slice:
    """The Python slice picking exactly the indices ``idx`` (a stop below 0 means "through index 0")."""
    if not len(idx):
        return slice(0, 0)
    stop = int(idx[-1]) + (1 if step > 0 else -1)
    return slice(int(idx[0]), stop if stop >= 0 else None, step)


def build_transpose(op: Op) -> Step:
    a = op.args
    shape, perm = tuple(a["shape"]), tuple(a["perm"])
    out_shape = tuple(shape[p] for p in perm)

    def step(mem: Any) -> None:
        src = _t(mem, a["input"], shape, a["in_strides"])
        dst = _t(mem, a["output"], out_shape, a["out_strides"], src.dtype)
        dst[...] = src.transpose((0,) + tuple(p + 1 for p in perm))
    return step


def build_lut1d(op: Op) -> Step:
    a = op.args

    def step(mem: Any) -> None:
        src = _t(mem, a["input"], a["shape"], a["in_strides"])
        table = mem.tensor(a["table"], (a["table"].size,), None, np.dtype(np.uint8))[0]
        _t(mem, a["output"], a["shape"], a["out_strides"])[...] = table[src]
    return step


def build_copy(op: Op) -> Step:
    a = op.args

    def step(mem: Any) -> None:
        src = _t(mem, a["input"], a["shape"], a["in_strides"])
        _t(mem, a["output"], a["shape"], a["out_strides"], src.dtype)[...] = src
    return step


def build_reduce(op: Op) -> Step:
    a = op.args
    if a["datatype"] != 9:
        raise UnsupportedOp(f"reduce on datatype {a['datatype']} (the interpreter reduces float32)")
    shape = tuple(a["in_shape"])
    axes = tuple(int(x) for x in a["axis"] if 0 <= int(x) < len(shape))
    out_shape = reduced_shape(shape, axes, bool(a["keep_dims"]))
    kind = int(a["reduce_op"])
    # nncase 1.9 starts min/max from the type's extremes whatever the code pushed; sum and mean from init_value
    init = {red.REDUCE_MIN: np.finfo(F32).max, red.REDUCE_MAX: np.finfo(F32).min}.get(kind, a["init_value"])
    block = F32(int(np.prod([shape[x] for x in axes], dtype=np.int64)))

    def step(mem: Any) -> None:
        x = _t(mem, a["input"], shape, a["in_strides"], np.dtype(F32))
        r = red.fold(x, axes, kind, init)
        if kind == red.REDUCE_MEAN:
            r = r / block
        _t(mem, a["output"], out_shape, a["out_strides"], np.dtype(F32))[...] = r.reshape((len(r),) + out_shape)
    return step


def build_reduce_window2d(op: Op) -> Step:
    a = op.args
    if a["datatype"] != 9:
        raise UnsupportedOp(f"reduce_window2d on datatype {a['datatype']}")
    shape = tuple(a["in_shape"])
    if len(shape) != 4:
        raise UnsupportedOp(f"reduce_window2d of a rank-{len(shape)} tensor")
    geometry = red.window_args(a, (*a["padding_h"][:2], *a["padding_w"][:2]),
                               (a["fused_clamp_low"], a["fused_clamp_high"]))

    def step(mem: Any) -> None:
        x = _t(mem, a["input"], shape, a["in_strides"], np.dtype(F32))
        r = red.window2d(x, **geometry)
        _t(mem, a["output"], r.shape[1:], a["out_strides"], np.dtype(F32))[...] = r
    return step


BUILDERS: dict[str, Callable[[Op], Step]] = {
    "dequantize": build_dequantize, "quantize": build_quantize, "binary": build_binary,
    "conv2d": build_conv2d, "pad": build_pad, "slice": build_slice, "transpose": build_transpose,
    "lut1d": build_lut1d, "copy": build_copy, "reduce": build_reduce, "reduce_window2d": build_reduce_window2d,
}
