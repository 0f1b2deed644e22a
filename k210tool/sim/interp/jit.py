"""Compiled (numba) kernels for a KPU layer's per-element work: one fused loop instead of ten NumPy passes.

Each kernel computes, per output element, the exact convolution sum (float32 holds these integers
exactly), batch norm + activation through the certified line of
:mod:`~k210tool.sim.interp.actfast` (``w = a*r - q`` in float32; ``rint(w)`` is the output unless ``w``
lies within the channel's band of a half), and then looks the few uncertified items up in the exact
integer thresholds of :mod:`~k210tool.sim.interp.levels`. The line parameters come from ``build_fast``
with the error of rounding ``a`` to float32 accounted for, so every output equals the runtime's integer
formula.

numba is optional: :func:`enabled` is False when it is not installed or ``K210TOOL_INTERP_JIT=0``, and
the interpreter then takes its NumPy path (same results, slower). Kernels release the GIL, so the
caller's threads run them on every core; they compile on first use and are cached on disk.

Loops index arrays with the bare loop variable (slices give the offsets): with ``base + i`` numba adds a
negative-index check that stops LLVM from vectorizing the loop.
"""

from __future__ import annotations

import os

import numpy as np

try:  # optional dependency
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None


def enabled() -> bool:
    """Whether the compiled kernels are used (numba importable and not switched off)."""
    return numba is not None and os.environ.get("K210TOOL_INTERP_JIT", "1") != "0"


def _njit(fn=None, **options):  # noqa: ANN001, ANN003, ANN202 - decorator
    if fn is None:
        return lambda f: _njit(f, **options)
    if numba is None:
        return fn
    return numba.njit(nogil=True, cache=True, fastmath=False, boundscheck=False, **options)(fn)


@_njit(inline="always")  # a call per element would cost more than the lookup
def _level(a, c, thresholds, lo, scale, start):  # noqa: ANN001, ANN202
    """Count of thresholds[c] <= a: a bucket's lower bound, then forward steps (the last column is a sentinel).

    Branch-free for the usual case (at most two steps): a plain loop's branches are mispredicted often
    enough to cost more than everything else.
    """
    f = min(max((a - lo[c]) * scale[c], 0.0), start.shape[1] - 1.0)
    g = start[c, int(f)]
    g += thresholds[c, g] <= a
    g += thresholds[c, g] <= a
    while thresholds[c, g] <= a:  # rare: thresholds closer than a bucket (e.g. nncase's extra segments)
        g += 1
    return g


@_njit(inline="always")
def _line(a, c, line, out, flags):  # noqa: ANN001, ANN202
    """``out = clip(rint(a*r - q))`` over a row of float ``a``, ``flags`` where that is not certified."""
    r, q, half_band, top, lo_v, hi_v = line
    rc, qc, hb, tc = r[c], q[c], half_band[c], top[c]
    for j in range(a.shape[0]):
        w = a[j] * rc - qc
        rr = np.rint(w)
        flags[j] = (np.abs(w - rr) > hb) | (rr >= tc)
        out[j] = np.int32(min(max(rr, lo_v), hi_v))


@_njit
def dense_levels(d, rows, p0, p1, sum_offset, arg_x, shr_x, line, levels, base, out, o0):  # noqa: ANN001, ANN201
    """Output levels of a matrix-product layer for columns p0..p1 of ``d`` into ``out[:, o0+p0 : o0+p1]``.

    ``d`` (rows + 1, P) holds exact integers: rows ``0..rows`` the product sums ``D``, the last row the
    column sums of ``x`` (less ``sum_offset``); ``alu - offset = D + 128*sum_x + (arg_x*sum_x >> shr_x)``.
    """
    n = p1 - p0
    px = np.empty(n, np.int64)
    pxf = np.empty(n, np.float32)
    sums = d[rows, p0:p1]
    for j in range(n):
        sx = np.int64(sums[j]) + sum_offset
        px[j] = 128 * sx + ((arg_x * sx) >> shr_x)
        pxf[j] = np.float32(px[j])
    a = np.empty(n, d.dtype)
    flags = np.empty(n, np.bool_)
    sign, thresholds, lo, scale, start = levels
    for c in range(rows):
        row = d[c, p0:p1]
        o = out[c, o0 + p0 : o0 + p1]
        for j in range(n):
            a[j] = row[j] + pxf[j]
        _line(a, c, line, o, flags)
        for j in range(n):
            if flags[j]:
                exact = sign[c] * (np.int64(row[j]) + px[j])
                o[j] = base + _level(exact, c, thresholds, lo, scale, start)


