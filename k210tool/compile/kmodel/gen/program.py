"""A whole kmodel v5 from a :class:`NetPlan`: the KPU layers, KPU RAM, the CPU tail and the two modules.

The entry function (stackvm) turns the uint8 input by 180 degrees when the network was lowered that way
(one strided slice), calls the k210 function - upload, every KPU layer, one download per layer writing a
map the CPU needs - then runs the float tail: dequantize (exact: scale 1), the convolutions after the last
KPU-sized map with the stored channels' scales, zero points and order folded into their weights, and writes
the float32 output. A dense layer of the tail marked ``head`` (:func:`~k210tool.compile.netplan.mark_head`)
goes back to the KPU as a second k210 function: its float input quantized per channel (multiply, add,
quantize), padded to 4x4, uploaded, run, downloaded, pixel (0, 0) taken. ``transcode_to_v4`` turns the same
file into kmodel v4 for the released firmware (it inlines both calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from k210tool.compile.kmodel.gen.alloc import Block, OutOfKpuRam, allocate
from k210tool.compile.kmodel.gen.kpu import KpuBuilder, KpuProgram, MapInfo, channel_offset, input_storage
from k210tool.compile.kmodel.gen.quant import Storage
from k210tool.compile.kmodel.layout import kpu_bytes
from k210tool.compile.kmodel.model import (
    V5_DATA,
    V5_INPUT,
    V5_KPU,
    V5_OUTPUT,
    V5_RDATA,
    Function,
    KpuConv,
    MemoryRange,
    Module,
    Op,
    Section,
    V5Model,
)
from k210tool.compile.kmodel.stackvm_asm import Assembler, dense_strides
from k210tool.compile.kmodel.v5write import k210_text, write_v5_model
from k210tool.compile.netplan import Act, Add, Conv, NetPlan, PlanError

U8, F32 = 4, 9
_BINARY = {"add": 0, "sub": 1, "mul": 2, "min": 4, "max": 5}


@dataclass
class GenStats:
    kpu_layers: int
    kpu_macs: int
    cpu_macs: int
    kpu_weight_bytes: int
    cpu_weight_bytes: int
    kpu_ram_peak: int
    uploads: int
    per_op: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Generated:
    kmodel: bytes  # kmodel v5
    stats: GenStats


def generate(plan: NetPlan, lo: dict[str, np.ndarray], hi: dict[str, np.ndarray], mean: tuple[float, ...],
             std: tuple[float, ...], prelu: str = "mixed") -> Generated:
    c, h, w = plan.input_shape
    builder = KpuBuilder(plan, lo, hi, prelu)
    prog = builder.build(input_storage(mean, std, c))
    tail = [op for op in plan.ops if not op.kpu]
    needed = _downloads(plan, prog, tail)
    peak = _allocate(prog, needed)
    main = _k210_function(prog, plan.input, needed)
    emitter = _Stackvm(plan, prog, builder, main)
    text, rdata, data_size, out_size, cpu_macs, cpu_bytes = emitter.emit(tail, needed)
    model = _model(plan, emitter.functions, text, rdata, data_size, out_size)
    layers = [L for f in emitter.functions for L in f.prog.layers]
    stats = GenStats(
        kpu_layers=len(layers), kpu_macs=sum(L.macs for L in layers), cpu_macs=cpu_macs,
        kpu_weight_bytes=sum(len(L.conv.weights) for L in layers), cpu_weight_bytes=cpu_bytes,
        kpu_ram_peak=max(peak, *(f.peak for f in emitter.functions[1:]), 0), uploads=len(emitter.functions),
        notes=[n for f in emitter.functions for n in f.prog.notes], per_op=_per_op(layers))
    return Generated(write_v5_model(model), stats)


@dataclass
class _K210Function:
    """One function of the k210 module: upload ``input``, run ``prog``'s layers, download ``needed``."""

    prog: KpuProgram
    input: str
    ops: list[KpuConv | Op]
    out_ranges: dict[str, list[tuple[MemoryRange, tuple[int, int, int, int]]]]
    out_pool: int
    peak: int = 0

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        m = self.prog.maps[self.input]
        return (1, m.channels, m.height, m.width)


