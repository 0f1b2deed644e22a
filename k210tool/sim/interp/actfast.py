"""Batch norm + activation of a KPU layer: the exact integer formula, and a certified fast path.

The exact path (:func:`bn_act_exact`) is the runtime's int64 code. The fast path uses that, per output
channel, the result is a monotone step function of the convolution sum ``alu``: it becomes ``v`` at an
integer threshold ``T[c, v]``. These thresholds are computed exactly once (from the activation table's
change points mapped back through the batch norm), and lie within ``dev[c]`` of a line
``alu = alpha[c] + v * beta[c]``. So with ``u = (alu - alpha) / beta`` computed in float32, ``floor(u)``
*is* the output whenever ``u`` is farther than ``band[c]`` (line deviation + a bound on the float error)
from an integer; the few elements closer than that are recomputed exactly. A layer whose table is not
monotone, or whose band is too wide, always takes the exact path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_Y_LIMIT = 1 << 46  # |y| beyond which the activation is taken as saturated (checked, see y_thresholds)
_BIG = np.int64(1) << 62


def banker_shift(t: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``carry_shift<int64_t, true>`` of nncase's runtime_op_utility.h, including its quirk on negatives:
    the integral part is the floor and the rounding step goes by the sign of the value."""
    integral = t >> shift
    frac = t & ((np.int64(1) << shift) - 1)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    sign = np.where(t < 0, -1, 1)
    up = (frac > half) | ((frac == half) & ((integral & 1) == 1))
    return np.where(shift > 0, integral + np.where(up, sign, 0), t)


@dataclass
class ActTable:
    x: np.ndarray  # segment starts (int64)
    mul: np.ndarray
    shift: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        self.sorted = bool(np.all(np.diff(self.x) > 0))

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """uint8 activation of int64 ``y`` (the last segment with ``y > x_start``)."""
        if self.sorted:
            idx = np.searchsorted(self.x, y, side="left") - 1
            np.maximum(idx, 0, out=idx)
        else:
            idx = np.zeros(y.shape, np.intp)
            for i, x0 in enumerate(self.x):
                idx[y > x0] = i
        t = (y - self.x[idx]) * self.mul[idx]
        return np.clip(banker_shift(t, self.shift[idx]) + self.bias[idx], 0, 255).astype(np.uint8)


def bn_act_exact(alu: np.ndarray, channel: np.ndarray | None, bn: tuple[np.ndarray, np.ndarray, np.ndarray],
                 act: ActTable) -> np.ndarray:
    """Exact BN + activation. ``alu`` int64 of shape (C, ...) (``channel`` None) or flat with a channel per item."""
    mul, shift, add = bn
    if channel is None:
        shape = (-1,) + (1,) * (alu.ndim - 1)
        mul, shift, add = mul.reshape(shape), shift.reshape(shape), add.reshape(shape)
    else:
        mul, shift, add = mul[channel], shift[channel], add[channel]
    return act(((alu * mul) >> shift) + add)


# ----------------------------------------------------------------------------------- fast path
@dataclass
class FastAct:
    """Per-channel line parameters (float32, shaped (C, 1)) and exact thresholds for the flagged items."""

    r: np.ndarray  # 1 / beta
    q: np.ndarray  # alpha / beta
    band: np.ndarray  # distance to an integer below which an item is recomputed exactly
    lo: np.ndarray  # output for alu below every threshold
    hi: np.ndarray  # output above every threshold
    top: np.ndarray  # rint(u - 0.5) from which the line no longer applies (those levels are recomputed)
    check_top: bool = True


