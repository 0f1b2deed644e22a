"""Reductions as nncase's CPU kernels compute them, shared by the v5 (stackvm) and v4 (v0 runtime) programs.

Both runtimes reduce in the input's index order, one float32 operation at a time: ``dest = reducer(dest,
v)`` starting from an initial value (nncase 1.9 ``kernels/cpu/reference/reduce.cpp``, nncase v0.2 /
SDK ``lib/nncase/v0`` ``kernels::neutral::reduce``), and pool a window over its valid taps only
(``reduce_window2d``: the mean divides by the number of taps inside the map). NumPy's ``sum`` adds
pairwise, so the sums here are ``np.add.accumulate`` (sequential) and the min/max loops keep the
kernels' ``std::min``/``std::max`` choice between equal values.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
REDUCE_MEAN, REDUCE_MIN, REDUCE_MAX, REDUCE_SUM = 0, 1, 2, 3  # reduce_op_t, the same in v0.2 and 1.9


def fold(x: np.ndarray, axes: tuple[int, ...], op: int, init: float) -> np.ndarray:
    """Reduce the per-image axes ``axes`` of ``x`` (M, *shape) with ``op`` from ``init``, in index order.

    Returns (M, *kept dims). The mean is left to the caller (the runtimes divide or multiply differently)."""
    rank = x.ndim - 1
    kept = [a for a in range(rank) if a not in axes]
    moved = np.transpose(x, [0] + [a + 1 for a in kept] + [a + 1 for a in sorted(axes)])
    count = int(np.prod([x.shape[a + 1] for a in axes], dtype=np.int64))
    flat = moved.reshape(moved.shape[: 1 + len(kept)] + (count,)).astype(F32, copy=False)
    acc = np.full(flat.shape[:-1], F32(init), F32)
    if op in (REDUCE_SUM, REDUCE_MEAN):
        if count:
            joined = np.concatenate([acc[..., None], flat], axis=-1)
            acc = np.add.accumulate(joined, axis=-1, dtype=F32)[..., -1]
        return acc
    if op not in (REDUCE_MIN, REDUCE_MAX):
        raise ValueError(f"reduce op {op}")
    for i in range(count):
        acc = _pick(acc, flat[..., i], op)
    return acc


def _pick(acc: np.ndarray, v: np.ndarray, op: int) -> np.ndarray:
    # std::min(dest, v) keeps dest unless v < dest; std::max(dest, v) keeps dest unless dest < v
    return np.where(v < acc, v, acc) if op == REDUCE_MIN else np.where(acc < v, v, acc)


def window_args(a: dict, pads: tuple[int, int, int, int], clamp: tuple[float, float]) -> dict:
    """:func:`window2d`'s keyword arguments from a reduce_window2d op's fields (the same names in v4 and v5)."""
    return {"op": int(a["reduce_op"]), "init": a["init_value"], "kernel": (a["filter_h"], a["filter_w"]),
            "stride": (a["stride_h"], a["stride_w"]), "dilation": (a["dilation_h"], a["dilation_w"]),
            "pads": pads, "clamp": clamp}


def window2d(x: np.ndarray, op: int, init: float, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int], pads: tuple[int, int, int, int], clamp: tuple[float, float]) -> np.ndarray:
    """``reduce_window2d`` on ``x`` (M, N, C, H, W) float32: (M, N, C, OH, OW), the same in both runtimes."""
    m, n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = pads
    if min(kh, kw, sh, sw, dh, dw) <= 0:
        raise ValueError(f"reduce_window2d with kernel {kernel}, stride {stride}, dilation {dilation}")
    oh = (h + pt + pb - ((kh - 1) * dh + 1) + sh) // sh
    ow = (w + pl + pr - ((kw - 1) * dw + 1) + sw) // sw
    ys, xs = np.arange(max(oh, 0)) * sh - pt, np.arange(max(ow, 0)) * sw - pl
    acc = np.full((m, n, c, max(oh, 0), max(ow, 0)), F32(init), F32)
    count = np.zeros((max(oh, 0), max(ow, 0)), np.int32)
    xf = x.astype(F32, copy=False)
    for ky in range(kh):
        iy = ys + ky * dh
        vy = (iy >= 0) & (iy < h)
        for kx in range(kw):
            ix = xs + kx * dw
            valid = vy[:, None] & ((ix >= 0) & (ix < w))[None, :]
            if not valid.any():
                continue
            v = xf[:, :, :, np.clip(iy, 0, h - 1)][..., np.clip(ix, 0, w - 1)]
            if op in (REDUCE_SUM, REDUCE_MEAN):
                new = acc + v
            elif op in (REDUCE_MIN, REDUCE_MAX):
                new = _pick(acc, v, op)
            else:
                raise ValueError(f"reduce op {op}")
            acc = np.where(valid, new, acc)
            count += valid
    if op == REDUCE_MEAN:
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = acc / count.astype(F32)
    lo, hi = F32(clamp[0]), F32(clamp[1])
    if not (np.isneginf(lo) and np.isposinf(hi)):
        acc = np.where(acc < lo, lo, np.where(hi < acc, hi, acc))  # std::clamp
    return acc.astype(F32, copy=False)
