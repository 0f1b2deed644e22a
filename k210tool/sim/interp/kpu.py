"""One KPU layer's functional model in NumPy, batched over N images.

What one KPU layer computes (nncase v1.9.0 ``modules/k210/include/nncase/kernels/k210/k210_kernels.h``,
the same formulas as the SDK's v0 simulator kernels):

1. convolution at stride 1 over the ``pad_value``-padded input, per output pixel::

       alu = sum(x*w) + (arg_x * sum(x) >> shr_x) + (arg_w * sum(w) >> shr_w) + arg_add * ic_per_group

2. batch norm per output channel ``y = (alu * mul >> shift) + add`` and the 16-segment activation table
   (see :mod:`~k210tool.sim.interp.actfast`), clamped to 0..255;
3. 2x2/4x4 pooling: max, mean, or selecting one pixel of each window (how nncase does stride 2).

Feature maps are kept channel-major, ``(C, M, H, W)`` with ``M`` = images x model batches, so a 1x1
convolution is one matrix product. Sums of products of uint8 are exact: the matrix product runs on values
centred on 128 in float32, exact while ``K * 128**2 <= 2**24``, in float64 chunks beyond. For select-pools
only the selected pixels are computed.
"""

from __future__ import annotations

import numpy as np

from k210tool.compile.kmodel.kpu import POOL_GEOMETRY, signed
from k210tool.compile.kmodel.model import KpuConv
from k210tool.sim.interp import jit
from k210tool.sim.interp.actfast import ActTable, FastAct, bn_act_exact, build_fast
from k210tool.sim.interp.kpuram import KpuModelError
from k210tool.sim.interp.levels import LevelTable, build_levels
from k210tool.sim.interp.workers import parallel, threads

_F32_K = 1024  # K * 128*128 <= 2**24: a centred float32 product sum is exact
_RAW_K = 514  # K * 255*128 <= 2**24: with raw inputs and centred weights it is exact too
_CHUNK = 1 << 18  # elements per chunk of the post-processing (stays in cache)
_GEMM_COLS = 32768  # columns per matrix product
_DW_CHUNK = 1 << 16  # elements per depthwise chunk
_BLOCK_COLS = (512, 2048)  # columns per fused product + levels task: fits L2, enough tasks for every thread
_SELECT = {5: (0, 0), 6: (0, 1), 7: (0, 0)}  # pool type -> (dy, dx) of the selected pixel

__all__ = ["KpuLayerRunner", "pool"]