@_njit
def depthwise3_levels(xp, w, arg_x, shr_x, c0, c1, line, levels, base, out):  # noqa: ANN001, ANN201
    """A 3x3 stride-1 depthwise layer for channels c0..c1 of the padded map ``xp`` (C, M, H+2, W+2) uint8.

    ``w`` (C, 9) float32; ``out`` (C, M, H, W) uint8. A channel's M padded planes are one flat array: the
    output at flat position ``i`` reads ``i + {0, 1, 2, P, P+1, P+2, 2P, ...}`` (P the padded width), so
    one long loop covers every image, small maps included; the positions that fall on padding columns
    or rows are computed and dropped. The nine products and the box sum are exact in float32 (integers
    below 9 * 255 * 255), the ``arg_x`` term exact in float64.
    """
    m_count, hp, wp = xp.shape[1], xp.shape[2], xp.shape[3]
    oh, ow = hp - 2, wp - 2
    size = m_count * hp * wp
    n = size - 2 * wp - 2  # the last output's flat position + 1
    xf = np.empty(size, np.float32)
    a = np.empty(n, np.float32)
    levels_flat = np.empty(n, np.uint8)
    flags = np.empty(n, np.bool_)
    ax = np.float64(arg_x) * 2.0 ** -shr_x  # exact: arg_x is 24 bits
    sign, thresholds, lo, scale, start = levels
    for c in range(c0, c1):
        src = xp[c].ravel()
        for i in range(size):
            xf[i] = src[i]
        t0, t1, t2 = xf[0:], xf[1:], xf[2:]
        t3, t4, t5 = xf[wp:], xf[wp + 1 :], xf[wp + 2 :]
        t6, t7, t8 = xf[2 * wp :], xf[2 * wp + 1 :], xf[2 * wp + 2 :]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w[c, 0], w[c, 1], w[c, 2], w[c, 3], w[c, 4], w[c, 5], w[c, 6], \
            w[c, 7], w[c, 8]
        for i in range(n):
            x0, x1, x2, x3, x4, x5, x6, x7, x8 = t0[i], t1[i], t2[i], t3[i], t4[i], t5[i], t6[i], t7[i], t8[i]
            dot = x0 * w0 + x1 * w1 + x2 * w2 + x3 * w3 + x4 * w4 + x5 * w5 + x6 * w6 + x7 * w7 + x8 * w8
            box = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8
            a[i] = np.float32(np.float64(dot) + np.floor(np.float64(box) * ax))
        _line(a, c, line, levels_flat, flags)
        for i in range(n):
            if flags[i]:
                dot_i = np.int64(0)
                box_i = np.int64(0)
                for k in range(9):
                    v = np.int64(src[i + (k // 3) * wp + k % 3])
                    dot_i += v * np.int64(w[c, k])
                    box_i += v
                exact = sign[c] * (dot_i + ((arg_x * box_i) >> shr_x))
                levels_flat[i] = base + _level(exact, c, thresholds, lo, scale, start)
        for m in range(m_count):
            for oy in range(oh):
                row = levels_flat[(m * hp + oy) * wp :]
                o = out[c, m, oy]
                for ox in range(ow):
                    o[ox] = row[ox]


@_njit
def depthwise_levels(xp, w, f, stride, dy, dx, oh, ow, c0, c1, arg_x, shr_x, line, levels, base, out):  # noqa: ANN001, ANN201
    """Any depthwise layer (1x1 or 3x3, every pixel or only those a select-pool keeps), channels c0..c1.

    Output pixel (oy, ox) is the stride-1 convolution at (dy + oy*stride, dx + ox*stride) of the padded
    map ``xp`` (C, M, H+2, W+2). ``w`` (C, f*f) float32; ``out`` (C, M, oh, ow) uint8. Slower than
    :func:`depthwise3_levels`, which takes the usual case.
    """
    m_count = xp.shape[1]
    dot = np.empty(ow, np.int64)
    box = np.empty(ow, np.int64)
    a = np.empty(ow, np.float32)
    flags = np.empty(ow, np.bool_)
    sign, thresholds, lo, scale, start = levels
    for c in range(c0, c1):
        for m in range(m_count):
            for oy in range(oh):
                dot[:] = 0
                box[:] = 0
                for ky in range(f):
                    row = xp[c, m, dy + oy * stride + ky]
                    for kx in range(f):
                        taps = row[dx + kx :: stride]
                        wt = np.int64(w[c, ky * f + kx])
                        for ox in range(ow):
                            v = np.int64(taps[ox])
                            dot[ox] += wt * v
                            box[ox] += v
                for ox in range(ow):
                    a[ox] = np.float32(dot[ox] + ((arg_x * box[ox]) >> shr_x))
                o = out[c, m, oy]
                _line(a, c, line, o, flags)
                for ox in range(ow):
                    if flags[ox]:
                        exact = sign[c] * (dot[ox] + ((arg_x * box[ox]) >> shr_x))
                        o[ox] = base + _level(exact, c, thresholds, lo, scale, start)
