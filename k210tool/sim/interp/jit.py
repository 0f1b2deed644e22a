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


@_njit(inline="always")
def _flagged(flags, words):  # noqa: ANN001, ANN202
    """Positions of the set bytes of ``flags`` (length a multiple of 8), skipping eight clear ones at a time."""
    found = []
    for k in range(words.shape[0]):
        if words[k]:
            for j in range(8 * k, 8 * k + 8):
                if flags[j]:
                    found.append(j)
    return found


@_njit
def dense_levels(d, rows, p0, p1, sum_offset, arg_x, shr_x, line, levels, base, out, o0):  # noqa: ANN001, ANN201
    """Output levels of a matrix-product layer for columns p0..p1 of ``d`` into ``out[:, o0+p0 : o0+p1]``.

    ``d`` (rows + 1, P) holds exact integers: rows ``0..rows`` the product sums ``D``, the last row the
    column sums of ``x`` (less ``sum_offset``); ``alu - offset = D + 128*sum_x + (arg_x*sum_x >> shr_x)``.
    One vectorized pass per row computes the line, the level and a flag byte; the flagged items (about
    one in a hundred) are then found eight bytes at a time and looked up exactly.
    """
    n = p1 - p0
    px = np.empty(n, np.int64)
    pxf = np.empty(n, np.float32)
    sums = d[rows, p0:p1]
    for j in range(n):
        sx = np.int64(sums[j]) + sum_offset
        px[j] = 128 * sx + ((arg_x * sx) >> shr_x)
        pxf[j] = np.float32(px[j])
    flags = np.zeros(-(-n // 8) * 8, np.uint8)
    words = flags.view(np.uint64)
    r, q, half_band, top, lo_v, hi_v = line
    sign, thresholds, lo, scale, start = levels
    for c in range(rows):
        row = d[c, p0:p1]
        o = out[c, o0 + p0 : o0 + p1]
        rc, qc, hb, tc = r[c], q[c], half_band[c], top[c]
        for j in range(n):
            w = (row[j] + pxf[j]) * rc - qc
            rr = np.rint(w)
            flags[j] = (np.abs(w - rr) > hb) | (rr >= tc)
            o[j] = np.int32(min(max(rr, lo_v), hi_v))
        for j in _flagged(flags, words):
            exact = sign[c] * (np.int64(row[j]) + px[j])
            o[j] = base + _level(exact, c, thresholds, lo, scale, start)


@_njit
def depthwise3_levels(x, pad_value, wf, w_int, arg_x, shr_x, c0, c1, line, levels, base, out):  # noqa: ANN001, ANN201
    """A 3x3 stride-1 depthwise layer for channels c0..c1 of the map ``x`` (C, M, H, W) uint8.

    ``out`` (C, M, H, W) uint8. A channel's M planes, padded with ``pad_value``, are one flat float32
    array of (H+2)*(W+2) per plane: the output at flat position
    ``i`` reads ``i + {0, 1, 2, P, P+1, P+2, 2P, ...}`` (P the padded width), so one long loop covers every
    image, small maps included; the positions that fall on padding columns or rows are computed and
    dropped. The loop is float32 throughout, so it vectorizes: ``wf`` (C, 9) holds ``w + arg_x/2^shr_x``
    rounded to float32, and ``sum(x * wf)`` approximates ``alu - const + 0.5`` (the floor of the ``arg_x``
    term is half a unit off on average) within the error the line was certified for. The flagged items
    are recomputed from ``w_int`` (C, 9) int64 in exact integers.
    """
    m_count, oh, ow = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = oh + 2, ow + 2
    size = m_count * hp * wp
    n = size - 2 * wp - 2  # the last output's flat position + 1
    xf = np.empty(size, np.float32)
    levels_flat = np.empty(n, np.uint8)
    flags = np.zeros(-(-n // 8) * 8, np.uint8)
    words = flags.view(np.uint64)
    r, q, half_band, top, lo_v, hi_v = line
    sign, thresholds, lo, scale, start = levels
    pad = np.float32(pad_value)
    for i in range(size):
        xf[i] = pad
    for c in range(c0, c1):
        for m in range(m_count):  # the interior; the border keeps the pad value
            for y in range(oh):
                src_row = x[c, m, y]
                dst_row = xf[(m * hp + y + 1) * wp + 1 :]
                for j in range(ow):
                    dst_row[j] = src_row[j]
        t0, t1, t2 = xf[0:], xf[1:], xf[2:]
        t3, t4, t5 = xf[wp:], xf[wp + 1 :], xf[wp + 2 :]
        t6, t7, t8 = xf[2 * wp :], xf[2 * wp + 1 :], xf[2 * wp + 2 :]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = wf[c, 0], wf[c, 1], wf[c, 2], wf[c, 3], wf[c, 4], wf[c, 5], \
            wf[c, 6], wf[c, 7], wf[c, 8]
        rc, qc, hb, tc = r[c], q[c], half_band[c], top[c]
        for i in range(n):
            v = t0[i] * w0 + t1[i] * w1 + t2[i] * w2 + t3[i] * w3 + t4[i] * w4 + t5[i] * w5 + t6[i] * w6 \
                + t7[i] * w7 + t8[i] * w8
            w = v * rc - qc
            rr = np.rint(w)
            flags[i] = (np.abs(w - rr) > hb) | (rr >= tc)
            levels_flat[i] = np.int32(min(max(rr, lo_v), hi_v))
        for i in _flagged(flags, words):
            dot_i = np.int64(0)
            box_i = np.int64(0)
            for k in range(9):
                v8 = np.int64(xf[i + (k // 3) * wp + k % 3])
                dot_i += v8 * w_int[c, k]
                box_i += v8
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


# ------------------------------------------------------------------------------------- CPU ops
@_njit
def quantize(src, scale, bias, lo, hi, dst):  # noqa: ANN001, ANN201
    """nncase's quantize of one image's dense tensor: ``clamp(nearbyint(x*scale + bias))``, one float32
    rounding per operation (no fused multiply-add: numba keeps IEEE semantics unless told otherwise)."""
    for j in range(src.shape[0]):
        dst[j] = min(max(np.rint(src[j] * scale + bias), lo), hi)


@_njit
def dequantize(src, scale, bias, dst):  # noqa: ANN001, ANN201
    """nncase's dequantize of one image's dense tensor: ``float(x)*scale + bias`` in float32."""
    for j in range(src.shape[0]):
        dst[j] = np.float32(src[j]) * scale + bias


@_njit(inline="always")
def _act_one(y, c, xs, ym, ysh, bias, lo_idx, hi_idx):  # noqa: ANN001, ANN202
    """The runtime's activation of one ``y`` for output row ``c`` (its table is row ``c`` of the 2-D tables):
    the last segment with ``y > x_start``, its carry_shift rounding; only the segments the row can reach are
    searched."""
    k = lo_idx[c]
    for i in range(lo_idx[c] + 1, hi_idx[c] + 1):
        if y > xs[c, i]:
            k = i
    t = (y - xs[c, k]) * ym[c, k]
    sh = ysh[c, k]
    v = t
    if sh > 0:
        integral = t >> sh
        frac = t & ((np.int64(1) << sh) - 1)
        half = np.int64(1) << (sh - 1)
        if frac > half or (frac == half and (integral & 1) == 1):
            integral += -1 if t < 0 else 1
        v = integral
    v += bias[c, k]
    return min(max(v, 0), 255)


@_njit
def dense_exact(d, p, h, mul, shift, add, xs, ym, ysh, bias, lo_idx, hi_idx, out):  # noqa: ANN001, ANN201
    """Exact batch norm + any activation table: ``alu = d + p[col] + h[row]`` (d float32 holding integers)."""
    for c in range(d.shape[0]):
        m, s, a = mul[c], shift[c], add[c]
        for j in range(d.shape[1]):
            alu = np.int64(d[c, j]) + p[j] + h[c]
            out[c, j] = _act_one(((alu * m) >> s) + a, c, xs, ym, ysh, bias, lo_idx, hi_idx)


@_njit
def rows_exact(alu, mul, shift, add, xs, ym, ysh, bias, lo_idx, hi_idx, out):  # noqa: ANN001, ANN201
    """Exact batch norm + activation of int64 ``alu`` rows (one row per channel)."""
    for c in range(alu.shape[0]):
        m, s, a = mul[c], shift[c], add[c]
        for j in range(alu.shape[1]):
            out[c, j] = _act_one(((alu[c, j] * m) >> s) + a, c, xs, ym, ysh, bias, lo_idx, hi_idx)