def _per_op(layers: list) -> list[dict]:
    rows: dict[str, dict] = {}
    for L in layers:
        r = rows.setdefault(L.op, {"op": L.op, "layers": 0, "macs": 0, "weights": 0})
        r["layers"] += 1
        r["macs"] += L.macs
        r["weights"] += len(L.conv.weights)
    return list(rows.values())


def _downloads(plan: NetPlan, prog: KpuProgram, tail: list[Conv | Add]) -> list[str]:
    names = []
    for op in tail:
        for t in ((op.a, op.b) if isinstance(op, Add) else (op.src,)):
            if t in prog.maps and t not in names:
                names.append(t)
    if plan.output in prog.maps and plan.output not in names:
        names.append(plan.output)
    if not names:
        raise PlanError("nothing leaves the KPU")
    return names


def _allocate(prog: KpuProgram, needed: list[str]) -> int:
    last = max(m.born for m in prog.maps.values()) + 1
    for name in needed:
        prog.maps[name].dies = last
    blocks: dict[str, Block] = {}
    later = {late: early for late, early in prog.adjacent}
    early_of = {early: late for late, early in prog.adjacent}
    for name, m in prog.maps.items():
        if name in later:
            continue  # placed with its earlier operand
        size = kpu_bytes(m.channels, m.height, m.width)
        born, dies = m.born, m.dies
        if name in early_of:
            lm = prog.maps[early_of[name]]
            size += kpu_bytes(lm.channels, lm.height, lm.width)
            dies = max(dies, lm.dies)
            born = min(born, lm.born)
        blocks[name] = Block(name, size, born, dies)
    try:
        peak = allocate(list(blocks.values()))
    except OutOfKpuRam as exc:
        raise PlanError(str(exc), "fewer channels or a smaller input for that layer (nncase would fail on it too)") from None
    addr = {name: b.addr for name, b in blocks.items()}
    for late, early in prog.adjacent:
        lm = prog.maps[late]
        addr[late] = addr[early]
        addr[early] += kpu_bytes(lm.channels, lm.height, lm.width)
    prog.addresses = addr  # type: ignore[attr-defined]
    return peak