def build_fast(bn: tuple[np.ndarray, np.ndarray, np.ndarray], act: ActTable, offset: np.ndarray,
               partial: np.ndarray | float, a_error: np.ndarray | float) -> FastAct | None:
    """Line parameters for ``a`` where ``alu = a + offset[c]``; None when the fast path cannot be certified.

    The caller computes ``u = a * r - q`` in float32. ``partial`` bounds (in alu units, per channel) the
    magnitude of its intermediate sums beyond ``a`` itself; ``a_error`` bounds how far its ``a`` may be from
    the exact one (alu units). Float32 rounding is then bounded by 2**-21 (eight unit roundoffs) of the
    magnitudes involved, for the outputs that matter (|u| <= 300; beyond, the output is saturated anyway).
    """
    ys = y_thresholds(act)
    mul, shift, add = bn
    if ys is None or np.any(mul == 0) or not (np.all(mul > 0) or np.all(mul < 0)):
        return None
    v_lo, y_thr = ys
    sign = 1 if mul[0] > 0 else -1
    # out >= v  <=>  floor(alu * mul / 2^shift) + add >= Y_v  <=>  alu * mul >= (Y_v - add) * 2^shift
    num = (y_thr[None, :] - add[:, None]) << shift[:, None]
    m = mul[:, None]
    t = -((-num) // m) if sign > 0 else -(num // m)  # thresholds on sign * alu, ascending
    t = t - sign * offset[:, None]  # ... and on sign * a
    tf = t.astype(np.float64)
    levels = np.arange(1, tf.shape[1] + 1, dtype=np.float64)
    regular = _regular_prefix(tf, levels)
    if regular < 2:
        return None
    beta = (tf[:, regular - 1 : regular] - tf[:, :1]) / (regular - 1)
    if np.any(beta <= 0):
        return None
    # centre the line in its band: alpha halfway between the extreme residuals of the regular thresholds
    res = tf[:, :regular] - (tf[:, :1] + beta * (levels[:regular] - 1))
    alpha = tf[:, :1] - beta + (res.max(axis=1, keepdims=True) + res.min(axis=1, keepdims=True)) / 2
    r = (1.0 / beta).astype(np.float32).astype(np.float64)
    q = (alpha * r - v_lo).astype(np.float32).astype(np.float64)  # u = a*r - q = level value
    u_thr = tf * r - q  # exact u of each threshold (float64 is ample here)
    dev = np.abs(u_thr[:, :regular] - (levels[:regular] + v_lo)).max(axis=1, keepdims=True)
    partial = np.broadcast_to(np.asarray(partial, np.float64).reshape(-1, 1), r.shape)
    a_error = np.broadcast_to(np.asarray(a_error, np.float64).reshape(-1, 1), r.shape)
    mag = partial * np.abs(r) + 2 * np.abs(q) + 300.0
    band = dev + mag * 2.0 ** -21 + a_error * np.abs(r)
    if np.median(band) > 0.1:
        return None
    band = np.where(band > 0.1, np.float64(1.0), band)  # such a channel is always recomputed exactly
    # the first irregular threshold, as a level the caller's rint(u - 0.5) can reach just below it
    top = np.floor(u_thr[:, regular : regular + 1] - band) if regular < tf.shape[1] else np.full_like(band, np.inf)
    # the caller computes w = u - 0.5 = a * r - (q + 0.5)
    return FastAct(r=(sign * r).astype(np.float32), q=(q + 0.5).astype(np.float32), band=band.astype(np.float32),
                   lo=np.float32(v_lo), hi=np.float32(v_lo + tf.shape[1]), top=top.astype(np.float32),
                   check_top=bool(regular < tf.shape[1]))


def _regular_prefix(tf: np.ndarray, levels: np.ndarray) -> int:
    """How many leading levels lie (in every channel) on one straight line, within 3 alu units or 0.01 level.

    Rounding puts a threshold an alu unit or two off the line; nncase's extra segments near 255 move
    thresholds by a good part of a level, and those levels are left to the exact path.
    """
    n = tf.shape[1]
    while n >= 2:
        beta = (tf[:, n - 1 : n] - tf[:, :1]) / max(n - 1, 1)
        if np.any(beta <= 0):
            return 0
        off = np.abs(tf[:, :n] - tf[:, :1] - beta * (levels[:n] - 1))
        bad = np.nonzero(np.any(off > np.maximum(3.0, 0.01 * beta), axis=0))[0]
        if not len(bad):
            return n
        n = int(bad[0])
    return n


def y_thresholds(act: ActTable) -> tuple[int, np.ndarray] | None:
    """Exact change points of the activation as a function of int64 y, if it is monotone non-decreasing.

    Computed once per distinct table (layers of a model usually share a handful): the result is read-only.
    """
    key = tuple(np.asarray(v, np.int64).tobytes() for v in (act.x, act.mul, act.shift, act.bias))
    if key not in _Y_CACHE:
        if len(_Y_CACHE) >= 256:
            _Y_CACHE.pop(next(iter(_Y_CACHE)))
        found = _y_thresholds(act)
        if found is not None:
            found[1].flags.writeable = False
        _Y_CACHE[key] = found
    return _Y_CACHE[key]


_Y_CACHE: dict[tuple[bytes, ...], tuple[int, np.ndarray] | None] = {}


def _y_thresholds(act: ActTable) -> tuple[int, np.ndarray] | None:
    if not act.sorted or np.any(act.mul < 0):
        return None
    lo_y, hi_y = np.int64(-_Y_LIMIT), np.int64(_Y_LIMIT)
    # monotone inside each segment (non-negative slope); check each segment boundary does not step down
    probe = np.array([lo_y] + [v for e in act.x[1:] for v in (e, e + 1)] + [hi_y], np.int64)
    vals = act(probe).astype(np.int64)
    if np.any(np.diff(vals) < 0):
        return None
    v_lo, v_hi = int(vals[0]), int(vals[-1])
    if v_hi == v_lo:
        return None
    targets = np.arange(v_lo + 1, v_hi + 1, dtype=np.int64)
    lo = np.full(targets.shape, lo_y)
    hi = np.full(targets.shape, hi_y)  # act(hi) >= target for every target
    while np.any(hi - lo > 1):
        mid = lo + (hi - lo) // 2
        ok = act(mid).astype(np.int64) >= targets
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return v_lo, hi
