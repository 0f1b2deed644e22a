"""kmodel v3 (nncase v0.1 ``ncc``, read by the standalone SDK's C runtime and MaixPy/CanMV): reader.

Layout (SDK ``lib/drivers/include/kpu.h``): seven u32 {version=3, flags, arch, layers, max_start_address,
main_mem_usage, output_count}, ``output_count`` x {address, size}, one {type, body_size} per layer, then
the bodies. A K210_CONV body holds file offsets of its layer words, weights, BN and activation tables.
"""

from __future__ import annotations

from k210tool.compile.kmodel.binary import Reader
from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.fields import Layout, read_fields
from k210tool.compile.kmodel.kpu import ACT_TABLE_BYTES, LAYER_WORDS, Activation, BatchNorm, read_layer
from k210tool.compile.kmodel.model import Kmodel, KpuConv, Layer, MemoryRange, TensorDesc, V3Layer, V3Model

K210_CONV = 10240
_IO = (("flags", "u32"), ("main_mem_in_address", "u32"), ("main_mem_out_address", "u32"))
_SHAPE3 = lambda p: ((p + "_width", "u32"), (p + "_height", "u32"), (p + "_channels", "u32"))  # noqa: E731
_POOL = _IO + _SHAPE3("in") + _SHAPE3("out") + (
    ("kernel_width", "u32"), ("kernel_height", "u32"), ("stride_width", "u32"), ("stride_height", "u32"),
    ("padding_width", "u32"), ("padding_height", "u32"))
_RESIZE = _IO + _SHAPE3("in") + (("out_width", "u32"), ("out_height", "u32"), ("align_corners", "u32"))
_GAP = _IO + (("kernel_size", "u32"), ("channels", "u32"))
_CHANNELS = _IO + (("channels", "u32"),)
_QUANT = _IO + (("count", "u32"), ("scale", "f32"), ("bias", "f32"))

# type -> (name, layout): kpu_model_layer_type_t and the kpu_model_*_argument_t structs of kpu.h.
LAYERS: dict[int, tuple[str, Layout]] = {
    1: ("ADD", (("flags", "u32"), ("main_mem_in_a_address", "u32"), ("main_mem_in_b_address", "u32"),
                ("main_mem_out_address", "u32"), ("count", "u32"))),
    2: ("QUANTIZED_ADD", (("flags", "u32"), ("main_mem_in_a_address", "u32"), ("main_mem_in_b_address", "u32"),
                          ("main_mem_out_address", "u32"), ("count", "u32"), ("in_a_offset", "i32"),
                          ("in_a_mul", "i32"), ("in_a_shift", "i32"), ("in_b_offset", "i32"), ("in_b_mul", "i32"),
                          ("in_b_shift", "i32"), ("out_offset", "i32"), ("out_mul", "i32"), ("out_shift", "i32"))),
    3: ("GLOBAL_MAX_POOL2D", _GAP),
    4: ("QUANTIZED_GLOBAL_MAX_POOL2D", _GAP),
    5: ("GLOBAL_AVERAGE_POOL2D", _GAP),
    6: ("QUANTIZED_GLOBAL_AVERAGE_POOL2D", _GAP),
    7: ("MAX_POOL2D", _POOL),
    8: ("QUANTIZED_MAX_POOL2D", _POOL),
    9: ("AVERAGE_POOL2D", _POOL + (("act", "u32"),)),
    10: ("QUANTIZED_AVERAGE_POOL2D", _POOL + (("act", "u32"),)),
    11: ("QUANTIZE", _QUANT),
    12: ("DEQUANTIZE", _QUANT),
    13: ("REQUANTIZE", _IO + (("count", "u32"), ("table", "u8[]", lambda f: 256))),
    14: ("L2_NORMALIZATION", _CHANNELS),
    15: ("SOFTMAX", _CHANNELS),
    16: ("CONCAT", (("flags", "u32"), ("main_mem_out_address", "u32"), ("input_count", "u32"),
                   ("inputs_mem", "i32[]", lambda f: 2 * f["input_count"]))),
    17: ("QUANTIZED_CONCAT", (("flags", "u32"), ("main_mem_out_address", "u32"), ("input_count", "u32"),
                             ("inputs_mem", "i32[]", lambda f: 2 * f["input_count"]))),
    18: ("FULLY_CONNECTED", _IO + (("in_channels", "u32"), ("out_channels", "u32"), ("act", "u32"),
                                   ("weights", "f32[]", lambda f: f["in_channels"] * f["out_channels"]),
                                   ("bias", "f32[]", lambda f: f["out_channels"]))),
    20: ("TENSORFLOW_FLATTEN", _IO + _SHAPE3("")),
    21: ("QUANTIZED_TENSORFLOW_FLATTEN", _IO + _SHAPE3("")),
    22: ("RESIZE_NEAREST_NEIGHBOR", _RESIZE),
    23: ("QUANTIZED_RESIZE_NEAREST_NEIGHBOR", _RESIZE),
    24: ("CHANNELWISE_DEQUANTIZE", _IO + (("channels", "u32"), ("channel_size", "u32"),
                                          ("quant_params", "f32[]", lambda f: 2 * f["channels"]))),
    25: ("LOGISTIC", _CHANNELS),
    10241: ("K210_ADD_PADDING", (("flags", "u32"), ("main_mem_in_address", "u32"), ("kpu_mem_out_address", "u32"),
                                 ("channels", "u32"))),
    10242: ("K210_REMOVE_PADDING", _CHANNELS),
    10243: ("K210_UPLOAD", (("flags", "u32"), ("main_mem_in_address", "u32"), ("kpu_mem_out_address", "u32"),
                            ("width", "u32"), ("height", "u32"), ("channels", "u32"))),
}
_CONV_LAYOUT: Layout = (("flags", "u32"), ("main_mem_out_address", "u32"), ("layer_offset", "u32"),
                        ("weights_offset", "u32"), ("bn_offset", "u32"), ("act_offset", "u32"))
