"""The KPU's functional model in NumPy, batched over N images.

What one KPU layer computes (nncase v1.9.0 ``modules/k210/include/nncase/kernels/k210/k210_kernels.h``,
the same formulas as the SDK's v0 simulator kernels):

1. convolution at stride 1 over the ``pad_value``-padded input, per output pixel::

       alu = sum(x*w) + (arg_x * sum(x) >> shr_x) + (arg_w * sum(w) >> shr_w) + arg_add * ic_per_group

2. batch norm per output channel: ``y = (alu * mul >> shift) + add``;
3. piecewise-linear activation: the last of the 16 segments with ``y > x_start`` gives
   ``round_half_even_ish((y - x_start) * y_mul >> shift) + bias`` (the runtime's "banker" carry shift,
   reproduced with its behaviour on negative values), clamped to 0..255;
4. 2x2/4x4 pooling (max, mean, or selecting one pixel: how stride 2 is done).

All integer arithmetic is exact: products of uint8 are summed in float32 while the sum is below 2**24,
otherwise in float64 (exact below 2**53), and the rest runs in int64, so results match the C++ bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.compile.kmodel.kpu import POOL_GEOMETRY
from k210tool.compile.kmodel.layout import row_layout
from k210tool.compile.kmodel.model import KpuConv

_F32_EXACT = 1 << 24


class KpuModelError(Exception):
    """A KPU layer this functional model cannot run (a hardware setting nncase never emits)."""


# ---------------------------------------------------------------------------------- RAM layout
def upload(ram: np.ndarray, start: int, x: np.ndarray) -> None:
    """Write ``x`` (N, B, C, H, W) uint8 into KPU RAM ``ram`` (N, bytes) at ``start`` in row layout."""
    n, b, c, h, w = x.shape
    for batch in range(b):
        region, lay = _region(ram, start + batch * _fmap_bytes(c, h, w), c, h, w)
        if lay.groups == 1:
            region[:, :c, :, :w] = x[:, batch]
            continue
        full = c // lay.groups
        if full:
            src = x[:, batch, : full * lay.groups].reshape(n, full, lay.groups, h, w).transpose(0, 1, 3, 2, 4)
            region[:, :full, :, :, :w] = src
        for ch in range(full * lay.groups, c):
            region[:, full, :, ch % lay.groups, :w] = x[:, batch, ch]


def download(ram: np.ndarray, start: int, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Read a (B, C, H, W) feature map at ``start`` of KPU RAM: returns (N, B, C, H, W) uint8."""
    b, c, h, w = shape
    out = np.empty((ram.shape[0], b, c, h, w), np.uint8)
    for batch in range(b):
        region, lay = _region(ram, start + batch * _fmap_bytes(c, h, w), c, h, w)
        if lay.groups == 1:
            out[:, batch] = region[:, :c, :, :w]
        else:
            blocks = region.shape[1]
            out[:, batch] = region[..., :w].transpose(0, 1, 3, 2, 4).reshape(
                ram.shape[0], blocks * lay.groups, h, w)[:, :c]
    return out


