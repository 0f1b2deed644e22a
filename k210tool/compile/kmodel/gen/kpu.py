"""KPU layers for the convolutions and adds of a :class:`~k210tool.compile.netplan.NetPlan`.

For each op: fold the input's storage into the weights (``quant.fold_input``), decide how its output is
stored (one identity zone for linear/ReLU maps; a PReLU either split into ``relu(v)`` and ``relu(-v)`` for
dense consumers, which absorb the two parts, or laid out in zones, seven channels per layer), quantize the
weights per output channel and build each layer's words, batch norm and table. Addresses are left to the
allocator: each layer records which map and channel offset it reads and writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from k210tool.compile.kmodel.gen.act import IDENTITY, LayerScale, Zone, output_stage
from k210tool.compile.kmodel.gen.layer import ConvArgs, LayerGeometry, layer_words
from k210tool.compile.kmodel.gen.pack import Group, Option, pack
from k210tool.compile.kmodel.gen.quant import (
    W_ZERO,
    Storage,
    affine,
    alu_terms,
    choose_zero,
    quantize_weights,
    scale_for,
)
from k210tool.compile.kmodel.layout import row_layout
from k210tool.compile.kmodel.model import KpuConv
from k210tool.compile.netplan import KPU_MAX_CHANNELS, Act, Add, Conv, NetPlan, PlanError

PRELU_MODES = ("mixed", "zones", "split")  # mixed: split where a dense layer follows and it fits 1024 channels
ORIENT_TOLERANCE = 1.1  # turning a channel may cost up to 10% of its resolution (to chain zones)
# a channel's output step is at least 1/2**20 of the largest value its inputs could ever give it: a channel
# that barely moved on the calibration images must still fit its activation zone whatever it is fed
MAX_REACH_STEPS = 2**20


@dataclass
class MapInfo:
    """A feature map in KPU RAM."""

    name: str
    storage: Storage
    height: int
    width: int
    born: int
    dies: int = -1

    @property
    def channels(self) -> int:
        return self.storage.channels


@dataclass
class PendingLayer:
    conv: KpuConv
    src: str
    src_channel: int
    dst: str
    dst_channel: int
    op: str
    macs: int


@dataclass
class KpuProgram:
    maps: dict[str, MapInfo]
    layers: list[PendingLayer]
    adjacent: list[tuple[str, str]] = field(default_factory=list)  # (late, early): late right before early
    notes: list[str] = field(default_factory=list)


def channel_offset(channel: int, height: int, width: int) -> int:
    """Bytes from a map's start to stored channel ``channel`` (a multiple of the row layout's groups)."""
    lay = row_layout(width)
    if channel % lay.groups:
        raise ValueError(f"channel {channel} does not start a {lay.groups}-channel row block")
    return channel // lay.groups * lay.row_len * height * 64


def input_storage(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> Storage:
    """The uploaded image: uint8 pixels p, the model sees (p - mean) / std; zero point 128 (the padding)."""
    m = np.broadcast_to(np.asarray(mean, np.float64), (channels,))
    s = np.broadcast_to(np.asarray(std, np.float64), (channels,))
    return Storage.plain(1.0 / s, np.full(channels, 128), offset=(128.0 - m) / s)


class KpuBuilder:
    def __init__(self, plan: NetPlan, lo: dict[str, np.ndarray], hi: dict[str, np.ndarray], prelu: str = "mixed"):
        if prelu not in PRELU_MODES:
            raise ValueError(f"prelu mode {prelu!r}")
        self.plan = plan
        self.lo, self.hi = lo, hi
        self.prelu = prelu
        self.prog = KpuProgram({}, [])
        self.step = 0

    # ------------------------------------------------------------------------------------ driver
    def build(self, input_st: Storage) -> KpuProgram:
        c, h, w = self.plan.input_shape
        self.prog.maps[self.plan.input] = MapInfo(self.plan.input, input_st, h, w, 0)
        for op in self.plan.ops:
            if not op.kpu:
                continue
            self.step += 1
            if isinstance(op, Add):
                self._add(op)
            else:
                self._conv(op)
        for m in self.prog.maps.values():
            users = [i for i, L in enumerate(self.prog.layers) if L.src == m.name]
            m.dies = max([self._born_step(i) for i in users] + [m.born])
        return self.prog

    def build_head(self, op: Conv, input_st: Storage, size: int = 4) -> KpuProgram:
        """The KPU program of one dense layer of the CPU tail (``op.head``): its 1x1 input uploaded as a
        ``size`` x ``size`` map (only the top-left pixel matters to a 1x1 convolution)."""
        self.prog = KpuProgram({}, [])
        self.step = 0
        self.prog.maps[op.src] = MapInfo(op.src, input_st, size, size, 0)
        self.step = 1
        # the embedding leaves the KPU clipped to its calibrated range, where the float tail never clipped:
        # twice that range (one bit of resolution) keeps images brighter than the calibration set intact
        lo, hi = self.lo[op.pre], self.hi[op.pre]
        self.lo, self.hi = {**self.lo, op.pre: lo - (hi - lo) / 2}, {**self.hi, op.pre: hi + (hi - lo) / 2}
        self._conv(op)
        for m in self.prog.maps.values():
            m.dies = 2
        return self.prog

    def _born_step(self, layer_index: int) -> int:
        return self.prog.maps[self.prog.layers[layer_index].dst].born

    # ----------------------------------------------------------------------------- decisions
    def _consumers(self, tensor: str) -> list[Conv | Add]:
        return self.plan.consumers(tensor)

    def _needs_common_zero(self, tensor: str) -> bool:
        return any(isinstance(u, Conv) and u.kpu and u.kernel > 1 for u in self._consumers(tensor))

    def _can_split(self, tensor: str) -> bool:
        users = self._consumers(tensor)
        return bool(users) and all(isinstance(u, Conv) and not u.depthwise for u in users)

    def _add_partner(self, tensor: str) -> tuple[Add, str] | None:
        """The add this map is the later operand of, and the earlier operand."""
        for u in self._consumers(tensor):
            if isinstance(u, Add):
                other = u.b if u.a == tensor else u.a
                if other in self.prog.maps:
                    return u, other
        return None

    # --------------------------------------------------------------------------------- convs
    def _conv(self, op: Conv) -> None:
        src = self.prog.maps[op.src]
        st = src.storage
        w, b = _fold(op, st)
        rows = st.src.copy() if op.depthwise else np.arange(op.out_channels)
        peak = np.abs(w).reshape(len(w), -1).sum(axis=1) * 255 + np.abs(b)  # per row: the most |v| can be
        per_channel = np.zeros(len(self.lo[op.pre]))
        np.maximum.at(per_channel, np.where(rows >= 0, rows, 0), np.where(rows >= 0, peak, 0.0))
        lo, hi = _widen(self.lo[op.pre], self.hi[op.pre], per_channel)
        oh, ow = src.height // op.stride, src.width // op.stride
        groups, storage = self._output_plan(op.dst, op.act, lo, hi, rows, oh, ow, free=not op.depthwise)
        for g in groups:
            self._emit_layer(op, g, w, b, src)
        self.prog.maps[op.dst] = MapInfo(op.dst, storage, oh, ow, self.step)

    def _output_plan(self, dst: str, act: Act, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray, h: int, w: int,
                     free: bool) -> tuple[list[_LayerGroup], Storage]:
        """How the op's output rows (original channels, -1 for padding) are grouped into layers and stored."""
        real = rows >= 0
        rlo = np.where(real, lo[np.where(real, rows, 0)], 0.0)
        rhi = np.where(real, hi[np.where(real, rows, 0)], 0.0)
        slopes = np.where(real, act.slopes[np.where(real, rows, 0)], 1.0)
        align = row_layout(w).groups
        common = self._needs_common_zero(dst)
        partner = self._add_partner(dst)
        if act.kind == "linear" or (act.kind in ("relu", "leaky", "prelu") and np.all(slopes == 1.0)):
            return self._linear_plan(rows, rlo, rhi, common, partner)
        if np.all(slopes == 0.0):  # ReLU; ReLU6 too: the table's clamp at 255 is the clip when 255 stands for it
            top = np.maximum(rhi, 0.0) if act.clip is None else np.clip(rhi, 0.0, act.clip)
            scale = top / 255.0
            scale = np.where(scale > 0, scale, 1e-6)
            st = Storage(rows.copy(), np.where(real, 1.0, 0.0), scale, np.zeros(len(rows), np.int64),
                         np.zeros(len(rows)))
            return [_LayerGroup(list(range(len(rows))), 1.0, [IDENTITY], [0] * len(rows), scale,
                                np.zeros(len(rows)), 0)], st
        if partner is not None:
            raise PlanError(f"{dst}: a PReLU output that feeds a residual add")
        fits = 2 * len(rows) + (-len(rows) % align) <= KPU_MAX_CHANNELS
        if self.prelu != "zones" and self._can_split(dst) and fits:
            return self._split_plan(rows, rlo, rhi, slopes, align)
        return self._zone_plan(rows, rlo, rhi, slopes, common, align, free)

    def _linear_plan(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, common: bool,
                     partner: tuple[Add, str] | None) -> tuple[list[_LayerGroup], Storage]:
        n = len(rows)
        if common:
            z, scale, _o = choose_zero(lo, hi, both_orientations=False)
            zero = np.full(n, z, np.int64)
        else:
            scale, zero = affine(lo, hi)
        if partner is not None:
            early = self.prog.maps[partner[1]].storage
            scale, zero = _match_scale(scale, lo, hi, early, rows, zero, common)
        st = Storage(rows.copy(), np.where(rows >= 0, 1.0, 0.0), scale, zero, np.zeros(n))
        return [_LayerGroup(list(range(n)), 1.0, [IDENTITY], [0] * n, scale, zero.astype(np.float64), 0)], st

    def _split_plan(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, slopes: np.ndarray,
                    align: int) -> tuple[list[_LayerGroup], Storage]:
        """``relu(v)`` in the first stored channels, ``relu(-v)`` (weight ``-slope``) after them; the second
        half starts on a row block, padding channels in between."""
        n = len(rows)
        gap = -n % align
        pos = np.where(hi > 0, hi / 255.0, 1e-6)
        neg = np.where(lo < 0, -lo / 255.0, 1e-6)
        real = np.where(rows >= 0, 1.0, 0.0)
        st = Storage(np.concatenate([rows, np.full(gap, -1), rows]),
                     np.concatenate([real, np.zeros(gap), -slopes * real]),
                     np.concatenate([pos, np.full(gap, 1e-6), neg]), np.zeros(2 * n + gap, np.int64),
                     np.zeros(2 * n + gap))
        up = _LayerGroup(list(range(n)), 1.0, [IDENTITY], [0] * n, pos, np.zeros(n), 0)
        down = _LayerGroup(list(range(n)), -1.0, [IDENTITY], [0] * n, neg, np.zeros(n), n + gap)
        return [up, down], st

    def _zone_plan(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, slopes: np.ndarray, common: bool,
                   align: int, free: bool) -> tuple[list[_LayerGroup], Storage]:
        f_lo = np.minimum(np.minimum(lo, 0) * slopes, np.maximum(lo, 0))  # PReLU at the range ends and 0
        f_hi = np.maximum(np.maximum(hi, 0), np.minimum(lo, 0) * slopes)
        f_lo = np.minimum(f_lo, 0.0)
        f_hi = np.maximum(f_hi, 0.0)
        options: list[list[Option]] = []
        if common:
            z, _s, pref = choose_zero(f_lo, f_hi, both_orientations=True)
        for i in range(len(rows)):
            if rows[i] < 0:
                options.append([Option(IDENTITY, 1.0, 1e-6, 0)])
                continue
            opts = []
            for orient in (1.0, -1.0):
                if common:
                    zero = z
                    s = float(scale_for(f_lo[i : i + 1], f_hi[i : i + 1], z, np.array([orient]))[0])
                else:
                    s = max(float(f_hi[i] - f_lo[i]) / 255.0, 1e-12)
                    zero = int(np.clip(round(-f_lo[i] / s), 0, 255)) if orient > 0 else \
                        int(np.clip(round(f_hi[i] / s), 0, 255))
                opts.append(Option(Zone(orient * slopes[i], orient, zero), orient, s, zero))
            opts.sort(key=lambda o: o.scale)
            if opts[1].scale > opts[0].scale * ORIENT_TOLERANCE:
                opts = opts[:1]
            options.append(opts)
        groups: list[Group] = pack(options, align, free, KPU_MAX_CHANNELS)
        order: list[int] = []
        chosen: list[Option | None] = []
        for g in groups:
            order += g.channels
            chosen += g.options
        idx = np.asarray([rows[c] if c >= 0 else -1 for c in order]) if free else rows
        st = Storage(idx, np.asarray([o.orient if o is not None and idx[i] >= 0 else 0.0 for i, o in enumerate(chosen)]),
                     np.asarray([o.scale if o is not None else 1e-6 for o in chosen]),
                     np.asarray([o.zero if o is not None else 0 for o in chosen], np.int64),
                     np.zeros(len(chosen)))
        out: list[_LayerGroup] = []
        start = 0
        for g in groups:
            zones = g.zones or [IDENTITY]
            members = list(range(start, start + len(g.channels)))
            zone_of = [zones.index(o.zone) if o is not None else 0 for o in g.options]
            row_of = [order[m] if order[m] >= 0 else -1 for m in members] if free else members
            out.append(_LayerGroup(row_of, 1.0, zones, zone_of, st.scale[members], np.zeros(len(members)),
                                   storage_start=start))
            start += len(g.channels)
        return out, st

    # --------------------------------------------------------------------------------- layers
    def _emit_layer(self, op: Conv, g: _LayerGroup, w: np.ndarray, b: np.ndarray, src: MapInfo) -> None:
        rows = np.asarray(g.rows)
        real = rows >= 0
        take = np.where(real, rows, 0)
        wl = w[take] * np.where(real, g.sign, 0.0).reshape(-1, 1, 1, 1)
        bl = b[take] * np.where(real, g.sign, 0.0)
        wq, alpha = quantize_weights(wl)
        if op.depthwise:
            first = int(g.rows[0]) if g.rows else 0
            in_st = _slice(src.storage, first, first + len(g.rows))
            src_channel = first
        else:
            in_st, src_channel = src.storage, 0
        zc, corr, bound = alu_terms(wq, in_st, op.depthwise)
        k = op.kernel
        args = _conv_args(zc, k)
        scale = np.asarray(g.scale, np.float64)
        gain = np.where(real, alpha / scale, 0.0)  # padding rows: weights 0, output never read
        offset = np.where(real, (alpha * corr + bl) / scale + g.zoff, 0.0)
        reach = np.where(real, alpha * bound / scale, 0.0)
        bn, act, _unit = output_stage(LayerScale(gain, offset, reach, np.asarray(g.zone_of)), g.zones)
        pool = 5 if op.stride == 2 else 0
        geom = LayerGeometry((in_st.channels, src.height, src.width), len(rows), k, op.depthwise, pool, 0, 0)
        words = layer_words(geom, args)
        conv = KpuConv(words, bn, act, wq.reshape(-1), 1)
        macs = int(np.prod(wq.shape)) * src.height * src.width
        self.prog.layers.append(PendingLayer(conv, op.src, src_channel, op.dst, g.storage_start, op.name, macs))

    # ----------------------------------------------------------------------------------- adds
    def _add(self, op: Add) -> None:
        order = [t.dst for t in self.plan.ops]
        a_pos = order.index(op.a) if op.a in order else -1
        b_pos = order.index(op.b) if op.b in order else -1
        late, early = (op.a, op.b) if a_pos > b_pos else (op.b, op.a)
        lm, em = self.prog.maps[late], self.prog.maps[early]
        ls, es = lm.storage, em.storage
        if not (ls.one_to_one and es.one_to_one):
            raise PlanError(f"{op.name}: an add of maps stored as split channels")
        align = row_layout(lm.width).groups
        if ls.channels % align:
            raise PlanError(f"{op.name}: {ls.channels} channels do not fill the KPU's row blocks")
        self.prog.adjacent.append((late, early))
        both = ls.concat(es)
        c = len(self.lo[op.pre])
        wq = np.full((c, both.channels, 1, 1), W_ZERO, np.int64)
        alpha = np.zeros(c)
        for o in range(c):
            jl = int(np.flatnonzero(ls.src == o)[0])
            je = int(np.flatnonzero(es.src == o)[0])
            p, q = _ratio(ls.scale[jl] / es.scale[je])
            wq[o, jl] = W_ZERO + int(round(p * ls.coef[jl]))
            wq[o, ls.channels + je] = W_ZERO + int(round(q * es.coef[je]))
            alpha[o] = es.scale[je] / q
        bias = np.zeros(c)
        for o in range(c):  # the offsets of the stored channels (the input image only has them)
            jl = int(np.flatnonzero(ls.src == o)[0])
            je = int(np.flatnonzero(es.src == o)[0])
            bias[o] = ls.coef[jl] * ls.offset[jl] + es.coef[je] * es.offset[je]
        wq = wq.astype(np.uint8)
        zc, corr, bound = alu_terms(wq, both, False)
        rows = np.arange(c)
        lo, hi = _widen(self.lo[op.pre], self.hi[op.pre], alpha * bound + np.abs(bias))
        groups, storage = self._output_plan(op.dst, op.act, lo, hi, rows, lm.height, lm.width, free=True)
        for g in groups:
            sel = np.asarray(g.rows)
            take = np.where(sel >= 0, sel, 0)
            gs = np.asarray(g.scale)
            gain = alpha[take] / gs * g.sign
            offset = (alpha[take] * corr[take] + bias[take]) * g.sign / gs + g.zoff
            reach = alpha[take] * bound[take] / gs
            bn, act, _unit = output_stage(LayerScale(gain, offset, reach, np.asarray(g.zone_of)), g.zones)
            geom = LayerGeometry((both.channels, lm.height, lm.width), len(sel), 1, False, 0, 0, 0)
            layer = KpuConv(layer_words(geom, _conv_args(zc, 1)), bn, act, wq[take].reshape(-1), 1)
            macs = len(sel) * both.channels * lm.height * lm.width
            self.prog.layers.append(PendingLayer(layer, late, 0, op.dst, g.storage_start, op.name, macs))
        self.prog.maps[op.dst] = MapInfo(op.dst, storage, lm.height, lm.width, self.step)


