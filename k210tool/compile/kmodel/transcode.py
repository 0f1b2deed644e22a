"""nncase 1.9 kmodel v5 -> kmodel v4 (the version released MaixPy and CanMV firmware load).

Memory: v5's pools become v4's three memories. Main memory holds, in this order, the stackvm ``.data``
pool, the entry function's input and output pools and the k210 module's ``.data``; the stackvm
``.rdata`` becomes the v4 constants; KPU RAM keeps its addresses. A call into the k210 module is inlined,
its parameters bound to the caller's buffers.

Ops (docs/kmodel.md, "kmodel v4 from kmodel v5"): KPU uploads and convolutions are copied (the layer words
unchanged; v4 inlines the weights, BN and activation tables), a KPU download is folded into the
convolution that produced it as its ``main_mem_output``; CPU ops map to v4 neutral ops (quantize,
dequantize, binary, conv2d, pad, strided_slice, transpose, table_lookup1d). Anything else raises a
:class:`TranscodeError` naming the op, where it is and what to change in the model.

Rounding: v4 stores a dequantize's inverse step; the scale written is chosen so that ``1/scale`` gives
v5's float32 step exactly. v4 quantize on the K210 rounds half to even like v5, except the runtime's
odd-length tail element, which rounds half away from zero (``roundf``): a tie there can differ by one
quantization step (see ``k210tool.sim.interp.program4``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.compile.kmodel.errors import TranscodeError
from k210tool.compile.kmodel.model import (
    V4_CONST,
    V4_KPU,
    V4_MAIN,
    V5_DATA,
    V5_INPUT,
    V5_KPU,
    V5_OUTPUT,
    V5_RDATA,
    Function,
    Kmodel,
    KpuConv,
    MemoryRange,
    Op,
    V4Model,
    V4Node,
)
from k210tool.compile.kmodel.stackvm import i32, reduced_shape
from k210tool.compile.kmodel.v4 import KPU_CONV2D, KPU_UPLOAD, OPCODES, _common
from k210tool.compile.kmodel.views import Views, align, is_dense, parent_shape

_V4_DT = {9: 0, 4: 1}
_REDUCE_MEAN, _REDUCE_MIN, _REDUCE_MAX, _REDUCE_SUM = 0, 1, 2, 3  # reduce_op_t of both runtimes  # v5 float32 / uint8 -> v4 datatype ids
_ITEM = {9: 4, 4: 1}
_HINTS = {
    "convert": "remove the datatype cast (Cast/astype) from the model; keep it float32 end to end",
    "reduce": "reduce float32 maps of at most 4 dimensions (GlobalAveragePooling2D or a mean over height and "
              "width); a reduction over other datatypes has no v4 form",
    "reduce_window2d": "pool float maps without interior padding (AveragePooling2D/MaxPooling2D)",
    "matmul": "express the Dense layer as a 1x1 Conv2D (k210tool rewrite does this)",
    "unary": "remove the unary math op (exp/log/sqrt/...) from the model graph",
    "sigmoid": "use a piecewise-linear activation (ReLU/LeakyReLU) the KPU table can hold",
    "softmax": "end the model on the logits or the embedding (drop the Softmax; apply it on the board if needed)",
    "kpu_download": "make the layer feed a KPU conv or end on one (the download could not be folded)",
}
_DEFAULT_HINT = "run `k210tool rewrite` on the model or replace this layer with KPU-friendly ops"


@dataclass
class TranscodeReport:
    """What the transcoder did that can change a result (kept beside the bytes for inspection/tests)."""

    notes: list[str] = field(default_factory=list)
    folded_downloads: int = 0


@dataclass
class _Where:
    index: int
    op: str
    detail: str

    def __str__(self) -> str:
        return f"layer {self.index} of `k210tool inspect` ({self.op}{', ' + self.detail if self.detail else ''})"


class _Transcoder:
    def __init__(self, model: Kmodel) -> None:
        if model.v5 is None:
            raise TranscodeError(f"transcode_to_v4 needs a kmodel v5 (nncase 1.x), got v{model.version}")
        if model.errors():
            raise TranscodeError("cannot transcode: " + model.errors()[0].split(": ", 1)[-1],
                                 "recompile the model with nncase 1.9")
        self.model = model
        self.v5 = model.v5
        self.entry = self.v5.entry()
        self.sv_index = self.v5.entry_module
        sv = self.v5.modules[self.sv_index]
        data = sv.mempool(V5_DATA)
        self.base = {"data": 0}
        self.base["in"] = align(data, 8)
        self.base["out"] = align(self.base["in"] + self.entry.input_pool_size, 8)
        k210_data = sum(m.mempool(V5_DATA) for i, m in enumerate(self.v5.modules) if i != self.sv_index)
        self.base["k210"] = align(self.base["out"] + self.entry.output_pool_size, 8)
        self.views = Views(self.base["k210"] + k210_data)
        self.constants = sv.section(".rdata")
        self.nodes: list[V4Node] = []
        self.report = TranscodeReport()
        self.counter = 0
        self.folded: set[int] = set()  # downloads already folded into their convolution
        self._download_index: dict[int, tuple[list[Any], dict[int, list[int]]]] = {}

    # ------------------------------------------------------------------------------- memory
    def sv_range(self, rng: MemoryRange) -> MemoryRange:
        dt = self.dtype(rng)
        if rng.location == V5_DATA:
            return MemoryRange(V4_MAIN, dt, self.base["data"] + rng.start, rng.size)
        if rng.location == V5_INPUT:
            return MemoryRange(V4_MAIN, dt, self.base["in"] + rng.start, rng.size)
        if rng.location == V5_OUTPUT:
            return MemoryRange(V4_MAIN, dt, self.base["out"] + rng.start, rng.size)
        if rng.location == V5_RDATA:
            return MemoryRange(V4_CONST, dt, rng.start, rng.size)
        raise TranscodeError(f"memory location {rng.location} has no kmodel v4 equivalent")

    def dtype(self, rng: MemoryRange) -> int:
        if rng.datatype not in _V4_DT:
            raise TranscodeError(f"{self.where_now}: tensors of datatype {rng.datatype} do not exist in kmodel v4 "
                                 "(it has float32 and uint8 only)", _HINTS["convert"])
        return _V4_DT[rng.datatype]

    # --------------------------------------------------------------------------------- driver
    def run(self) -> V4Model:
        self.where_now = _Where(0, "model", "")
        self._function(self.sv_index, self.entry, self.sv_range)
        inputs = [self.sv_range(rng) for rng, _shape in self.entry.inputs]
        outputs = [self.sv_range(rng) for rng, _shape in self.entry.outputs]
        shapes = [_shape4(shape) for _rng, shape in self.entry.inputs]
        for rng in inputs + outputs:
            if rng.location != V4_MAIN:
                raise TranscodeError("a model input or output is not in main memory")
        # batch-norm tables and weights 8-aligned as nncase 1.9 places them for the same KPU (ncc 0.2 used 256:
        # up to 510 bytes of padding per layer); activation tables stay 256-aligned
        self.views.leftover()
        constants = _keep_referenced(self.nodes, self.constants)
        return V4Model(flags=0, target=1, main_mem=self.views.end, inputs=inputs, input_shapes=shapes,
                       outputs=outputs, constants=constants, nodes=self.nodes, table_alignment=8)

    def _function(self, m: int, fn: Function, resolve: Any) -> None:
        mod = self.v5.modules[m]
        ops = list(fn.ops)
        i = 0
        while i < len(ops):
            op = ops[i]
            name = "kpu_conv2d" if isinstance(op, KpuConv) else op.name
            if isinstance(op, Op) and op.name == "call":
                self._call(op, resolve)
                i += 1
                continue
            self.where_now = _Where(self.counter, name, _detail(op))
            self.counter += 1
            if mod.type == "k210":
                i = self._k210(ops, i, resolve)
            else:
                self._stackvm(op, resolve)
            for concat in self.views.complete():
                self._emit(OPCODES["concat"], concat)
            self.views.release()
            i += 1

    def _call(self, op: Op, caller: Any) -> None:
        m, f = op.args["module"], op.args["function"]
        mod = self.v5.modules[m]
        callee = mod.functions[f]
        bound: dict[tuple[int, int], MemoryRange] = {}
        for kind, descs, actual in ((V5_INPUT, callee.inputs, op.args["inputs"]),
                                    (V5_OUTPUT, callee.outputs, op.args["outputs"])):
            for (desc, _shape), arg in zip(descs, actual, strict=True):
                bound[(kind, desc.start)] = caller(arg["memory"])
        k210_base = self.base["k210"]

        def resolve(rng: MemoryRange) -> MemoryRange:
            if rng.location in (V5_INPUT, V5_OUTPUT):
                outer = bound.get((rng.location, rng.start))
                if outer is None:
                    raise TranscodeError(f"{self.where_now}: buffer at {rng.start} is not a parameter of the call")
                return MemoryRange(outer.location, self.dtype(rng), outer.start, rng.size)
            if rng.location == V5_KPU:
                return MemoryRange(V4_KPU, self.dtype(rng), rng.start, rng.size)
            if rng.location == V5_DATA:
                return MemoryRange(V4_MAIN, self.dtype(rng), k210_base + rng.start, rng.size)
            raise TranscodeError(f"{self.where_now}: k210 memory location {rng.location} has no v4 equivalent")

        self._function(m, callee, resolve)

    # ---------------------------------------------------------------------------------- k210
    def _k210(self, ops: list[Any], i: int, resolve: Any) -> int:
        op = ops[i]
        if isinstance(op, KpuConv):
            self._kpu_conv(op, ops, i, resolve)
            return i
        a = op.args
        if op.name == "kpu_upload":
            self.views.check_read(resolve(a["input"]), str(self.where_now))
            self._emit(KPU_UPLOAD, Op("kpu_upload", {"input": resolve(a["input"]), "output": resolve(a["output"]),
                                                     "in_shape": _shape4(a["in_shape"])}))
        elif op.name == "kpu_download":
            if id(op) not in self.folded:
                raise TranscodeError(f"{self.where_now}: no KPU convolution before it produces this map, so it "
                                     "cannot be folded into one (kmodel v4 has no download op)", _HINTS["kpu_download"])
        elif op.name == "copy":
            self._copy(a["input"], a["output"], a["in_shape"], a["in_strides"], a["out_strides"], resolve)
        else:
            raise TranscodeError(f"{self.where_now}: k210 op {op.name} has no v4 form", _DEFAULT_HINT)
        return i

    def _downloads(self, ops: list[Any]) -> dict[int, list[int]]:
        """The positions of ``ops``' KPU downloads by the KPU address they read, computed once per op list."""
        known = self._download_index.get(id(ops))
        if known is None or known[0] is not ops:
            index: dict[int, list[int]] = {}
            for j, op in enumerate(ops):
                if isinstance(op, Op) and op.name == "kpu_download":
                    index.setdefault(op.args["input"].start, []).append(j)
            known = self._download_index[id(ops)] = (ops, index)
        return known[1]

    def _kpu_conv(self, conv: KpuConv, ops: list[Any], i: int, resolve: Any) -> None:
        layer = conv.layer
        main = resolve(conv.main_mem_output) if conv.main_mem_output is not None and conv.main_mem_output.size \
            else None
        oc, oh, ow = layer.out_shape
        want = (conv.batches, oc, oh, ow)
        # the first download of this map after it, unless a KPU conv overwrites the map before (indexed: a
        # function of thousands of KPU layers would otherwise be scanned once per layer)
        found = next((j for j in self._downloads(ops).get(layer.dst_address, ()) if j > i
                      and tuple(ops[j].args["in_shape"]) == want and id(ops[j]) not in self.folded), None)
        for j in range(i + 1, i + 1 if found is None else found + 1):
            nxt = ops[j]
            if j == found:
                target = resolve(nxt.args["output"])
                if main is None:
                    main = MemoryRange(target.location, 1, target.start, int(np.prod(want)))
                    self.report.folded_downloads += 1
                elif (target.location, target.start) != (main.location, main.start):
                    raise TranscodeError(f"{self.where_now}: its output is downloaded twice to different buffers",
                                         _HINTS["kpu_download"])
                self.folded.add(id(nxt))
                break
            if isinstance(nxt, KpuConv) and _overlaps(nxt.layer.dst_address, nxt, layer.dst_address, want):
                break  # the map is overwritten before any download: nothing to fold
        out_layer = layer.replace(send_data_out=1 if main is not None else 0)
        self._emit(KPU_CONV2D, KpuConv(out_layer, conv.batch_norm, conv.activation, conv.weights, conv.batches,
                                       main or MemoryRange(0, 0, 0, 0), 0))

    # ------------------------------------------------------------------------------- stackvm
    def _stackvm(self, op: Op, resolve: Any) -> None:
        a = op.args
        handler = getattr(self, f"_op_{op.name}", None)
        if handler is None:
            raise TranscodeError(f"{self.where_now}: the CPU op {op.name} has no kmodel v4 equivalent",
                                 _HINTS.get(op.name, _DEFAULT_HINT))
        handler(a, resolve)

    def _out(self, rng: MemoryRange, shape: Any, strides: Any, resolve: Any) -> MemoryRange:
        """Where the op writes: the view itself when dense, else scratch memory (a piece of a concatenation)."""
        shape, strides = tuple(int(d) for d in shape), tuple(int(s) for s in strides)
        target = resolve(rng)
        if is_dense(shape, strides):
            return target
        return self.views.write(target, shape, strides, 4 if target.datatype == 0 else 1, str(self.where_now))

    def _in(self, rng: MemoryRange, shape: Any, strides: Any, resolve: Any) -> MemoryRange:
        """The input as a dense v4 buffer: a strided view is first gathered into scratch main memory."""
        shape, strides = tuple(int(d) for d in shape), tuple(int(s) for s in strides)
        src = resolve(rng)
        self.views.check_read(src, str(self.where_now))
        if is_dense(shape, strides):
            return src
        parent = parent_shape(shape, strides)
        if parent is None or len(shape) > 4:
            raise TranscodeError(f"{self.where_now}: it reads a strided view {list(strides)} that v4 cannot "
                                 "gather", _DEFAULT_HINT)
        item = 4 if src.datatype == 0 else 1
        scratch = self.views.scratch(src.datatype, int(np.prod(shape)) * item)
        lead = 4 - len(shape)
        whole = MemoryRange(src.location, src.datatype, src.start, int(np.prod(parent)) * item)
        self._strided_slice(whole, scratch, (1,) * lead + parent, (0,) * 4, (1,) * lead + shape, (1,) * 4)
        return scratch

    def _op_dequantize(self, a: dict, resolve: Any) -> None:
        src = self._in(a["input"], a["shape"], a["in_strides"], resolve)
        dst = self._out(a["output"], a["shape"], a["out_strides"], resolve)
        exact = _dequant_param(a["scale"], a["bias"])
        if exact is not None:
            zp, param = exact
            self._emit(OPCODES["dequantize"], Op("dequantize", {"input": src, "output": dst,
                                                                  "quant_param": {"zero_point": zp, "scale": param}}))
            return
        # No v4 (zero point, scale) reproduces v5's float32 x*scale + bias: convert exactly (x*1 + 0), then
        # multiply and add like v5 does, with two binary ops on constants.
        self._emit(OPCODES["dequantize"], Op("dequantize", {"input": src, "output": dst,
                                                              "quant_param": {"zero_point": 0, "scale": 1.0}}))
        shape = _shape4(a["shape"])
        for op_code, value in ((2, a["scale"]), (0, a["bias"])):
            self._emit(OPCODES["binary"], Op("binary", {
                "input_a": dst, "input_b": self._constant_f32(value), "output": dst, "binary_op": op_code,
                "in_a_shape": shape, "in_b_shape": (1, 1, 1, 1), "out_shape": shape,
                "fused_activation": (-math.inf, math.inf)}))

    def _constant_f32(self, value: float) -> MemoryRange:
        start = align(len(self.constants), 4)
        self.constants = self.constants + bytes(start - len(self.constants)) + struct.pack("<f", value)
        return MemoryRange(V4_CONST, 0, start, 4)

    def _op_quantize(self, a: dict, resolve: Any) -> None:
        src = self._in(a["input"], a["shape"], a["in_strides"], resolve)
        dst = self._out(a["output"], a["shape"], a["out_strides"], resolve)
        bias = float(a["bias"])
        if bias != math.floor(bias) or not -(2**31) <= bias < 2**31:
            raise TranscodeError(f"{self.where_now}: zero point {bias} is not an integer", _DEFAULT_HINT)
        count = int(np.prod(a["shape"]))
        if count % 2:
            self.report.notes.append(f"{self.where_now}: odd length {count}: the K210 runtime rounds its last "
                                     "element half away from zero (v5: half to even)")
        self._emit(OPCODES["quantize"], Op("quantize", {"input": src, "output": dst,
                                                          "quant_param": {"zero_point": int(bias),
                                                                          "scale": float(a["scale"])}}))

    def _op_binary(self, a: dict, resolve: Any) -> None:
        if a["binary_op"] > 5 or a["datatype"] != 9:
            raise TranscodeError(f"{self.where_now}: binary op {a['binary_op']} on datatype {a['datatype']} has no "
                                 "v4 form (v4: float add/sub/mul/div/min/max)", _DEFAULT_HINT)
        args = {}
        for key, shape_key, stride_key in (("input_a", "in_a_shape", "in_a_strides"),
                                           ("input_b", "in_b_shape", "in_b_strides"),
                                           ("output", "out_shape", "out_strides")):
            reader = self._out if key == "output" else self._in
            args[key] = reader(a[key], a[shape_key], a[stride_key], resolve)
        shapes = [_shape4(a[k]) for k in ("in_a_shape", "in_b_shape", "out_shape")]
        for s in shapes[:2]:
            if any(d not in (o, 1) for d, o in zip(s, shapes[2], strict=True)):
                raise TranscodeError(f"{self.where_now}: broadcast {s} -> {shapes[2]} is not supported by v4")
        self._emit(OPCODES["binary"], Op("binary", {**args, "binary_op": a["binary_op"], "in_a_shape": shapes[0],
                                                      "in_b_shape": shapes[1], "out_shape": shapes[2],
                                                      "fused_activation": (a["fused_clamp_low"],
                                                                           a["fused_clamp_high"])}))

    def _op_conv2d(self, a: dict, resolve: Any) -> None:
        n, c, h, w = _shape4(a["in_shape"])
        oc, icg, kh, kw = a["w_shape"]
        src = self._in(a["input"], a["in_shape"], a["in_strides"], resolve)
        wr, br = a["weights"], a["bias"]
        if wr.location != V5_RDATA or br.location != V5_RDATA:
            raise TranscodeError(f"{self.where_now}: weights that are not constants", _DEFAULT_HINT)
        weights = _read_f32(self.constants, wr.start, a["w_shape"], a["w_strides"])
        bias = _read_f32(self.constants, br.start, (oc,), a["bias_strides"][-1:] or (1,))
        (pt, pb, pi), (pl, pr, pj) = a["padding_h"], a["padding_w"]
        if pi or pj:
            raise TranscodeError(f"{self.where_now}: interior (dilated input) padding", _DEFAULT_HINT)
        out = a["output"]
        oh = (h + pt + pb - ((kh - 1) * a["dilation_h"] + 1) + a["stride_h"]) // a["stride_h"]
        ow = (w + pl + pr - ((kw - 1) * a["dilation_w"] + 1) + a["stride_w"]) // a["stride_w"]
        dst = self._out(out, (n, oc, oh, ow), a["out_strides"], resolve)
        self._emit(OPCODES["conv2d"], Op("conv2d", {
            "input": src, "output": dst, "in_shape": (n, c, h, w), "groups": a["groups"], "out_channels": oc,
            "padding_h": (pt, pb), "padding_w": (pl, pr), "filter_h": kh, "filter_w": kw,
            "stride_h": a["stride_h"], "stride_w": a["stride_w"], "dilation_h": a["dilation_h"],
            "dilation_w": a["dilation_w"], "fused_activation": (a["fused_clamp_low"], a["fused_clamp_high"]),
            "weights": weights.ravel(), "bias": bias}))

    def _op_pad(self, a: dict, resolve: Any) -> None:
        if a["pad_mode"] != 0 or any(p[2] for p in a["paddings"]) or len(a["shape"]) > 4:
            raise TranscodeError(f"{self.where_now}: only constant padding of up to 4-D tensors exists in v4",
                                 _DEFAULT_HINT)
        shape = _shape4(a["shape"])
        pads = [(0, 0)] * (4 - len(a["paddings"])) + [(p[0], p[1]) for p in a["paddings"]]
        out_shape = tuple(d + b + e for d, (b, e) in zip(shape, pads, strict=True))
        src = self._in(a["input"], a["shape"], a["in_strides"], resolve)
        dst = self._out(a["output"], out_shape[4 - len(a["shape"]):], a["out_strides"], resolve)
        value = a["pad_value"]
        storage = struct.pack("<f", float(value)) if src.datatype == 0 else bytes([int(value) & 0xFF, 0, 0, 0])
        self._emit(OPCODES["pad"], Op("pad", {"input": src, "output": dst, "in_shape": shape, "paddings": tuple(pads),
                                              "pad_value": {"datatype": src.datatype, "storage": storage}}))

    def _op_slice(self, a: dict, resolve: Any) -> None:
        rank = len(a["shape"])
        if rank > 4 or any(i32(s) == 0 for s in a["strides"]):
            raise TranscodeError(f"{self.where_now}: slice of rank {rank} or with a zero stride", _DEFAULT_HINT)
        lead = 4 - rank
        begin = (0,) * lead + tuple(int(b) for b in a["begins"])
        # both runtimes loop `stride > 0 ? i < end : i > end` (a negative stride runs down to end + 1)
        end = (1,) * lead + tuple(min(i32(e), d) if i32(s) > 0 else max(i32(e), -1)
                                  for e, s, d in zip(a["ends"], a["strides"], a["shape"], strict=True))
        strides = (1,) * lead + tuple(i32(s) for s in a["strides"])
        out_shape = tuple(len(range(b, e, s)) for b, e, s in zip(begin, end, strides, strict=True))
        src = self._in(a["input"], a["shape"], a["in_strides"], resolve)
        dst = self._out(a["output"], out_shape[lead:], a["out_strides"], resolve)
        self._strided_slice(src, dst, _shape4(a["shape"]), begin, end, strides)

    def _strided_slice(self, src: MemoryRange, dst: MemoryRange, shape: tuple, begin: tuple, end: tuple,
                       strides: tuple) -> None:
        self._emit(OPCODES["strided_slice"], Op("strided_slice", {
            "input": src, "output": dst, "in_shape": shape, "begin": begin, "end": end, "strides": strides,
            "begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0}))

    def _op_transpose(self, a: dict, resolve: Any) -> None:
        rank = len(a["shape"])
        if rank > 4:
            raise TranscodeError(f"{self.where_now}: transpose of rank {rank}", _DEFAULT_HINT)
        lead = 4 - rank
        perm = tuple(range(lead)) + tuple(p + lead for p in a["perm"])
        shape = _shape4(a["shape"])
        out_shape = tuple(shape[p] for p in perm)
        src = self._in(a["input"], a["shape"], a["in_strides"], resolve)
        dst = self._out(a["output"], out_shape[lead:], a["out_strides"], resolve)
        self._emit(OPCODES["transpose"], Op("transpose", {"input": src, "output": dst, "in_shape": shape,
                                                            "perm": perm}))

    def _op_lut1d(self, a: dict, resolve: Any) -> None:
        src = self._in(a["input"], a["shape"], a["in_strides"], resolve)
        dst = self._out(a["output"], a["shape"], a["out_strides"], resolve)
        table = resolve(a["table"])
        if src.datatype != 1 or table.location != V4_CONST or table.size != 256:
            raise TranscodeError(f"{self.where_now}: only uint8 lookup tables of 256 constants exist in v4")
        self._emit(OPCODES["table_lookup1d"], Op("table_lookup1d", {"input": src, "table": table, "output": dst}))

    def _op_reduce(self, a: dict, resolve: Any) -> None:
        shape = tuple(int(d) for d in a["in_shape"])
        if a["datatype"] != 9 or len(shape) > 4:
            raise TranscodeError(f"{self.where_now}: reduce of a rank-{len(shape)} tensor of datatype "
                                 f"{a['datatype']} (v4 reduces float32 of up to 4 dimensions)", _HINTS["reduce"])
        axes = {int(x) for x in a["axis"]}
        lead = 4 - len(shape)
        shape4 = _shape4(shape)
        out4 = tuple(1 if i - lead in axes else d for i, d in enumerate(shape4))
        src = self._in(a["input"], shape, a["in_strides"], resolve)
        dst = self._out(a["output"], reduced_shape(shape, tuple(axes), bool(a["keep_dims"])), a["out_strides"],
                        resolve)
        kind, init = int(a["reduce_op"]), float(a["init_value"])
        block = int(np.prod([shape[x] for x in axes if x < len(shape)], dtype=np.int64))
        if kind in (_REDUCE_MIN, _REDUCE_MAX):  # nncase 1.9 starts these from the type's extremes
            init = float(np.finfo(np.float32).max if kind == _REDUCE_MIN else np.finfo(np.float32).min)
        # v4's mean multiplies the sum by (output size / input size) in float32, v5 divides it by the block
        # size: equal when the block is a power of two; otherwise sum, then divide like v5 does
        exact_mean = kind == _REDUCE_MEAN and block & (block - 1) == 0 and block < 2**24
        if kind == _REDUCE_MEAN and not exact_mean:
            kind = _REDUCE_SUM
        self._emit(OPCODES["reduce"], Op("reduce", {"input": src, "output": dst, "reduce_op": kind,
                                                    "in_shape": shape4, "out_shape": out4, "init_value": init}))
        if int(a["reduce_op"]) == _REDUCE_MEAN and not exact_mean:
            self._emit(OPCODES["binary"], Op("binary", {
                "input_a": dst, "input_b": self._constant_f32(float(block)), "output": dst, "binary_op": 3,
                "in_a_shape": out4, "in_b_shape": (1, 1, 1, 1), "out_shape": out4,
                "fused_activation": (-math.inf, math.inf)}))

    def _op_reduce_window2d(self, a: dict, resolve: Any) -> None:
        shape = tuple(int(d) for d in a["in_shape"])
        if a["datatype"] != 9 or len(shape) != 4 or a["padding_h"][2] or a["padding_w"][2]:
            raise TranscodeError(f"{self.where_now}: pooling of a rank-{len(shape)} tensor of datatype "
                                 f"{a['datatype']} or with interior padding (v4 pools float32 NCHW maps)",
                                 _HINTS["reduce_window2d"])
        n, c, h, w = shape
        oh = (h + sum(a["padding_h"][:2]) - ((a["filter_h"] - 1) * a["dilation_h"] + 1) + a["stride_h"]) // a["stride_h"]
        ow = (w + sum(a["padding_w"][:2]) - ((a["filter_w"] - 1) * a["dilation_w"] + 1) + a["stride_w"]) // a["stride_w"]
        src = self._in(a["input"], shape, a["in_strides"], resolve)
        dst = self._out(a["output"], (n, c, oh, ow), a["out_strides"], resolve)
        fields = {k: a[k] for k in ("filter_h", "filter_w", "stride_h", "stride_w", "dilation_h", "dilation_w")}
        self._emit(OPCODES["reduce_window2d"], Op("reduce_window2d", {
            "input": src, "output": dst, "reduce_op": int(a["reduce_op"]), "in_shape": shape,
            "padding_h": tuple(a["padding_h"][:2]), "padding_w": tuple(a["padding_w"][:2]), **fields,
            "init_value": float(a["init_value"]), "fused_activation": (a["fused_clamp_low"], a["fused_clamp_high"])}))

    def _op_copy(self, a: dict, resolve: Any) -> None:
        self._copy(a["input"], a["output"], a["shape"], a["in_strides"], a["out_strides"], resolve)

    def _copy(self, src_rng: MemoryRange, dst_rng: MemoryRange, shape: Any, in_strides: Any, out_strides: Any,
              resolve: Any) -> None:
        shape = tuple(int(d) for d in shape)
        if len(shape) > 4:
            raise TranscodeError(f"{self.where_now}: copy of rank {len(shape)}", _DEFAULT_HINT)
        parent = parent_shape(shape, tuple(int(s) for s in in_strides))
        if parent is None:
            raise TranscodeError(f"{self.where_now}: strided copy {list(in_strides)} that is not a slice of a "
                                 "dense tensor", _DEFAULT_HINT)
        src = resolve(src_rng)
        self.views.check_read(src, str(self.where_now))
        dst = self._out(dst_rng, shape, out_strides, resolve)
        item = 4 if src.datatype == 0 else 1
        src = MemoryRange(src.location, src.datatype, src.start, int(np.prod(parent)) * item)
        lead = 4 - len(shape)
        self._strided_slice(src, dst, (1,) * lead + parent, (0,) * 4, (1,) * lead + shape, (1,) * 4)

    # ---------------------------------------------------------------------------------- emit
    def _emit(self, opcode: int, op: Op | KpuConv) -> None:
        name = "kpu_conv2d" if isinstance(op, KpuConv) else op.name
        self.nodes.append(V4Node(opcode, name, op))


def transcode(model: Kmodel) -> Kmodel:
    """A v5 :class:`Kmodel` (nncase 1.9) -> the equivalent v4 :class:`Kmodel` (``report`` attached)."""
    t = _Transcoder(model)
    v4 = t.run()
    from k210tool.compile.kmodel.v4 import write_v4_model

    size = len(write_v4_model(v4))
    out = _common(v4, size)
    out.report = t.report
    return out


# ------------------------------------------------------------------------------------- helpers
def _keep_referenced(nodes: list[V4Node], constants: bytes) -> bytes:
    """The constants v4 ops still read, packed (each range moved, the ops' ranges updated in place).

    v5 keeps every constant in the stackvm ``.rdata``; v4 stores a CPU conv's weights and bias inside the op
    itself, so copying ``.rdata`` whole would store them twice."""
    moved: dict[tuple[int, int], int] = {}
    out = bytearray()

    def remap(value: Any) -> Any:
        if isinstance(value, MemoryRange) and value.location == V4_CONST:
            key = (value.start, value.size)
            if key not in moved:
                start = align(len(out), 8)
                out.extend(bytes(start - len(out)))
                out.extend(constants[value.start : value.start + value.size])
                moved[key] = start
            return MemoryRange(V4_CONST, value.datatype, moved[key], value.size)
        return value

    for node in nodes:
        if isinstance(node.op, Op):
            node.op.args = {k: remap(v) for k, v in node.op.args.items()}
    return bytes(out)


def _shape4(shape: Any) -> tuple[int, int, int, int]:
    s = tuple(int(d) for d in shape)
    if len(s) > 4:
        raise TranscodeError(f"tensor of rank {len(s)}: kmodel v4 shapes have 4 dimensions")
    return (1,) * (4 - len(s)) + s  # type: ignore[return-value]


def _read_f32(blob: bytes, start: int, shape: Any, strides: Any) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    strides = tuple(int(s) * 4 for s in strides)
    extent = sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 4
    if start + extent > len(blob):
        raise TranscodeError(f"constant at {start} lies outside .rdata")
    arr = np.ndarray(shape, "<f4", buffer=blob, offset=start, strides=strides)
    return np.ascontiguousarray(arr, np.float32)


def _dequant_param(scale: float, bias: float) -> tuple[int, float] | None:
    """v5 computes ``x*scale + bias``; the K210 v4 runtime ``x*(1/p) + (-zp)*(1/p)``: (zp, p) giving the same
    float32 results, or None when no float32 ``p`` has ``1/p`` equal to ``scale``."""
    s32 = np.float32(scale)
    if not np.isfinite(s32) or s32 == 0:
        return None
    zp = int(round(-float(bias) / float(scale)))
    if np.float32(np.float32(-zp) * s32) != np.float32(bias):
        return None
    p = np.float32(1.0) / s32
    for _ in range(8):  # the right p, if any, is within a few ulps of 1/scale
        inv = np.float32(1.0) / p
        if inv == s32:
            return zp, float(p)
        p = np.nextafter(p, np.float32(np.inf) if inv > s32 else np.float32(0))
    return None


def _overlaps(start: int, conv: KpuConv, other: int, shape: tuple[int, ...]) -> bool:
    from k210tool.compile.kmodel.layout import kpu_bytes

    c, h, w = conv.layer.out_shape
    end = start + conv.batches * kpu_bytes(c, h, w)
    other_end = other + shape[0] * kpu_bytes(*shape[1:])
    return start < other_end and other < end


def _detail(op: Any) -> str:
    if isinstance(op, KpuConv):
        c, h, w = op.layer.in_shape
        oc, oh, ow = op.layer.out_shape
        return f"{c}x{h}x{w} -> {oc}x{oh}x{ow}"
    a = op.args
    for key in ("shape", "in_shape", "in_a_shape", "shape_src", "shape_src1"):
        if a.get(key) is not None:
            return f"input {list(a[key])}"
    return ""