def _fmap_bytes(c: int, h: int, w: int) -> int:
    lay = row_layout(w)
    per_row = min(c, lay.groups)
    return lay.row_len * h * ((c + per_row - 1) // per_row) * 64


def _region(ram: np.ndarray, start: int, c: int, h: int, w: int) -> tuple[np.ndarray, object]:
    lay = row_layout(w)
    blocks = (c + lay.groups - 1) // lay.groups
    size = blocks * h * lay.row_len * 64
    if start < 0 or start + size > ram.shape[1]:
        raise KpuModelError(f"feature map {c}x{h}x{w} at {start} lies outside the 2 MiB KPU RAM")
    flat = ram[:, start : start + size]
    if lay.groups == 1:
        return flat.reshape(ram.shape[0], blocks, h, lay.row_len * 64), lay
    return flat.reshape(ram.shape[0], blocks, h, lay.groups, lay.row_pitch), lay


# ------------------------------------------------------------------------------------ one layer
@dataclass
class KpuLayerRunner:
    """A KPU convolution prepared once (weights, constant terms, tables), run on any batch."""

    conv: KpuConv

    def __post_init__(self) -> None:
        layer = self.conv.layer
        self.in_shape = layer.in_shape
        self.out_shape = layer.out_shape
        self.depthwise = layer.depthwise
        self.filter = layer.filter_size
        if self.filter not in (1, 3):
            raise KpuModelError(f"KPU kernel type {layer.get('kernel_type')} is not 1x1 or 3x3")
        if layer.pool_type not in POOL_GEOMETRY:
            raise KpuModelError(f"KPU pool type {layer.pool_type} is unknown")
        ic, oc, f = layer.in_channels, layer.out_channels, self.filter
        w = np.asarray(self.conv.weights, np.int64).reshape(oc, 1 if self.depthwise else ic, f, f)
        if self.depthwise and ic != oc:
            raise KpuModelError(f"depthwise KPU layer with {ic} input and {oc} output channels")
        self.g_ic = 1 if self.depthwise else ic
        self.pad_value = layer.get("pad_value")
        arg_x, arg_w = _signed(layer.get("arg_x"), 24), _signed(layer.get("arg_w"), 24)
        self.arg_x, self.shr_x = arg_x, layer.get("shr_x")
        sum_w = w.reshape(oc, -1).sum(axis=1)
        arg_add = _signed(layer.get("arg_add"), 40)
        # per output channel constant: (arg_w * sum_w >> shr_w) + arg_add * ic_per_group
        self.const = ((arg_w * sum_w) >> layer.get("shr_w")) + arg_add * self.g_ic
        k = w.shape[1] * f * f
        self.k = k
        self.dot_dtype = np.float32 if 255 * 255 * k < _F32_EXACT else np.float64
        self.w_mat = w.reshape(oc, k).astype(self.dot_dtype)
        self.w_dw = w[:, 0].astype(np.float32) if self.depthwise else None
        bn = self.conv.batch_norm
        self.bn_mul, self.bn_shift, self.bn_add = bn.mul, bn.shift, bn.add
        act = self.conv.activation.segments()
        self.act_x = np.array([s["x_start"] for s in act], np.int64)
        self.act_mul = np.array([s["y_mul"] for s in act], np.int64)
        self.act_shift = np.array([s["shift"] for s in act], np.int64)
        self.act_bias = np.array([s["bias"] for s in act], np.int64)
        self.act_sorted = bool(np.all(np.diff(self.act_x) > 0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(M, IC, H, W) uint8 -> (M, OC, OH, OW) uint8."""
        alu = self.alu(x)
        y = bn_act(alu, self)
        return pool(y, self.conv.layer.pool_type, self.out_shape)

    def alu(self, x: np.ndarray) -> np.ndarray:
        m, ic, h, w = x.shape
        if (ic, h, w) != self.in_shape:
            raise KpuModelError(f"KPU layer expects {self.in_shape}, got {x.shape[1:]}")
        if self.filter == 3:
            xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=self.pad_value)
        else:
            xp = x
        if self.depthwise:
            dot, sum_x = self._depthwise(xp, h, w)
        else:
            dot, sum_x = self._dense(xp, h, w)
        term_x = (self.arg_x * sum_x.astype(np.int64)) >> self.shr_x
        return dot.astype(np.int64) + term_x + self.const.reshape(1, -1, 1, 1)

    def _depthwise(self, xp: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        f = self.filter
        xf = xp.astype(np.float32)
        if f == 1:
            return xf * self.w_dw[:, 0, 0].reshape(1, -1, 1, 1), xf
        dot = np.zeros((xp.shape[0], xp.shape[1], h, w), np.float32)
        box = np.zeros_like(dot)
        for ky in range(f):
            for kx in range(f):
                win = xf[:, :, ky : ky + h, kx : kx + w]
                dot += win * self.w_dw[:, ky, kx].reshape(1, -1, 1, 1)
                box += win
        return dot, box

    def _dense(self, xp: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        m, ic = xp.shape[:2]
        f = self.filter
        if f == 1:
            cols = xp.reshape(m, ic, h * w)
        else:
            cols = np.empty((m, ic, f * f, h, w), np.uint8)
            for ky in range(f):
                for kx in range(f):
                    cols[:, :, ky * f + kx] = xp[:, :, ky : ky + h, kx : kx + w]
            cols = cols.reshape(m, ic * f * f, h * w)
        dot = _exact_matmul(self.w_mat, cols, self.dot_dtype)
        chan_sum = xp.sum(axis=1, dtype=np.int64)
        if f == 1:
            sum_x = chan_sum
        else:
            sum_x = sum(chan_sum[:, ky : ky + h, kx : kx + w] for ky in range(f) for kx in range(f))
        return dot.reshape(m, -1, h, w), sum_x[:, None]


def _exact_matmul(w: np.ndarray, cols: np.ndarray, dtype: type) -> np.ndarray:
    """(OC, K) @ (M, K, P) of integers, exactly (float32 if every partial sum stays below 2**24)."""
    return np.matmul(w, cols.astype(dtype))


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def bn_act(alu: np.ndarray, r: KpuLayerRunner) -> np.ndarray:
    """Batch norm then the activation table, exactly as the runtime's int64 code: uint8 result."""
    c = alu.shape[1]
    y = ((alu * r.bn_mul.reshape(1, c, 1, 1)) >> r.bn_shift.reshape(1, c, 1, 1)) + r.bn_add.reshape(1, c, 1, 1)
    if r.act_sorted:
        idx = np.searchsorted(r.act_x, y, side="left") - 1
        np.maximum(idx, 0, out=idx)
    else:
        idx = np.zeros(y.shape, np.int64)
        for i, x0 in enumerate(r.act_x):
            idx[y > x0] = i
    t = (y - r.act_x[idx]) * r.act_mul[idx]
    out = banker_shift(t, r.act_shift[idx]) + r.act_bias[idx]
    return np.clip(out, 0, 255).astype(np.uint8)


def banker_shift(t: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``carry_shift<int64_t, true>`` of nncase's runtime_op_utility.h, including its quirk on negatives:
    the integral part is the floor and the rounding step goes by the sign of the value."""
    integral = t >> shift
    frac = t & ((np.int64(1) << shift) - 1)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    sign = np.where(t < 0, -1, 1)
    up = (frac > half) | ((frac == half) & ((integral & 1) == 1))
    return np.where(shift > 0, integral + np.where(up, sign, 0), t)


def pool(y: np.ndarray, pool_type: int, out_shape: tuple[int, int, int]) -> np.ndarray:
    """The KPU's pooling stage on (M, C, H, W) uint8 (k210_kernels.h ``kpu_pool2d``)."""
    f, s = POOL_GEOMETRY[pool_type]
    m, c, h, w = y.shape
    oh, ow = h // s, w // s
    if (c, oh, ow) != out_shape:
        raise KpuModelError(f"pooling {h}x{w} with type {pool_type} gives {oh}x{ow}, the layer says {out_shape}")
    if pool_type == 0:
        return y
    if pool_type in (5, 6, 7):  # select one pixel of each window
        dy, dx = {5: (0, 0), 6: (0, 1), 7: (0, 0)}[pool_type]
        return np.ascontiguousarray(y[:, :, dy : dy + oh * s : s, dx : dx + ow * s : s])
    if pool_type in (1, 3, 2, 4):  # windows tile the map exactly (strides equal the filter)
        win = y[:, :, : oh * s, : ow * s].reshape(m, c, oh, s, ow, s)
        if pool_type in (1, 3):
            return win.max(axis=(3, 5))
        return (win.sum(axis=(3, 5), dtype=np.uint32) // (f * f)).astype(np.uint8)
    # 2x2 windows at stride 1: max pads with 0 (uint8 lowest), mean repeats the edge
    if pool_type == 9:
        padded = np.pad(y, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=0)
        return np.maximum(np.maximum(padded[:, :, :h, :w], padded[:, :, 1:, :w]),
                          np.maximum(padded[:, :, :h, 1:], padded[:, :, 1:, 1:]))
    padded = np.pad(y, ((0, 0), (0, 0), (0, 1), (0, 1)), mode="edge").astype(np.uint32)
    total = padded[:, :, :h, :w] + padded[:, :, 1:, :w] + padded[:, :, :h, 1:] + padded[:, :, 1:, 1:]
    return (total // 4).astype(np.uint8)
