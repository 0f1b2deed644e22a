"""How a feature map is stored as uint8 in KPU RAM, and how a convolution's weights meet that storage.

A :class:`Storage` lists the stored channels of a map. Stored channel ``j`` holds ``q_j`` with
``x[src_j] += coef_j * (scale_j * (q_j - zero_j) + offset_j)``: one stored channel per channel for most maps
(``coef`` = -1 keeps a channel upside down, which lets activation tables chain, see ``act``), two for a
PReLU split into its positive and negative parts (``relu(v)`` and ``relu(-v)`` with ``coef`` 1 and
``-slope``), padding channels (``src`` -1) to align groups to the KPU's row layout. Every consumer folds
``coef * scale`` into its weights and the zero points into its bias, so per-channel scales cost nothing.

Weights are quantized per output channel, symmetric around the KPU's weight zero point 128 (what nncase
does), after the input scales are folded in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

W_ZERO = 128


@dataclass
class Storage:
    src: np.ndarray  # int64 (S,): the channel each stored channel contributes to (-1: padding)
    coef: np.ndarray  # float64 (S,)
    scale: np.ndarray  # float64 (S,)
    zero: np.ndarray  # int64 (S,)
    offset: np.ndarray  # float64 (S,)

    @staticmethod
    def plain(scale: np.ndarray, zero: np.ndarray, coef: np.ndarray | None = None,
              offset: np.ndarray | None = None) -> Storage:
        c = len(scale)
        return Storage(np.arange(c), np.ones(c) if coef is None else np.asarray(coef, np.float64),
                       np.asarray(scale, np.float64), np.asarray(zero, np.int64),
                       np.zeros(c) if offset is None else np.asarray(offset, np.float64))

    @property
    def channels(self) -> int:
        return len(self.src)

    def common_zero(self) -> int | None:
        used = self.zero[self.src >= 0]
        return int(used[0]) if len(used) and np.all(used == used[0]) else None

    @property
    def one_to_one(self) -> bool:
        used = self.src[self.src >= 0]
        return len(np.unique(used)) == len(used)

    def concat(self, other: Storage) -> Storage:
        return Storage(*(np.concatenate([a, b]) for a, b in zip(
            (self.src, self.coef, self.scale, self.zero, self.offset),
            (other.src, other.coef, other.scale, other.zero, other.offset), strict=True)))

    def dequantize(self, q: np.ndarray, channels: int, axis: int = 1) -> np.ndarray:
        """The float map these stored channels hold (q: (N, S, ...) uint8) -> (N, channels, ...)."""
        shape = [1] * q.ndim
        shape[axis] = -1
        parts = self.coef.reshape(shape) * (self.scale.reshape(shape) * (q.astype(np.float64)
                                                                          - self.zero.reshape(shape))
                                            + self.offset.reshape(shape))
        out_shape = list(q.shape)
        out_shape[axis] = channels
        out = np.zeros(out_shape)
        for j, c in enumerate(self.src):
            if c >= 0:
                idx = [slice(None)] * q.ndim
                idx[axis] = c
                jdx = [slice(None)] * q.ndim
                jdx[axis] = j
                out[tuple(idx)] += parts[tuple(jdx)]
        return out


def fold_input(weights: np.ndarray, bias: np.ndarray, depthwise: bool, st: Storage) -> tuple[np.ndarray, np.ndarray]:
    """Weights over the stored channels (``coef * scale`` folded in) and the bias with the ``offset`` terms:
    ``v = sum(w_eff * (q - zero)) + b_eff`` over every tap (padded taps must read ``zero``)."""
    w = np.asarray(weights, np.float64)
    taps = w.shape[2] * w.shape[3]
    if depthwise:
        if not st.one_to_one or st.channels != w.shape[0] or np.any(st.src != np.arange(st.channels)):
            raise ValueError("a depthwise convolution needs one stored channel per channel, in order")
        w_eff = w * (st.coef * st.scale).reshape(-1, 1, 1, 1)
        b_eff = np.asarray(bias, np.float64) + w.reshape(len(w), -1).sum(axis=1) * st.coef * st.offset
        return w_eff, b_eff
    cols = np.where(st.src >= 0, st.src, 0)
    w_eff = w[:, cols] * np.where(st.src >= 0, st.coef * st.scale, 0.0).reshape(1, -1, 1, 1)
    off = np.where(st.src >= 0, st.coef * st.offset, 0.0)
    per_channel = w[:, cols].reshape(w.shape[0], st.channels, taps).sum(axis=2)
    return w_eff, np.asarray(bias, np.float64) + (per_channel * off).sum(axis=1)


def quantize_weights(w_eff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 weights (symmetric per output channel around 128) and each channel's scale ``alpha``:
    ``w_eff ~= alpha * (wq - 128)``."""
    flat = w_eff.reshape(len(w_eff), -1)
    peak = np.abs(flat).max(axis=1)
    alpha = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.rint(flat / alpha[:, None]), -127, 127).astype(np.int64) + W_ZERO
    return q.reshape(w_eff.shape).astype(np.uint8), alpha