_FLOAT_OUT = {"DEQUANTIZE", "CHANNELWISE_DEQUANTIZE", "FULLY_CONNECTED", "SOFTMAX", "L2_NORMALIZATION",
              "LOGISTIC", "ADD", "GLOBAL_AVERAGE_POOL2D", "GLOBAL_MAX_POOL2D", "AVERAGE_POOL2D", "MAX_POOL2D",
              "TENSORFLOW_FLATTEN", "RESIZE_NEAREST_NEIGHBOR", "CONCAT"}


def layer_name(t: int) -> str:
    return "K210_CONV" if t == K210_CONV else LAYERS.get(t, (f"unknown({t})",))[0]


def read_v3(data: bytes) -> Kmodel:
    r = Reader(data, what="kmodel v3")
    version, flags, arch, n_layers, max_start, main_mem, n_out = r.unpack("7I", "header")
    if version != 3:
        raise KmodelError(f"not a kmodel v3 file (version {version})")
    if n_out * 8 + n_layers * 8 > r.remaining():
        raise KmodelError(f"kmodel v3: {n_out} outputs and {n_layers} layer headers do not fit in the file")
    outputs = [r.unpack("2I", f"output {i}") for i in range(n_out)]
    headers = [r.unpack("2I", f"layer {i} header") for i in range(n_layers)]
    layers: list[V3Layer] = []
    pos = r.pos
    for i, (t, size) in enumerate(headers):
        end = pos + size
        if end > len(data):
            # ncc pads each body to 8 in its size but leaves the last padding out of the file.
            if i != n_layers - 1 or end - len(data) >= 8:
                raise KmodelError(f"kmodel v3: layer {i} ({layer_name(t)}) body overruns the file")
            end = len(data)
        layers.append(_read_layer(data, t, pos, end, i))
        pos += size
    model = V3Model(flags, arch, max_start, main_mem, [(a, s) for a, s in outputs], layers)
    return _common(model, len(data))