@dataclass
class _LayerGroup:
    rows: list[int]  # the op's output rows this layer computes (-1: padding)
    sign: float  # -1: the layer computes -v (the negative part of a split PReLU)
    zones: list[Zone]
    zone_of: list[int]
    scale: np.ndarray
    zoff: np.ndarray  # output steps added to a linear channel (its zero point)
    storage_start: int = -1

    @property
    def size(self) -> int:
        return len(self.rows)


def _widen(lo: np.ndarray, hi: np.ndarray, peak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ranges at least ``255 / MAX_REACH_STEPS`` of the largest possible value wide (see there)."""
    need = 255.0 * peak / MAX_REACH_STEPS
    short = np.maximum(need - (hi - lo), 0.0)
    # both sides of 0 too: a ReLU channel that never fired still gets a positive side of that size
    return np.minimum(lo - short / 2, -need / 2), np.maximum(hi + short / 2, need / 2)


def _fold(op: Conv, st: Storage) -> tuple[np.ndarray, np.ndarray]:
    """Weights over the input's stored channels; for a depthwise op, row j is stored channel j."""
    w = np.asarray(op.weights, np.float64)
    if op.depthwise:
        real = st.src >= 0
        take = np.where(real, st.src, 0)
        factor = np.where(real, st.coef * st.scale, 0.0)
        w_eff = w[take] * factor.reshape(-1, 1, 1, 1)
        b_eff = np.where(real, op.bias[take] + w[take].reshape(len(take), -1).sum(axis=1) * st.coef * st.offset, 0.0)
        return w_eff, b_eff
    from k210tool.compile.kmodel.gen.quant import fold_input

    return fold_input(w, op.bias, False, st)


def _slice(st: Storage, a: int, b: int) -> Storage:
    return Storage(st.src[a:b], st.coef[a:b], st.scale[a:b], st.zero[a:b], st.offset[a:b])


def _conv_args(zc: int | None, k: int) -> ConvArgs:
    if zc is None:
        return ConvArgs(-W_ZERO, 0, 0, 0, 0, 0)
    return ConvArgs(-W_ZERO, 0, -zc, 0, W_ZERO * zc * k * k, zc)


def _ratio(r: float) -> tuple[int, int]:
    """Integers p, q <= 127 with p/q the smallest fraction >= r (p/q = r when the scales were matched)."""
    best = (127, 1)
    best_v = math.inf
    for q in range(1, 128):
        p = math.ceil(r * q - 1e-9)
        if 1 <= p <= 127 and abs(p / q - r) < best_v and p / q >= r - 1e-12:
            best, best_v = (p, q), abs(p / q - r)
    return best


def _match_scale(scale: np.ndarray, lo: np.ndarray, hi: np.ndarray, early: Storage, rows: np.ndarray,
                 zero: np.ndarray, common: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scales for the later operand of an add: exact small-integer multiples p/q of the earlier operand's, so
    the add's weights are exact integers."""
    out = scale.copy()
    for i, c in enumerate(rows):
        if c < 0:
            continue
        j = int(np.flatnonzero(early.src == c)[0])
        p, q = _ratio(scale[i] / early.scale[j])
        out[i] = early.scale[j] * p / q
    if common:
        return out, zero
    return out, np.clip(np.rint(-np.minimum(lo, 0) / out), 0, 255).astype(np.int64)