def _k210_function(prog: KpuProgram, input_name: str, needed: list[str]) -> _K210Function:
    """The k210 ops of ``prog`` (KPU RAM allocated): one upload of ``input_name``, the layers, one download
    per layer writing a map in ``needed`` (v4 folds each into its layer), packed in an output pool."""
    addr = prog.addresses  # type: ignore[attr-defined]
    src = prog.maps[input_name]
    c, h, w = src.channels, src.height, src.width
    ops: list[KpuConv | Op] = [Op("kpu_upload", {
        "input": MemoryRange(V5_INPUT, U8, 0, c * h * w),
        "output": MemoryRange(V5_KPU, U8, addr[input_name], kpu_bytes(c, h, w)),
        "in_shape": (1, c, h, w)})]
    for L in prog.layers:
        src, dst = prog.maps[L.src], prog.maps[L.dst]
        words = L.conv.layer.replace(
            image_src_addr=(addr[L.src] + channel_offset(L.src_channel, src.height, src.width)) // 64,
            image_dst_addr=(addr[L.dst] + channel_offset(L.dst_channel, dst.height, dst.width)) // 64)
        ops.append(KpuConv(words, L.conv.batch_norm, L.conv.activation, L.conv.weights, 1))
    out_ranges: dict[str, list[tuple[MemoryRange, tuple[int, int, int, int]]]] = {}
    pool = 0
    for name in needed:
        m = prog.maps[name]
        out_ranges[name] = []
        for L, conv in zip(prog.layers, ops[1:], strict=True):  # one download per layer writing the map
            if L.dst != name:
                continue
            oc = conv.layer.out_channels
            start = addr[name] + channel_offset(L.dst_channel, m.height, m.width)
            shape = (1, oc, m.height, m.width)
            out = MemoryRange(V5_OUTPUT, U8, pool + L.dst_channel * m.height * m.width, oc * m.height * m.width)
            ops.append(Op("kpu_download", {"input": MemoryRange(V5_KPU, U8, start, kpu_bytes(oc, m.height, m.width)),
                                           "output": out, "in_shape": shape}))
            out_ranges[name].append((out, shape))
        pool += _align(m.channels * m.height * m.width, 8)
    return _K210Function(prog, input_name, ops, out_ranges, pool)


def _k210_function_allocated(prog: KpuProgram, input_name: str, needed: list[str]) -> _K210Function:
    peak = _allocate(prog, needed)
    fn = _k210_function(prog, input_name, needed)
    fn.peak = peak
    return fn


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class _FloatMap:
    """A float tensor in the stackvm data pool, channel j of which adds ``a_j * value + b_j`` to
    channel ``src_j`` of the network's map (a dequantized KPU map before it is folded away)."""

    start: int
    shape: tuple[int, int, int]  # stored channels, H, W
    src: np.ndarray
    a: np.ndarray
    b: np.ndarray
    channels: int  # the network map's channels

    @property
    def plain(self) -> bool:
        return (len(self.src) == self.channels and np.array_equal(self.src, np.arange(self.channels))
                and np.all(self.a == 1.0) and np.all(self.b == 0.0))


class _Stackvm:
    def __init__(self, plan: NetPlan, prog: KpuProgram, builder: KpuBuilder, main: _K210Function) -> None:
        self.plan, self.prog, self.builder = plan, prog, builder
        self.functions = [main]
        self.asm = Assembler()
        self.rdata = bytearray()
        self.data = 0
        self.cpu_macs = 0
        self.cpu_bytes = 0

    # -------------------------------------------------------------------------------- memory
    def _buffer(self, size: int) -> MemoryRange:
        start = _align(self.data, 8)
        self.data = start + size
        return MemoryRange(V5_DATA, F32, start, size)

    def _bytes(self, size: int) -> MemoryRange:
        return MemoryRange(V5_DATA, U8, self._buffer(size).start, size)

    def _const(self, arr: np.ndarray) -> MemoryRange:
        start = _align(len(self.rdata), 8)
        self.rdata += bytes(start - len(self.rdata))
        raw = np.ascontiguousarray(arr, "<f4").tobytes()
        self.rdata += raw
        return MemoryRange(V5_RDATA, F32, start, len(raw))

    # ------------------------------------------------------------------------------------ code
    def emit(self, tail: list[Conv | Add], needed: list[str]) -> tuple[bytes, bytes, int, int, int, int]:
        plan = self.plan
        c, h, w = plan.input_shape
        image = MemoryRange(V5_INPUT, U8, 0, c * h * w)
        if plan.rotation == 180:
            turned = self._bytes(c * h * w)
            shape = (1, c, h, w)
            self.asm.op("slice", {"input": image, "output": turned, "shape": shape,
                                  "in_strides": dense_strides(shape), "out_strides": dense_strides(shape),
                                  "begins": (0, 0, h - 1, w - 1), "ends": (1, c, 2**32 - 1, 2**32 - 1),
                                  "strides": (1, 1, 2**32 - 1, 2**32 - 1), "datatype": U8})
            image = turned
        elif plan.rotation:
            raise PlanError(f"input rotation {plan.rotation}")
        downloaded = self._call(0, image)
        maps = {name: self._dequantize(self.prog.maps[name], buf) for name, buf in downloaded.items()}
        for op in tail:
            if isinstance(op, Add):
                maps[op.dst] = self._add(op, maps)
            elif op.head:
                maps[op.dst] = self._head(op, maps[op.src])
            else:
                maps[op.dst] = self._conv(op, maps[op.src])
        final = maps[plan.output]
        if final.shape[1:] != (1, 1):
            raise PlanError("the network's output is a map larger than 1x1 (k210tool's backend ends on a vector)")
        if not final.plain:
            final = self._materialize(final)
        out_size = int(np.prod(final.shape)) * 4
        out = MemoryRange(V5_OUTPUT, F32, 0, out_size)
        shape = (1, *final.shape)
        self.asm.op("copy", {"input": MemoryRange(V5_DATA, F32, final.start, out_size), "output": out,
                             "shape": shape, "in_strides": dense_strides(shape), "out_strides": dense_strides(shape),
                             "datatype": F32})
        return bytes(self.asm.code), bytes(self.rdata), self.data, out_size, self.cpu_macs, self.cpu_bytes

    def _call(self, index: int, image: MemoryRange) -> dict[str, MemoryRange]:
        """Call k210 function ``index`` on ``image``; the uint8 maps it downloads, each in one buffer."""
        fn = self.functions[index]
        downloaded: dict[str, MemoryRange] = {}
        outputs = []
        for name, ranges in fn.out_ranges.items():
            m = fn.prog.maps[name]
            buf = self._bytes(m.channels * m.height * m.width)
            downloaded[name] = buf
            base = min(r.start for r, _s in ranges)
            for rng, shape in ranges:  # one k210 output per download, each a slice of the map
                outputs.append({"memory": MemoryRange(V5_DATA, U8, buf.start + rng.start - base, rng.size),
                                "shape": shape, "strides": dense_strides(shape)})
        shape = fn.in_shape
        self.asm.call({"module": 1, "function": index, "inputs": [{
            "memory": image, "shape": shape, "strides": dense_strides(shape)}], "outputs": outputs})
        return downloaded

    def _head(self, op: Conv, x: _FloatMap) -> _FloatMap:
        """A dense layer of the tail on the KPU (see :func:`mark_head`): the float vector quantized per stored
        channel into uint8 on the CPU, padded to a 4x4 map, uploaded, run, downloaded, its pixel (0, 0) taken."""
        real = x.src >= 0
        used = x.src[real]
        if len(np.unique(used)) != len(used):
            x = self._materialize(x)
            real = x.src >= 0
        producer = self.plan.producer(op.src)
        plo, phi = self.builder.lo[producer.pre], self.builder.hi[producer.pre]
        ends = np.stack([producer.act.apply(v.reshape(1, -1))[0] for v in (plo, phi, np.clip(0.0, plo, phi))])
        vlo, vhi = ends.min(axis=0), ends.max(axis=0)  # the range of each channel of the head's input
        take = np.where(real, x.src, 0)
        a = np.where(real, x.a, 1.0)
        a = np.where(a == 0, 1.0, a)
        ends = np.stack([(vlo[take] - x.b) / a, (vhi[take] - x.b) / a])  # ... of each stored value
        lo = np.minimum(ends.min(axis=0), 0.0)
        hi = np.maximum(ends.max(axis=0), 0.0)
        scale = np.where(real, np.maximum(hi - lo, 1e-12) / 255.0, 1.0)
        zero = np.where(real, np.clip(np.round(-lo / scale), 0, 255), 0).astype(np.int64)
        storage = Storage(x.src.copy(), np.where(real, x.a, 0.0), scale, zero, np.where(real, x.b / a, 0.0))
        s, hh, ww = x.shape
        size = 4
        vec = (1, s, hh, ww)
        src = MemoryRange(V5_DATA, F32, x.start, s * 4)
        tmp = self._buffer(s * 4)
        self._binary("mul", src, vec, self._const((1.0 / scale).reshape(vec)), vec, tmp, vec)
        self._binary("add", tmp, vec, self._const(zero.astype(np.float64).reshape(vec)), vec, tmp, vec)
        q = self._bytes(s)
        self.asm.op("quantize", {"input": tmp, "output": q, "shape": vec, "in_strides": dense_strides(vec),
                                 "out_strides": dense_strides(vec), "scale": 1.0, "bias": 0.0,
                                 "in_datatype": F32, "dst_datatype": U8})
        big = (1, s, size, size)
        padded = self._bytes(s * size * size)
        self.asm.op("pad", {"input": q, "output": padded, "shape": vec, "in_strides": dense_strides(vec),
                            "out_strides": dense_strides(big), "paddings": ((0, 0, 0), (0, 0, 0), (0, size - 1, 0),
                                                                          (0, size - 1, 0)),
                            "pad_mode": 0, "pad_value": 0, "datatype": U8})
        prog = self.builder.build_head(op, storage, size)
        fn = _k210_function_allocated(prog, op.src, [op.dst])
        self.functions.append(fn)
        out = self._call(len(self.functions) - 1, padded)[op.dst]
        m = prog.maps[op.dst]
        full = (1, m.channels, m.height, m.width)
        one = (1, m.channels, 1, 1)
        corner = self._bytes(m.channels)
        self.asm.op("slice", {"input": out, "output": corner, "shape": full, "in_strides": dense_strides(full),
                              "out_strides": dense_strides(one), "begins": (0, 0, 0, 0), "ends": (1, m.channels, 1, 1),
                              "strides": (1, 1, 1, 1), "datatype": U8})
        return self._dequantize(m, corner, (m.channels, 1, 1), op.dst)

    def _dequantize(self, m: MapInfo, buf: MemoryRange, shape3: tuple[int, int, int] | None = None,
                    name: str | None = None) -> _FloatMap:
        st: Storage = m.storage
        shape = (1, *(shape3 or (m.channels, m.height, m.width)))
        out = self._buffer(int(np.prod(shape)) * 4)
        self.asm.op("dequantize", {"input": buf, "output": out, "shape": shape, "in_strides": dense_strides(shape),
                                   "out_strides": dense_strides(shape), "scale": 1.0, "bias": 0.0,
                                   "in_datatype": U8, "dst_datatype": F32})
        real = st.src >= 0
        a = np.where(real, st.coef * st.scale, 0.0)
        b = np.where(real, st.coef * (st.offset - st.scale * st.zero), 0.0)
        channels = self.plan.shapes[name or m.name][0]
        return _FloatMap(out.start, shape[1:], np.where(real, st.src, -1), a, b, channels)

    def _conv(self, op: Conv, x: _FloatMap) -> _FloatMap:
        w = np.asarray(op.weights, np.float64)
        bias = np.asarray(op.bias, np.float64).copy()
        pad = op.pad
        if any(pad) and not np.all(x.b == 0):
            x = self._materialize(x)
        s, hh, ww = x.shape
        real = x.src >= 0
        take = np.where(real, x.src, 0)
        if op.depthwise:
            w_eff = w[take] * x.a.reshape(-1, 1, 1, 1)
            b_eff = np.where(real, bias[take] + w[take].reshape(s, -1).sum(axis=1) * x.b, 0.0)
            groups, out_src = s, np.where(real, x.src, -1)
        else:
            w_eff = w[:, take] * x.a.reshape(1, -1, 1, 1)
            b_eff = bias + (w[:, take].reshape(w.shape[0], s, -1).sum(axis=2) * x.b).sum(axis=1)
            groups, out_src = 1, np.arange(op.out_channels)
        oh = (hh + pad[0] + pad[1] - w.shape[-2]) // op.stride + 1  # kernels may be h x w (global pooling)
        ow = (ww + pad[2] + pad[3] - w.shape[-1]) // op.stride + 1
        oc = w_eff.shape[0]
        out = self._buffer(oc * oh * ow * 4)
        wr, br = self._const(w_eff), self._const(b_eff)
        self.cpu_bytes += wr.size + br.size
        self.cpu_macs += int(np.prod(w_eff.shape)) * oh * ow
        in_shape = (1, s, hh, ww)
        lo, hi = (0.0, float("inf")) if op.act.kind == "relu" and op.act.clip is None else (-float("inf"), float("inf"))
        if op.act.kind == "relu" and op.act.clip is not None:
            hi = op.act.clip
            lo = 0.0
        self.asm.op("conv2d", {
            "input": MemoryRange(V5_DATA, F32, x.start, s * hh * ww * 4), "weights": wr, "bias": br,
            "output": out, "in_shape": in_shape, "in_strides": dense_strides(in_shape),
            "w_shape": tuple(w_eff.shape), "w_strides": dense_strides(tuple(w_eff.shape)), "bias_strides": (1,),
            "out_strides": dense_strides((1, oc, oh, ow)), "padding_h": (pad[0], pad[1], 0),
            "padding_w": (pad[2], pad[3], 0), "groups": groups, "stride_h": op.stride, "stride_w": op.stride,
            "dilation_h": 1, "dilation_w": 1, "fused_clamp_low": lo, "fused_clamp_high": hi, "datatype": F32})
        y = _FloatMap(out.start, (oc, oh, ow), out_src, np.ones(oc), np.zeros(oc), op.out_channels)
        if op.act.kind in ("leaky", "prelu"):
            if op.depthwise and len(np.unique(out_src[out_src >= 0])) != int(np.sum(out_src >= 0)):
                raise PlanError(f"{op.name}: an activation on split channels on the CPU")
            slopes = np.where(out_src >= 0, op.act.slopes[np.where(out_src >= 0, out_src, 0)], 1.0)
            self._prelu(y, slopes)
            self._clip(y, op.act.clip)
        return y

    def _clip(self, y: _FloatMap, top: float | None) -> None:
        """y = min(y, top), in place (a ReLU6's clip where the convolution's fused clamp did not apply it)."""
        if top is None:
            return
        c, h, w = y.shape
        buf = MemoryRange(V5_DATA, F32, y.start, c * h * w * 4)
        self._binary("min", buf, (1, c, h, w), self._const(np.full(1, top)), (1, 1, 1, 1), buf, (1, c, h, w))

    def _prelu(self, y: _FloatMap, slopes: np.ndarray) -> None:
        """y += (slope - 1) * min(y, 0), channel by channel, in place."""
        c, h, w = y.shape
        shape = (1, c, h, w)
        buf = MemoryRange(V5_DATA, F32, y.start, c * h * w * 4)
        tmp = self._buffer(c * h * w * 4)
        zero = self._const(np.zeros(1))
        k = self._const((slopes - 1.0).reshape(1, c, 1, 1))
        self._binary("min", buf, shape, zero, (1, 1, 1, 1), tmp, shape)
        self._binary("mul", tmp, shape, k, (1, c, 1, 1), tmp, shape)
        self._binary("add", buf, shape, tmp, shape, buf, shape)

    def _binary(self, name: str, a: MemoryRange, a_shape: tuple, b: MemoryRange, b_shape: tuple, out: MemoryRange,
                out_shape: tuple) -> None:
        def strides(shape: tuple) -> tuple:
            return tuple(0 if d == 1 else s for d, s in zip(shape, dense_strides(shape), strict=True))
        self.asm.op("binary", {"input_a": a, "input_b": b, "output": out, "in_a_shape": a_shape,
                               "in_a_strides": strides(a_shape), "in_b_shape": b_shape,
                               "in_b_strides": strides(b_shape), "out_shape": out_shape,
                               "out_strides": dense_strides(out_shape), "binary_op": _BINARY[name],
                               "fused_clamp_low": -float("inf"), "fused_clamp_high": float("inf"), "datatype": F32})

    def _materialize(self, x: _FloatMap) -> _FloatMap:
        """The network's channels, in order: a per-channel multiply and add when the stored channels are
        them already, a 1x1 convolution from the stored channels otherwise."""
        s, h, w = x.shape
        if len(x.src) == x.channels and np.array_equal(x.src, np.arange(x.channels)):
            shape = (1, s, h, w)
            buf = MemoryRange(V5_DATA, F32, x.start, s * h * w * 4)
            out = self._buffer(s * h * w * 4)
            self._binary("mul", buf, shape, self._const(x.a.reshape(1, s, 1, 1)), (1, s, 1, 1), out, shape)
            self._binary("add", out, shape, self._const(x.b.reshape(1, s, 1, 1)), (1, s, 1, 1), out, shape)
            return _FloatMap(out.start, x.shape, np.arange(s), np.ones(s), np.zeros(s), s)
        mat = np.zeros((x.channels, s, 1, 1))
        bias = np.zeros(x.channels)
        for j, c in enumerate(x.src):
            if c >= 0:
                mat[c, j] = x.a[j]
                bias[c] += x.b[j]
        ident = Conv("materialize", "", "", mat, bias, False, 1, (0, 0, 0, 0), Act.linear(x.channels))
        return self._conv(ident, _FloatMap(x.start, x.shape, np.arange(s), np.ones(s), np.zeros(s), s))

    def _add(self, op: Add, maps: dict[str, _FloatMap]) -> _FloatMap:
        a, b = maps[op.a], maps[op.b]
        if not a.plain:
            a = self._materialize(a)
        if not b.plain:
            b = self._materialize(b)
        c, h, w = a.shape
        shape = (1, c, h, w)
        out = self._buffer(c * h * w * 4)
        self._binary("add", MemoryRange(V5_DATA, F32, a.start, c * h * w * 4), shape,
                     MemoryRange(V5_DATA, F32, b.start, c * h * w * 4), shape, out, shape)
        y = _FloatMap(out.start, (c, h, w), np.arange(c), np.ones(c), np.zeros(c), c)
        if op.act.kind != "linear":
            self._prelu(y, op.act.slopes)
            self._clip(y, op.act.clip)
        return y


def _model(plan: NetPlan, functions: list[_K210Function], text: bytes, rdata: bytes, data: int,
           out_size: int) -> V5Model:
    c, h, w = plan.input_shape
    k_rdata = bytearray()
    k_text = b""
    k_functions = []
    for index, fn in enumerate(functions):
        ranges: dict[int, tuple[MemoryRange, MemoryRange, MemoryRange]] = {}
        for op in fn.ops:
            if isinstance(op, KpuConv):
                wr = _put(k_rdata, np.asarray(op.weights, np.uint8).tobytes(), 8, U8)
                br = _put(k_rdata, op.batch_norm.words.astype("<u8").tobytes(), 8, 7)
                ar = _put(k_rdata, op.activation.to_bytes(), 256, U8)
                ranges[id(op)] = (wr, br, ar)
        fn_text = k210_text(fn.ops, ranges)
        size = int(np.prod(fn.in_shape))
        outs = [(op.args["output"], tuple(op.args["in_shape"])) for op in fn.ops
                if isinstance(op, Op) and op.name == "kpu_download"]
        k_functions.append(Function(index, size, fn.out_pool, [(MemoryRange(V5_INPUT, U8, 0, size), fn.in_shape)],
                                    outs, len(k_text), fn_text))
        k_text += fn_text
    k210 = Module("k210", 1, [(V5_RDATA, len(k_rdata)), (V5_DATA, 0), (V5_KPU, 2 * 1024 * 1024)], [],
                  [Section(".rdata", 0, 0, len(k_rdata), bytes(k_rdata)), Section(".text", 0, 0, len(k_text), k_text)],
                  k_functions)
    in_range = MemoryRange(V5_INPUT, U8, 0, c * h * w)
    out_shape = (1, *plan.output_shape)
    main = Function(0, c * h * w, out_size, [(in_range, (1, c, h, w))],
                    [(MemoryRange(V5_OUTPUT, F32, 0, out_size), out_shape)], 0, text)
    stackvm = Module("stackvm", 1, [(V5_RDATA, len(rdata)), (V5_DATA, _align(data, 8))], [],
                     [Section(".rdata", 0, 0, len(rdata), bytes(rdata)), Section(".text", 0, 0, len(text), text)],
                     [main])
    return V5Model(0, 256, 0, 0, [stackvm, k210])


def _put(buf: bytearray, raw: bytes, align: int, dtype: int) -> MemoryRange:
    start = _align(len(buf), align)
    buf += bytes(start - len(buf))
    buf += raw
    return MemoryRange(V5_RDATA, dtype, start, len(raw))
