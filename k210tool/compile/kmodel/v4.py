"""kmodel v4 (nncase v0.2 / SDK ``lib/nncase/v0``): reader and writer.

Layout (SDK ``lib/nncase/v0/include/runtime/model.h``, writer nncase v0.2.0-beta4 ``src/codegen/codegen.cpp``):
a ten-u32 header {'KMDL', 4, flags, target, constants, main_mem, nodes, inputs, outputs, reserved0},
input memory ranges, an int32[4] shape per input, output memory ranges, the constants blob, one
{opcode, body_size} per node, then the bodies, each padded to 8 bytes (ncc leaves the last one's
padding out of the file; so does this writer). Op bodies follow ``runtime/neutral/neutral_ops_body.h``,
``runtime/cpu/cpu_ops_body.h`` and ``runtime/k210/k210_ops_body.h``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from k210tool.compile.kmodel.binary import Reader, Writer
from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.fields import Layout, read_fields, write_fields
from k210tool.compile.kmodel.kpu import ACT_TABLE_BYTES, LAYER_WORDS, Activation, BatchNorm, read_layer
from k210tool.compile.kmodel.model import (
    V4_DATATYPES,
    V4_KPU,
    V4_MAIN,
    Kmodel,
    KpuConv,
    Layer,
    MemoryRange,
    Op,
    TensorDesc,
    V4Model,
    V4Node,
)

MAGIC = b"LDMK"
KPU_UPLOAD, KPU_CONV2D = 0x2001, 0x2002

_IO = (("input", "range"), ("output", "range"))
_CONV_COMMON = (("padding_h", "padding"), ("padding_w", "padding"), ("filter_h", "i32"), ("filter_w", "i32"),
                ("stride_h", "i32"), ("stride_w", "i32"), ("dilation_h", "i32"), ("dilation_w", "i32"))
_Q_OUT = (("input_offset", "i32"), ("filter_offset", "i32"), ("output_mul", "i32"), ("output_shift", "i32"),
          ("output_offset", "i32"))


def _kernel(f: dict[str, Any]) -> int:
    return int(f["filter_h"]) * int(f["filter_w"])


# opcode -> (name, layout). runtime_op.def of SDK lib/nncase/v0.
OPS: dict[int, tuple[str, Layout]] = {
    0x00: ("binary", (("input_a", "range"), ("input_b", "range"), ("output", "range"), ("binary_op", "u32"),
                      ("in_a_shape", "shape"), ("in_b_shape", "shape"), ("out_shape", "shape"),
                      ("fused_activation", "vrange"))),
    0x01: ("concat", (("output", "range"), ("inner_size", "u32"), ("outer_size", "u32"), ("inputs_count", "u32"),
                      ("inputs", "range[]", lambda f: f["inputs_count"]), ("dims", "i32[]", lambda f: f["inputs_count"]))),
    0x02: ("conv2d", _IO + (("in_shape", "shape"), ("groups", "i32"), ("out_channels", "i32")) + _CONV_COMMON + (
        ("fused_activation", "vrange"),
        ("weights", "f32[]", lambda f: f["out_channels"] * (f["in_shape"][1] // f["groups"]) * _kernel(f)),
        ("bias", "f32[]", lambda f: f["out_channels"]))),
    0x03: ("dequantize", _IO + (("quant_param", "quant"),)),
    0x04: ("matmul", (("input_a", "range"), ("input_b", "range"), ("output", "range"), ("a_rows", "i32"),
                      ("a_cols", "i32"), ("b_cols", "i32"), ("fused_activation", "vrange"),
                      ("bias", "f32[]", lambda f: f["b_cols"]))),
    0x05: ("pad", _IO + (("in_shape", "shape"), ("paddings", "paddings"), ("pad_value", "scalar"))),
    0x06: ("quantize", _IO + (("quant_param", "quant"),)),
    0x07: ("reduce", _IO + (("reduce_op", "u32"), ("in_shape", "shape"), ("out_shape", "shape"),
                            ("init_value", "f32"))),
    0x08: ("reduce_window2d", _IO + (("reduce_op", "u32"), ("in_shape", "shape")) + _CONV_COMMON + (
        ("init_value", "f32"), ("fused_activation", "vrange"))),
    0x09: ("memory_copy", _IO),
    0x0A: ("resize_image", _IO + (("in_shape", "shape"), ("out_h", "i32"), ("out_w", "i32"), ("mode", "u32"),
                                  ("align_corners", "u32"))),  # a bool plus the struct's 3 tail bytes
    0x0B: ("softmax", _IO + (("inner_size", "i32"), ("outer_size", "i32"), ("beta", "f32"))),
    0x0C: ("transpose", _IO + (("in_shape", "shape"), ("perm", "shape"))),
    0x0D: ("strided_slice", _IO + (("in_shape", "shape"), ("begin", "shape"), ("end", "shape"), ("strides", "shape"),
                                   ("begin_mask", "i32"), ("end_mask", "i32"), ("ellipsis_mask", "i32"),
                                   ("new_axis_mask", "i32"), ("shrink_axis_mask", "i32"))),
    0x0E: ("unary", _IO + (("unary_op", "u32"),)),
    0x0F: ("quantized_conv2d", _IO + (("in_shape", "shape"), ("groups", "i32"), ("out_channels", "i32"))
           + _CONV_COMMON + _Q_OUT + (
        ("bias", "i32[]", lambda f: f["out_channels"]),
        ("weights", "u8[]", lambda f: f["out_channels"] * (f["in_shape"][1] // f["groups"]) * _kernel(f)))),
    0x10: ("quantized_matmul", (("input_a", "range"), ("input_b", "range"), ("output", "range"), ("a_rows", "i32"),
                                ("a_cols", "i32"), ("b_cols", "i32"), ("input_a_offset", "i32"),
                                ("input_b_offset", "i32"), ("output_mul", "i32"), ("output_shift", "i32"),
                                ("output_offset", "i32"), ("bias", "i32[]", lambda f: f["b_cols"]))),
    0x11: ("quantized_binary", (("input_a", "range"), ("input_b", "range"), ("output", "range"),
                                ("binary_op", "u32"), ("in_a_shape", "shape"), ("in_b_shape", "shape"),
                                ("out_shape", "shape"), ("input_a_offset", "i32"), ("input_a_mul", "i32"),
                                ("input_a_shift", "i32"), ("input_b_offset", "i32"), ("input_b_mul", "i32"),
                                ("input_b_shift", "i32"), ("output_offset", "i32"), ("output_mul", "i32"),
                                ("output_shift", "i32"))),
    0x12: ("table_lookup1d", (("input", "range"), ("table", "range"), ("output", "range"))),
    0x13: ("conv2d_transpose", _IO + (("in_shape", "shape"), ("out_shape", "shape"), ("groups", "i32"))
           + _CONV_COMMON + (
        ("fused_activation", "vrange"),
        ("weights", "f32[]", lambda f: f["out_shape"][1] * (f["in_shape"][1] // f["groups"]) * _kernel(f)),
        ("bias", "f32[]", lambda f: f["out_shape"][1]))),
    0x14: ("nnil_unary_method", _IO + (("body", "rest"),)),
    0x1001: ("cpu_conv2d", _IO + (("in_shape", "shape"), ("out_channels", "i32")) + _CONV_COMMON + (
        ("fused_activation", "vrange"),
        ("weights", "f32[]", lambda f: f["out_channels"] * f["in_shape"][3] * _kernel(f)),
        ("bias", "f32[]", lambda f: f["out_channels"]))),
    0x1002: ("cpu_depthwise_conv2d", _IO + (("in_shape", "shape"),) + _CONV_COMMON + (
        ("fused_activation", "vrange"),
        ("weights", "f32[]", lambda f: f["in_shape"][3] * _kernel(f)),
        ("bias", "f32[]", lambda f: f["in_shape"][3]))),
    0x1003: ("cpu_reduce_window2d", _IO + (("reduce_op", "u32"), ("in_shape", "shape")) + _CONV_COMMON + (
        ("init_value", "f32"), ("fused_activation", "vrange"))),
    0x1004: ("cpu_quantized_conv2d", _IO + (("in_shape", "shape"), ("out_channels", "i32")) + _CONV_COMMON
             + _Q_OUT + (
        ("weights", "u8[]", lambda f: f["out_channels"] * f["in_shape"][3] * _kernel(f)),
        ("bias", "i32[]", lambda f: f["out_channels"]))),
    0x1005: ("cpu_quantized_depthwise_conv2d", _IO + (("in_shape", "shape"),) + _CONV_COMMON + _Q_OUT + (
        ("weights", "u8[]", lambda f: f["in_shape"][3] * _kernel(f)),
        ("bias", "i32[]", lambda f: f["in_shape"][3]))),
    KPU_UPLOAD: ("kpu_upload", _IO + (("in_shape", "shape"),)),
}
OPCODES = {name: code for code, (name, _layout) in OPS.items()} | {"kpu_conv2d": KPU_CONV2D}


def op_name(opcode: int) -> str:
    if opcode == KPU_CONV2D:
        return "kpu_conv2d"
    return OPS[opcode][0] if opcode in OPS else f"unknown(0x{opcode:X})"


# ------------------------------------------------------------------------------------------- read
def read_v4(data: bytes) -> Kmodel:
    r = Reader(data, what="kmodel v4")
    magic, version, flags, target, n_const, main_mem, n_nodes, n_in, n_out, reserved0 = r.unpack("4s9I", "header")
    if magic != MAGIC or version != 4:
        raise KmodelError(f"not a kmodel v4 file (magic {magic!r}, version {version})")
    inputs = [_range(r, f"input {i}") for i in range(_count(r, n_in, 16, "inputs"))]
    shapes = [tuple(r.unpack("4i", f"input {i} shape")) for i in range(n_in)]
    outputs = [_range(r, f"output {i}") for i in range(_count(r, n_out, 16, "outputs"))]
    constants = r.bytes(n_const, "constants")
    headers = [r.unpack("2I", f"node {i} header") for i in range(_count(r, n_nodes, 8, "node headers"))]
    nodes: list[V4Node] = []
    pos = r.pos
    alignment = 256
    for i, (opcode, body_size) in enumerate(headers):
        end = pos + body_size
        if end > len(data):
            # ncc omits the last body's alignment padding from the file: tolerate exactly that.
            if i != len(headers) - 1 or end - len(data) >= 8:
                raise KmodelError(f"kmodel v4: node {i} ({op_name(opcode)}) body overruns the file "
                                  f"(ends at {end}, file has {len(data)} bytes)")
            end = len(data)
        body = Reader(data, pos, end, f"kmodel v4 node {i} ({op_name(opcode)})")
        nodes.append(V4Node(opcode, op_name(opcode), _read_body(opcode, body), body_size))
        op = nodes[-1].op
        if isinstance(op, KpuConv) and (pos + 24 + 8 * LAYER_WORDS + op.layer.get("bwsx_base_addr")) % 256:
            alignment = 8  # batch-norm tables not 256-aligned: a compact file (k210tool's transcoder)
        pos += body_size
    model = V4Model(flags, target, main_mem, inputs, shapes, outputs, constants, nodes, reserved0,  # type: ignore[arg-type]
                    alignment)
    return _common(model, len(data))


def _count(r: Reader, n: int, item: int, what: str) -> int:
    if n * item > r.remaining():
        raise KmodelError(f"kmodel v4: {n} {what} do not fit in the {r.remaining()} bytes left")
    return n


def _range(r: Reader, what: str) -> MemoryRange:
    t, dt, start, size = r.unpack("4I", what)
    return MemoryRange(t, dt, start, size)


def _read_body(opcode: int, r: Reader) -> Op | KpuConv:
    if opcode == KPU_CONV2D:
        return _read_kpu_conv(r)
    if opcode not in OPS:
        raise KmodelError(f"kmodel v4: unknown opcode 0x{opcode:X} ({r.what})",
                          "the file was not made by nncase v0.2 or is corrupt")
    name, layout = OPS[opcode]
    return Op(name, read_fields(r, layout))


def _read_kpu_conv(r: Reader) -> KpuConv:
    out = _range(r, "main_mem_output")
    batches, reserved0 = r.unpack("iI", "batches")
    layer = read_layer(r.unpack(f"{LAYER_WORDS}Q", "layer argument"))
    r.skip(layer.get("bwsx_base_addr"), "padding before the batch-norm table")
    bn = BatchNorm(r.array("<u8", layer.out_channels, "batch-norm table"))
    r.skip(layer.get("active_addr"), "padding before the activation table")
    act = Activation.from_bytes(r.bytes(ACT_TABLE_BYTES, "activation table"))
    r.skip(layer.get("para_start_addr"), "padding before the weights")
    weights = r.array("u1", layer.weights_count(), "weights")
    return KpuConv(layer, bn, act, weights, batches, out, reserved0)


# ------------------------------------------------------------------------------------------ write
def write_v4_model(model: V4Model) -> bytes:
    """Serialise a :class:`V4Model`; reading a v4 file and writing it back gives the same bytes."""
    w = Writer()
    w.pack("4s9I", MAGIC, 4, model.flags, model.target, len(model.constants), model.main_mem,
           len(model.nodes), len(model.inputs), len(model.outputs), model.reserved0)
    for rng in model.inputs:
        w.pack("4I", rng.location, rng.datatype, rng.start, rng.size)
    for shape in model.input_shapes:
        w.pack("4i", *shape)
    for rng in model.outputs:
        w.pack("4I", rng.location, rng.datatype, rng.start, rng.size)
    w.raw(model.constants)
    headers_at = w.pos
    w.raw(bytes(8 * len(model.nodes)))
    unpadded_end = w.pos
    for i, node in enumerate(model.nodes):
        start = w.pos
        _write_body(w, node, model.table_alignment)
        unpadded_end = w.pos
        w.align(8)
        w.patch(headers_at + 8 * i, "2I", node.opcode, w.pos - start)
    # ncc counts the last body's alignment padding in its size but does not write it; nor do we.
    del w.buf[unpadded_end:]
    return bytes(w.buf)


def _write_body(w: Writer, node: V4Node, table_alignment: int = 256) -> None:
    op = node.op
    if isinstance(op, KpuConv):
        _write_kpu_conv(w, op, table_alignment)
        return
    if node.opcode not in OPS:
        raise KmodelError(f"cannot write unknown v4 opcode 0x{node.opcode:X}")
    write_fields(w, OPS[node.opcode][1], op.args)


def _write_kpu_conv(w: Writer, conv: KpuConv, table_alignment: int = 256) -> None:
    out = conv.main_mem_output or MemoryRange(0, 0, 0, 0)
    w.pack("4I", out.location, out.datatype, out.start, out.size)
    w.pack("iI", conv.batches, conv.reserved0)
    layer_at = w.pos
    w.raw(bytes(8 * LAYER_WORDS))
    bn_pad = w.align(table_alignment)
    w.raw(conv.batch_norm.words.astype("<u8"))
    act_pad = w.align(256)
    w.raw(conv.activation.to_bytes())
    w_pad = w.align(table_alignment)
    w.raw(np.asarray(conv.weights, dtype=np.uint8))
    # v4 keeps the padding-byte counts in the three address fields (SDK k210_ops_body.h).
    layer = conv.layer.replace(bwsx_base_addr=bn_pad, active_addr=act_pad, para_start_addr=w_pad)
    w.patch(layer_at, f"{LAYER_WORDS}Q", *layer.words)


# ----------------------------------------------------------------------------------------- common
def _common(model: V4Model, size: int) -> Kmodel:
    from k210tool.compile.kmodel.describe import describe_op

    inputs = [TensorDesc(f"input{i}", tuple(model.input_shapes[i]), V4_DATATYPES.get(rng.datatype, "?"), rng)
              for i, rng in enumerate(model.inputs)]
    outputs = [TensorDesc(f"output{i}", (rng.size // max(1, 4 if rng.datatype == 0 else 1),),
                          V4_DATATYPES.get(rng.datatype, "?"), rng) for i, rng in enumerate(model.outputs)]
    layers = []
    kpu_peak = 0
    for i, node in enumerate(model.nodes):
        kpu = node.op.layer if isinstance(node.op, KpuConv) else None
        placement = "KPU" if node.opcode in (KPU_UPLOAD, KPU_CONV2D) else "CPU"
        layers.append(Layer(i, node.name, placement, f"node {i}", describe_op(node.op, 4), kpu))
        kpu_peak = max(kpu_peak, _kpu_end(node))
    memory = {"main": model.main_mem, "constants": len(model.constants), "kpu_peak": kpu_peak}
    km = Kmodel(4, inputs, outputs, memory, layers, size, v4=model)
    return km


def _kpu_end(node: V4Node) -> int:
    from k210tool.compile.kmodel.layout import kpu_bytes

    if isinstance(node.op, KpuConv):
        c, h, w = node.op.layer.out_shape
        return node.op.layer.dst_address + kpu_bytes(c, h, w) * max(1, node.op.batches)
    if node.opcode == KPU_UPLOAD:
        out = node.op.args["output"]
        return out.start + out.size if out.location == V4_KPU else 0
    return 0


__all__ = ["read_v4", "write_v4_model", "OPS", "OPCODES", "KPU_UPLOAD", "KPU_CONV2D", "V4_MAIN", "op_name"]