class KpuLayerRunner:
    """A KPU convolution prepared once (weights, constant terms, tables), run on any batch."""

    def __init__(self, conv: KpuConv, fast: bool = True, row_tables: list[ActTable] | None = None) -> None:
        """``row_tables``: one activation table per output channel (layers fused by :mod:`.fuse`), which the
        exact compiled kernels apply; by default every channel uses ``conv``'s table."""
        layer = conv.layer
        self.use_fast = fast
        self.conv = conv
        self.in_shape, self.out_shape = layer.in_shape, layer.out_shape
        self.depthwise, self.filter, self.pool_type = layer.depthwise, layer.filter_size, layer.pool_type
        if self.filter not in (1, 3):
            raise KpuModelError(f"KPU kernel type {layer.get('kernel_type')} is not 1x1 or 3x3")
        if self.pool_type not in POOL_GEOMETRY:
            raise KpuModelError(f"KPU pool type {self.pool_type} is unknown")
        ic, oc, f = layer.in_channels, layer.out_channels, self.filter
        if self.depthwise and ic != oc:
            raise KpuModelError(f"depthwise KPU layer with {ic} input and {oc} output channels")
        _, stride = POOL_GEOMETRY[self.pool_type]
        _c, h, w = self.in_shape
        if (oc, h // stride, w // stride) != self.out_shape:
            raise KpuModelError(f"pooling {h}x{w} with type {self.pool_type} does not give {self.out_shape}")
        self.select = (stride, *_SELECT[self.pool_type]) if self.pool_type in _SELECT else None
        self.pad_value = layer.get("pad_value")
        w_int = np.asarray(conv.weights, np.int64).reshape(oc, 1 if self.depthwise else ic, f, f)
        self.w_int = w_int
        self.k = w_int[0].size
        self.g_ic = 1 if self.depthwise else ic
        self.arg_x, self.shr_x = signed(layer.get("arg_x"), 24), layer.get("shr_x")
        arg_w = signed(layer.get("arg_w"), 24)
        sum_w = w_int.reshape(oc, -1).sum(axis=1)
        # per output channel: (arg_w * sum_w >> shr_w) + arg_add * ic_per_group
        self.const = ((arg_w * sum_w) >> layer.get("shr_w")) + signed(layer.get("arg_add"), 40) * self.g_ic
        bn = conv.batch_norm
        self.bn = (bn.mul, bn.shift, bn.add)
        segs = conv.activation.segments()
        self.act = ActTable(*(np.array([s[k] for s in segs], np.int64) for k in ("x_start", "y_mul", "shift", "bias")))
        self.levels: LevelTable | None = None  # set when the compiled kernels run this layer
        self.fast: FastAct | None = None  # set when NumPy's certified float path runs it
        self.row_tables = row_tables
        if row_tables is not None and not jit.enabled():
            raise KpuModelError("fused layers need the compiled kernels (numba)")
        if self.depthwise:
            self._prepare_depthwise()
        else:
            self._prepare_dense(sum_w)
        if row_tables is not None:
            self.levels = self.fast = None
            self.raw_x = self.k <= _RAW_K
            self.h = self.const if self.raw_x else 128 * sum_w - 16384 * self.k + self.const
            self.w_centered = (self.w_int.reshape(oc, self.k) - 128).astype(np.float32 if self.k <= _F32_K
                                                                             else np.float64)
        # tables the fast paths cannot take (several activation zones): the exact formula, compiled
        self.exact_args = self._exact_args() if self.use_fast and jit.enabled() and self.levels is None \
            and self.fast is None else None

    def _exact_args(self) -> tuple:
        """Per-row tables and segment windows (the segments each row's batch-norm output can reach)."""
        mul, shift, add = self.bn
        tables = self.row_tables or [self.act] * len(mul)
        bound = self._sum_bound() + np.abs(self.const)
        y_a = ((-bound * mul) >> shift) + add
        y_b = ((bound * mul) >> shift) + add
        y_lo, y_hi = np.minimum(y_a, y_b), np.maximum(y_a, y_b)
        xs, ym, ysh, bias = (np.ascontiguousarray([getattr(t, k) for t in tables], np.int64)
                             for k in ("x", "mul", "shift", "bias"))
        lo_idx = np.zeros(len(tables), np.int64)
        hi_idx = np.full(len(tables), xs.shape[1] - 1, np.int64)
        for c, t in enumerate(tables):
            if t.sorted:  # the runtime scans from the last segment: an unsorted table keeps every one in view
                lo_idx[c] = max(int(np.searchsorted(t.x, y_lo[c], side="left")) - 1, 0)
                hi_idx[c] = max(int(np.searchsorted(t.x, y_hi[c], side="left")) - 1, lo_idx[c])
        return tuple(np.ascontiguousarray(v, np.int64) for v in (mul, shift, add)) + (xs, ym, ysh, bias, lo_idx,
                                                                                      hi_idx)

    # ---------------------------------------------------------------------------- preparation
    def _prepare_dense(self, sum_w: np.ndarray) -> None:
        k = self.k
        self.w_centered = (self.w_int.reshape(len(sum_w), k) - 128).astype(np.float32 if k <= _F32_K else np.float64)
        # alu = D + P(pixel) + H(channel), P = 128*sum_x + (arg_x*sum_x >> shr_x). Up to K = 514 the product
        # sum D = sum x*(w-128) is exact in float32 with raw x (|x*(w-128)| <= 32640); beyond, x is centred
        # too (|(x-128)*(w-128)| <= 16384) and D = sum (x-128)*(w-128), which moves 128*sum(w)-16384*K into H.
        self.raw_x = k <= _RAW_K
        self.h = self.const if self.raw_x else 128 * sum_w - 16384 * k + self.const
        if self.use_fast and jit.enabled():
            # the kernel's a = D + P = alu - h, computed in float32 as D + fl32(P)
            p_bound = (128 + abs(self.arg_x) / 2.0 ** self.shr_x) * 255 * k + 1
            a_bound = self._sum_bound() + np.abs(self.const - self.h)
            self._prepare_jit(self.h, a_bound, _f32_error(p_bound) + _f32_error(a_bound))
        if self.levels is not None:
            # one more row of ones: the product also yields each column's sum of x (exact, < 2**24)
            ones = np.ones((1, k), self.w_centered.dtype)
            self.w_gemm = np.ascontiguousarray(np.concatenate([self.w_centered, ones]))
            return
        # P is added in float32: exact below 2**24, else rounded by at most 2**-24 of its size.
        p_bound = (128 + abs(self.arg_x) / 2.0 ** self.shr_x) * 255 * k + 1
        self.fast = build_fast(self.bn, self.act, self.h, 0.0, p_bound * 2.0 ** -24 if p_bound >= 2**24 else 0.0) \
            if self.use_fast else None

    def _prepare_depthwise(self) -> None:
        # u = sum over taps of x * (w + arg_x / 2^shr_x) * r - q approximates the level; the floor in
        # (arg_x*sum_x >> shr_x) makes it at most 1 alu unit off, inside the certified band.
        c, f = self.w_int.shape[0], self.filter
        if self.use_fast and jit.enabled():
            a_bound = self._sum_bound()
            w_taps = self.w_int.reshape(c, f * f)
            if f == 3 and self.select is None:
                # depthwise3_levels: v = sum(x * fl32(w + arg_x/2^shr_x)) in float32 for a = alu - const + 0.5
                w_eff = w_taps + self.arg_x / 2.0**self.shr_x  # exact in float64
                self.w_f32 = np.ascontiguousarray(w_eff, np.float32)
                weight_error = 255.0 * np.abs(self.w_f32 - w_eff).sum(axis=1)
                rounding = 16 * 2.0**-24 * 255.0 * np.abs(self.w_f32.astype(np.float64)).sum(axis=1)
                self._prepare_jit(self.const, a_bound, 0.5 + weight_error + rounding, line_offset=self.const - 0.5)
            else:  # depthwise_levels: a = alu - const, exact, then rounded to float32
                self._prepare_jit(self.const, a_bound, _f32_error(a_bound))
        if self.levels is not None:
            self.w_taps = np.ascontiguousarray(self.w_int.reshape(c, f * f), np.float32)
            self.w_taps_int = np.ascontiguousarray(self.w_int.reshape(c, f * f))
            return
        w_eff = self.w_int.reshape(c, f * f) + self.arg_x / 2.0 ** self.shr_x
        partial = 255.0 * np.abs(w_eff).sum(axis=1)  # bound on the running tap sums
        # the floor error is in [0, 1): centring it (half an alu unit, q_dw) leaves +-0.5 to certify
        self.fast = build_fast(self.bn, self.act, self.const, partial, 0.5) if self.use_fast else None
        if self.fast is not None:
            self.w_fast = (w_eff * self.fast.r.astype(np.float64)).astype(np.float32)
            self.q_dw = (self.fast.q.astype(np.float64) + 0.5 * self.fast.r).astype(np.float32)

    def _sum_bound(self) -> int:
        """A bound on |alu - const| = |sum(x*w) + (arg_x*sum(x) >> shr_x)| for uint8 x and w."""
        box = 255 * self.k
        return box * 255 + ((abs(self.arg_x) * box) >> self.shr_x) + 1

    def _prepare_jit(self, offset: np.ndarray, a_bound: np.ndarray | int, a_error: np.ndarray | float,
                     line_offset: np.ndarray | None = None) -> None:
        """Thresholds and line for the compiled kernels, which look flagged items up exactly with
        ``a = alu - offset`` (``|a| <= a_bound``) and run the line on a float32 value within ``a_error`` of
        ``alu - line_offset`` (default ``offset``)."""
        bound = np.broadcast_to(np.asarray(a_bound, np.int64), offset.shape)
        self.levels = build_levels(self.bn, self.act, offset, bound)
        if self.levels is not None:
            line = build_fast(self.bn, self.act, offset if line_offset is None else line_offset, 0.0, a_error)
            self.jit_args = _jit_args(line, self.levels)

    # --------------------------------------------------------------------------------- running
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(IC, M, H, W) uint8 -> (OC, M, OH, OW) uint8."""
        if tuple(x.shape[i] for i in (0, 2, 3)) != self.in_shape:
            raise KpuModelError(f"KPU layer expects {self.in_shape}, got {x.shape}")
        rows, cols = self._positions(x.shape[2], x.shape[3])
        if self.levels is not None and self.depthwise and self.filter == 3 and self.select is None:
            y = self._depthwise3_jit(x)
            return y if self.pool_type == 0 else pool(y, self.pool_type, self.out_shape)
        xp = x if self.filter == 1 else np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=self.pad_value)
        if self.levels is not None:
            y = self._depthwise_jit(xp, rows, cols) if self.depthwise else self._dense_jit(xp, rows, cols)
        else:
            y = self._depthwise(xp, rows, cols) if self.depthwise else self._dense(xp, rows, cols)
        return y if self.select is not None else pool(y, self.pool_type, self.out_shape)

    def _positions(self, h: int, w: int) -> tuple[slice, slice]:
        """Which output pixels of the stride-1 convolution are computed (all, or the selected ones)."""
        if self.select is None:
            return slice(0, h), slice(0, w)
        s, dy, dx = self.select
        return slice(dy, dy + (h // s) * s, s), slice(dx, dx + (w // s) * s, s)

    def _columns(self, xp: np.ndarray, rows: slice, cols: slice) -> tuple[np.ndarray, int, int]:
        """im2col: (IC*f*f, M*OH*OW) uint8 of the computed output pixels, and (OH, OW)."""
        ic, m = xp.shape[:2]
        f = self.filter
        taps = [xp[:, :, _shift(rows, ky), _shift(cols, kx)] for ky in range(f) for kx in range(f)]
        oh, ow = taps[0].shape[2:]
        col = np.stack(taps, axis=1).reshape(ic * f * f, m * oh * ow) if f > 1 else taps[0].reshape(ic, -1)
        return col, oh, ow

    def _dense_jit(self, xp: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        col, oh, ow = self._columns(xp, rows, cols)
        oc, m, lv = self.w_centered.shape[0], xp.shape[1], self.levels
        out = np.empty((oc, col.shape[1]), np.uint8)
        sum_offset = 0 if self.raw_x else 128 * self.k
        block = _gemm_block(col.shape[1])

        def task(g: int) -> None:  # one block of columns: its product, then its levels while still in cache
            d = _centred_matmul(self.w_gemm, col[:, g : g + block], self.raw_x)
            jit.dense_levels(d, oc, 0, d.shape[1], sum_offset, self.arg_x, self.shr_x, *self.jit_args, lv.base, out, g)
        parallel(task, range(0, col.shape[1], block))
        return out.reshape(oc, m, oh, ow)

    def _depthwise_jit(self, xp: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        c, m = xp.shape[:2]
        stride = rows.step or 1
        oh = len(range(rows.start, rows.stop, stride))
        ow = len(range(cols.start, cols.stop, stride))
        out = np.empty((c, m, oh, ow), np.uint8)
        lv = self.levels
        step = max(1, c // 8)

        def finish(s: int) -> None:
            jit.depthwise_levels(xp, self.w_taps, self.filter, stride, rows.start, cols.start, oh, ow,
                                 s, min(c, s + step), self.arg_x, self.shr_x, *self.jit_args, lv.base, out)
        parallel(finish, range(0, c, step))
        return out

    def _depthwise3_jit(self, x: np.ndarray) -> np.ndarray:
        """The usual depthwise layer (3x3, every pixel): padding, taps and levels in one compiled pass."""
        c = x.shape[0]
        out = np.empty(x.shape, np.uint8)
        step = max(1, c // 8)

        def finish(s: int) -> None:
            jit.depthwise3_levels(x, self.pad_value, self.w_f32, self.w_taps_int, self.arg_x, self.shr_x, s,
                                  min(c, s + step), *self.jit_args, self.levels.base, out)
        parallel(finish, range(0, c, step))
        return out

    def _dense(self, xp: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        ic, m = xp.shape[:2]
        col, oh, ow = self._columns(xp, rows, cols)
        sum_x = col.sum(axis=0, dtype=np.int64)
        p = 128 * sum_x + ((self.arg_x * sum_x) >> self.shr_x)
        oc = self.w_centered.shape[0]
        out = np.empty((oc, col.shape[1]), np.uint8)
        step = max(256, _CHUNK // max(oc, 1))
        for g in range(0, col.shape[1], _GEMM_COLS):  # big products (BLAS is slow on thin ones) ...
            d_all = _centred_matmul(self.w_centered, col[:, g : g + _GEMM_COLS], self.raw_x)

            def finish(s: int, d_all: np.ndarray = d_all, g: int = g) -> None:  # ... then cache-sized pieces
                e = min(s + step, d_all.shape[1])
                out[:, g + s : g + e] = self._finish_dense(d_all[:, s:e], p[g + s : g + e])
            parallel(finish, range(0, d_all.shape[1], step))
        return out.reshape(oc, m, oh, ow)

    def _finish_dense(self, d: np.ndarray, p: np.ndarray) -> np.ndarray:
        fa = self.fast
        if self.exact_args is not None and d.dtype == np.float32:
            out = np.empty(d.shape, np.uint8)
            jit.dense_exact(d, np.ascontiguousarray(p, np.int64), np.ascontiguousarray(self.h, np.int64),
                            *self.exact_args, out)
            return out
        if fa is None or d.dtype != np.float32:
            alu = d.astype(np.int64) + p[None, :] + self.h[:, None]
            return bn_act_exact(alu, None, self.bn, self.act)
        u = np.add(d, p.astype(np.float32)[None, :])
        u *= fa.r
        u -= fa.q
        out, flagged = _floor_certified(u, fa)
        if flagged is not None:
            ci, pi = flagged
            alu = d[ci, pi].astype(np.int64) + p[pi] + self.h[ci]
            out[ci, pi] = bn_act_exact(alu, ci, self.bn, self.act)
        return out

    def _depthwise(self, xp: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        c, m = xp.shape[:2]
        oh = len(range(rows.start, rows.stop, rows.step or 1))
        ow = len(range(cols.start, cols.stop, cols.step or 1))
        out = np.empty((c, m, oh, ow), np.uint8)
        step = max(1, _DW_CHUNK // max(1, m * oh * ow))  # one channel at a time for big maps: stays in cache

        def finish(s: int) -> None:
            e = min(c, s + step)
            out[s:e] = self._finish_depthwise(_dw_taps(xp[s:e], self.filter, rows, cols, oh, ow), s, e)
        parallel(finish, range(0, c, step))
        return out

    def _finish_depthwise(self, taps: list[np.ndarray], s: int, e: int) -> np.ndarray:
        fa = self.fast
        if fa is None and self.exact_args is not None:
            alu = self._depthwise_alu(taps, s, e)
            flat = np.ascontiguousarray(alu.reshape(e - s, -1))
            out = np.empty(flat.shape, np.uint8)
            args = tuple(v[s:e] for v in self.exact_args)
            jit.rows_exact(flat, *args, out)
            return out.reshape(alu.shape)
        if fa is None:
            return bn_act_exact(self._depthwise_alu(taps, s, e), None, _bn_slice(self.bn, s, e), self.act)
        wf = self.w_fast[s:e].reshape(e - s, -1, 1, 1, 1)
        u = np.multiply(taps[0], wf[:, 0])
        tmp = np.empty_like(u)
        for t in range(1, len(taps)):
            np.multiply(taps[t], wf[:, t], out=tmp)
            u += tmp
        u -= self.q_dw[s:e].reshape(-1, 1, 1, 1)
        sub = FastAct(*(np.asarray(v)[s:e].reshape(-1, 1, 1, 1) if np.ndim(v) else v
                        for v in (fa.r, fa.q, fa.band, fa.lo, fa.hi, fa.top)), check_top=fa.check_top)
        out, flagged = _floor_certified(u, sub)
        if flagged is not None:
            alu = self._depthwise_alu([t[flagged] for t in taps], s, e, flagged[0])
            out[flagged] = bn_act_exact(alu, flagged[0] + s, self.bn, self.act)
        return out

    def _depthwise_alu(self, taps: list[np.ndarray], s: int, e: int, channel: np.ndarray | None = None) -> np.ndarray:
        """Exact alu from the (float32, integer-valued) taps of channels s..e (or of flagged items)."""
        w = self.w_int.reshape(self.w_int.shape[0], -1)[s:e].astype(np.float32)
        if channel is None:
            w = w.reshape(e - s, -1, 1, 1, 1)
            dot = sum(taps[t] * w[:, t] for t in range(len(taps)))
            box = sum(taps)
            const = self.const[s:e].reshape(-1, 1, 1, 1)
        else:
            dot = sum(taps[t] * w[channel, t] for t in range(len(taps)))
            box = sum(taps)
            const = self.const[s:e][channel]
        term_x = (self.arg_x * box.astype(np.int64)) >> self.shr_x
        return dot.astype(np.int64) + term_x + const



def _gemm_block(cols: int) -> int:
    """Columns per task of a dense layer: a multiple of 64 in ``_BLOCK_COLS``, two tasks per thread or more."""
    lo, hi = _BLOCK_COLS
    return int(min(hi, max(lo, -(-cols // (2 * threads()) // 64) * 64)))


def _dw_taps(xp: np.ndarray, f: int, rows: slice, cols: slice, oh: int, ow: int) -> list[np.ndarray]:
    """The f*f shifted windows (float32, unit stride) a depthwise layer multiplies, at the computed pixels.

    At stride 2 (select pooling) the padded input is split into its four polyphase components first, so
    every window is a contiguous slice instead of a stride-2 view.
    """
    step = rows.step or 1
    if step == 1:
        xs = xp.astype(np.float32)
        return [xs[:, :, rows.start + ky : rows.start + ky + oh, cols.start + kx : cols.start + kx + ow]
                for ky in range(f) for kx in range(f)]
    phases = {(py, px): xp[:, :, py::step, px::step].astype(np.float32) for py in range(step) for px in range(step)}
    taps = []
    for ky in range(f):
        for kx in range(f):
            ry, rx = rows.start + ky, cols.start + kx
            ph = phases[(ry % step, rx % step)]
            taps.append(ph[:, :, ry // step : ry // step + oh, rx // step : rx // step + ow])
    return taps


def _f32_error(bound: np.ndarray | float) -> np.ndarray | float:
    """How far float32 may round an integer of magnitude up to ``bound`` (exact below 2**24)."""
    b = np.asarray(bound, np.float64)
    return np.where(b >= 2**24, b * 2.0**-24, 0.0)


def _jit_args(fa: FastAct | None, lv: LevelTable) -> tuple[tuple, tuple]:
    """The compiled kernels' line (float32 per channel, as NumPy's certified path) and thresholds.

    Without a certified line every item goes to the thresholds (``half_band`` -1: always flagged).
    """
    c = len(lv.sign)

    def per_channel(v: np.ndarray | float) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float32).reshape(-1), (c,)))
    if fa is None:
        line = (per_channel(0.0), per_channel(0.0), per_channel(-1.0), per_channel(np.inf), np.float32(0),
                np.float32(255))
    else:
        top = fa.top if fa.check_top else np.inf
        line = (per_channel(fa.r), per_channel(fa.q), per_channel(np.float32(0.5) - fa.band), per_channel(top),
                np.float32(fa.lo), np.float32(fa.hi))
    return line, (lv.sign, lv.thresholds, lv.lo, lv.scale, lv.start)


def _shift(sl: slice, k: int) -> slice:
    return slice(sl.start + k, sl.stop + k, sl.step)


def _bn_slice(bn: tuple[np.ndarray, ...], s: int, e: int) -> tuple[np.ndarray, ...]:
    return tuple(v[s:e] for v in bn)  # type: ignore[return-value]


def _centred_matmul(w: np.ndarray, col: np.ndarray, raw_x: bool) -> np.ndarray:
    """(OC, K) centred weights @ (K, P) uint8 columns (raw, or centred on 128): an exact integer result."""
    if raw_x:
        return w @ col.astype(np.float32)
    if w.dtype == np.float32:
        return w @ (col.astype(np.float32) - np.float32(128))
    out = np.zeros((w.shape[0], col.shape[1]), np.float64)
    for k in range(0, w.shape[1], _F32_K):
        part = w[:, k : k + _F32_K].astype(np.float32) @ (col[k : k + _F32_K].astype(np.float32) - np.float32(128))
        out += part
    return out


def _floor_certified(w: np.ndarray, fa: FastAct) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """floor(w + 0.5) clamped to the output range, and the items too close to an integer (or past the line).

    ``w = u - 0.5`` (the caller folds the half into ``q``): ``rint(w)`` is ``floor(u)`` except when ``u`` is an
    integer, and ``|w - rint(w)|`` near 0.5 is exactly ``u`` near an integer, which is flagged anyway.
    """
    r = np.rint(w)
    w -= r
    np.abs(w, out=w)
    flag = w > (np.float32(0.5) - fa.band)
    if fa.check_top:
        flag |= r >= fa.top
    out = np.empty(r.shape, np.uint8)
    np.clip(r, fa.lo, fa.hi, out=out, casting="unsafe")
    if not flag.any():
        return out, None
    return out, np.unravel_index(np.flatnonzero(flag), flag.shape)



def pool(y: np.ndarray, pool_type: int, out_shape: tuple[int, int, int]) -> np.ndarray:
    """The KPU's pooling stage on (C, M, H, W) uint8 (k210_kernels.h ``kpu_pool2d``)."""
    f, s = POOL_GEOMETRY[pool_type]
    c, m, h, w = y.shape
    oh, ow = h // s, w // s
    if pool_type == 0:
        return y
    if pool_type in _SELECT:
        dy, dx = _SELECT[pool_type]
        return np.ascontiguousarray(y[:, :, dy : dy + oh * s : s, dx : dx + ow * s : s])
    if pool_type in (1, 3, 2, 4):  # windows tile the map exactly (strides equal the filter)
        win = y[:, :, : oh * s, : ow * s].reshape(c, m, oh, s, ow, s)
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