def _read_layer(data: bytes, t: int, start: int, end: int, index: int) -> V3Layer:
    name = layer_name(t)
    body = Reader(data, start, end, f"kmodel v3 layer {index} ({name})")
    raw = bytes(body.data[start:end])
    if t == K210_CONV:
        args = read_fields(body, _CONV_LAYOUT)
        return V3Layer(t, name, end - start, raw, args, _read_conv(data, args, index))
    if t not in LAYERS:
        raise KmodelError(f"kmodel v3: unknown layer type {t} at layer {index}",
                          "the file was not made by nncase v0.1 or is corrupt")
    return V3Layer(t, name, end - start, raw, read_fields(body, LAYERS[t][1]))


def _read_conv(data: bytes, args: dict, index: int) -> KpuConv:
    # The offsets count from the start of the file (N01 K210Conv2d.cs / SDK kpu.c).
    r = Reader(data, what=f"kmodel v3 layer {index} (K210_CONV)")
    r.seek(args["layer_offset"], "layer argument")
    layer = read_layer(r.unpack(f"{LAYER_WORDS}Q", "layer argument"))
    r.seek(args["bn_offset"], "batch-norm table")
    bn = BatchNorm(r.array("<u8", layer.out_channels, "batch-norm table"))
    r.seek(args["act_offset"], "activation table")
    act = Activation.from_bytes(r.bytes(ACT_TABLE_BYTES, "activation table"))
    r.seek(args["weights_offset"], "weights")
    weights = r.array("u1", layer.weights_count(), "weights")
    out = MemoryRange(1, 1, args["main_mem_out_address"], 0)
    return KpuConv(layer, bn, act, weights, 1, out if args["flags"] & 1 else None)


def _common(model: V3Model, size: int) -> Kmodel:
    from k210tool.compile.kmodel.describe import describe_op, describe_value
    from k210tool.compile.kmodel.layout import kpu_bytes
    from k210tool.compile.kmodel.model import Op

    layers: list[Layer] = []
    kpu_peak = 0
    for i, lay in enumerate(model.layers):
        if lay.conv is not None:
            args = describe_op(lay.conv, 3)
            args["main_mem_out"] = bool(lay.args["flags"] & 1)
            c, h, w = lay.conv.layer.out_shape
            kpu_peak = max(kpu_peak, lay.conv.layer.dst_address + kpu_bytes(c, h, w))
            layers.append(Layer(i, lay.name, "KPU", f"layer {i}", args, lay.conv.layer))
        else:
            placement = "KPU" if lay.type in (10241, 10243) else "CPU"
            layers.append(Layer(i, lay.name, placement, f"layer {i}", describe_op(Op(lay.name, lay.args), 3)))
    inputs = _inputs(model)
    float_out = bool(model.layers) and model.layers[-1].name in _FLOAT_OUT
    outputs = [TensorDesc(f"output{i}", (s // 4,) if float_out else (s,), "float32" if float_out else "uint8",
                          MemoryRange(1, 0 if float_out else 1, a, s)) for i, (a, s) in enumerate(model.outputs)]
    memory = {"main": model.main_mem_usage, "kpu_peak": kpu_peak, "max_start_address": model.max_start_address}
    _ = describe_value
    return Kmodel(3, inputs, outputs, memory, layers, size, v3=model)


def _inputs(model: V3Model) -> list[TensorDesc]:
    if not model.layers:
        return []
    first = model.layers[0]
    if first.conv is not None:
        c, h, w = first.conv.layer.in_shape
        return [TensorDesc("input", (1, c, h, w), "uint8", MemoryRange(2, 1, first.conv.layer.src_address, c * h * w))]
    if first.name == "K210_UPLOAD":
        a = first.args
        shape = (1, a["channels"], a["height"], a["width"])
        return [TensorDesc("input", shape, "uint8", MemoryRange(1, 1, a["main_mem_in_address"], shape[1] * shape[2] * shape[3]))]
    if first.name == "FULLY_CONNECTED":
        a = first.args
        return [TensorDesc("input", (1, a["in_channels"]), "float32",
                           MemoryRange(1, 0, a["main_mem_in_address"], 4 * a["in_channels"]))]
    return [TensorDesc("input", (), "unknown")]
