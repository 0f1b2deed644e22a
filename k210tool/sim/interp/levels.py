"""Batch norm + activation of a KPU layer as exact integer thresholds, one row per output channel.

For a monotone activation table the layer's output is a step function of the convolution sum ``alu``:
per channel it becomes ``v`` at an integer threshold, so ``out = base + count(thresholds <= a)`` with
``a = sign * (alu - offset)``. The thresholds are computed once, exactly (int64; batch norm ``mul`` is 24
bits and ``shift`` 4 bits, and the activation's change points in ``y`` are bounded by ``_Y_LIMIT``), so a
lookup is an integer comparison: no rounding analysis, no recomputation. A bucket index over each row
gives a starting count that never exceeds the true one; the lookup then walks forward (usually zero or one
step). :func:`lookup` is the NumPy reference of the compiled kernels in :mod:`~k210tool.sim.interp.jit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.sim.interp.actfast import ActTable, y_thresholds

BUCKETS = 512  # per channel; the levels (at most 255) fall about two buckets apart
SENTINEL = np.int64(1) << 62  # ends every row: no ``a`` reaches it


@dataclass
class LevelTable:
    """``out[c] = base + #(thresholds[c, :] <= sign[c] * (alu - offset[c]))``."""

    sign: np.ndarray  # int64 (C,): -1 where the batch norm multiplier is negative
    thresholds: np.ndarray  # int64 (C, L + 1), ascending, last column SENTINEL
    base: int  # the output below every threshold
    lo: np.ndarray  # float64 (C,): where bucket 1 starts
    scale: np.ndarray  # float64 (C,): buckets per unit of ``a``
    start: np.ndarray  # int32 (C, BUCKETS): count of thresholds <= the start of the previous bucket


def build_levels(bn: tuple[np.ndarray, np.ndarray, np.ndarray], act: ActTable, offset: np.ndarray,
                 bound: np.ndarray) -> LevelTable | None:
    """Thresholds for ``a = sign * (alu - offset)``, ``|a| <= bound`` (per channel); None if the table is not
    monotone (then only the runtime's formula, :func:`~k210tool.sim.interp.actfast.bn_act_exact`, applies)."""
    mul, shift, add = (np.asarray(v, np.int64) for v in bn)
    ys = y_thresholds(act)
    if ys is None or np.any(shift > 15) or np.any(np.abs(mul) >= 1 << 24):
        return None  # outside the hardware's field widths: int64 products could overflow
    base, y_thr = ys
    sign = np.where(mul < 0, -1, 1).astype(np.int64)
    # out >= v  <=>  floor(alu * mul / 2^shift) + add >= Y_v  <=>  alu * mul >= (Y_v - add) * 2^shift
    num = (y_thr[None, :] - add[:, None]) << shift[:, None]  # |y_thr| <= 2**46, so this fits int64
    m = mul[:, None]
    safe = np.where(m == 0, 1, m)
    up = -((-num) // safe)  # mul > 0: alu >= ceil(num / mul)
    down = -(num // safe)  # mul < 0: -alu >= -floor(num / mul)
    t = np.where(m > 0, up, down)
    # mul == 0: y = add whatever alu is, so the level is reached everywhere or nowhere
    t = np.where(m == 0, np.where(y_thr[None, :] <= add[:, None], -SENTINEL, SENTINEL), t)
    t = t - sign[:, None] * np.asarray(offset, np.int64)[:, None]
    # thresholds beyond every reachable a compare the same when clipped; clipping keeps the buckets tight
    reach = np.asarray(bound, np.int64)[:, None] + 1
    t = np.clip(t, -reach, reach)
    thresholds = np.concatenate([t, np.full((len(t), 1), SENTINEL)], axis=1)
    lo, scale, start = _buckets(t)
    return LevelTable(sign, thresholds, int(base), lo, scale, start)


def _buckets(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bucket ``b = floor((a - lo) * scale)`` (clamped) and a count ``start[c, b]`` that never exceeds the
    number of thresholds <= a: it counts those up to the start of bucket ``b - 1``, which a float rounding
    of ``b`` by one cannot pass."""
    lo = t[:, 0].astype(np.float64)
    width = np.maximum((t[:, -1] - t[:, 0]).astype(np.float64) / (BUCKETS - 2), 1.0)
    scale = 1.0 / width
    edges = lo[:, None] + (np.arange(BUCKETS) - 1)[None, :] * width[:, None]  # start of the previous bucket
    # count of t <= edge; floor(edge) as an int64 keeps the comparison exact
    floor_edges = np.floor(edges).astype(np.int64)
    start = np.stack([np.searchsorted(row, e, side="right") for row, e in zip(t, floor_edges, strict=True)])
    return lo, scale, start.astype(np.int32)


def lookup(table: LevelTable, a: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Reference lookup (NumPy): the level of int64 ``a`` (already ``sign * (alu - offset)``) per item."""
    rows = table.thresholds[channel]
    count = (rows <= a.reshape(-1, 1)).sum(axis=1)
    return (table.base + count).astype(np.uint8).reshape(a.shape)