def alu_terms(wq: np.ndarray, st: Storage, depthwise: bool) -> tuple[int | None, np.ndarray, np.ndarray]:
    """How the KPU's ``alu = sum((w - 128) * (q - z))`` is formed for this storage: the common zero point
    the KPU subtracts itself (None: per-channel zero points, folded per output channel), the constant to
    add to each output channel's alu to get ``sum((w - 128) * (q - zero_j))``, and the largest |alu|."""
    w = wq.astype(np.int64) - W_ZERO
    zc = st.common_zero()
    per_out = w.reshape(w.shape[0], -1)
    if zc is not None:
        correction = np.zeros(w.shape[0], np.int64)
        reach = max(zc, 255 - zc)
        bound = np.abs(per_out).sum(axis=1) * reach
        return zc, correction, bound
    if depthwise:
        raise ValueError("a depthwise convolution needs a common zero point")
    z = st.zero.reshape(1, -1)
    correction = -(w.sum(axis=(2, 3)) * z).sum(axis=1)  # the KPU computes sum((w-128)*q) itself
    bound = (np.abs(w) * 255).reshape(w.shape[0], -1).sum(axis=1)
    return None, correction, bound


def choose_zero(lo: np.ndarray, hi: np.ndarray, both_orientations: bool) -> tuple[int, np.ndarray, np.ndarray]:
    """A zero point common to all channels with ranges [lo, hi] (lo <= 0 <= hi), each channel's scale, and
    its orientation (+1/-1, when ``both_orientations``): the zero minimizing the summed log scale."""
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    span = np.maximum(hi - lo, 1e-12)
    best = None
    for z in range(1, 255):
        up = np.maximum(hi / (255 - z), -lo / z)
        down = np.maximum(hi / z, -lo / (255 - z)) if both_orientations else np.full_like(up, np.inf)
        s = np.minimum(up, down)
        cost = np.log(np.maximum(s, 1e-30) / (span / 255)).sum()
        if best is None or cost < best[0]:
            best = (cost, z, s, np.where(up <= down, 1.0, -1.0))
    assert best is not None
    _c, z, s, orient = best
    return z, np.maximum(s, 1e-12), orient


def scale_for(lo: np.ndarray, hi: np.ndarray, zero: int, orient: np.ndarray) -> np.ndarray:
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    up = np.maximum(hi / (255 - zero), -lo / max(zero, 1))
    down = np.maximum(hi / max(zero, 1), -lo / (255 - zero))
    return np.maximum(np.where(orient > 0, up, down), 1e-12)


def affine(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel scale and zero point covering [lo, hi] (with 0 inside) in 0..255."""
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    scale = np.maximum((hi - lo) / 255.0, 1e-12)
    zero = np.clip(np.rint(-lo / scale), 0, 255).astype(np.int64)
    return scale, zero
