"""The twelve hardware words of one KPU convolution, from its shapes, addresses and quantization.

The structural fields (weight loading, row layout, write-back, DMA counts) follow the formulas of nncase
v1.9.0's k210 emitter (``modules/k210/src/codegen/ops/kpu_conv2d.cpp``); the tests rebuild every layer of
nncase-compiled models from their decoded settings and get the same words, so a layer made here looks to
the runtime and the KPU exactly like one nncase made. The batch-norm and activation tables are packed as
``kpu_batchnorm_argument_t`` and ``kpu_activate_table_t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from k210tool.compile.kmodel.kpu import POOL_GEOMETRY, Activation, BatchNorm, KpuLayer
from k210tool.compile.kmodel.layout import row_layout

WEIGHT_LOAD_LIMIT = 30 * 1024  # bytes of weights the KPU loads at once (nncase: 30 KiB)
KERNEL_TYPES = {1: 0, 3: 1}
BN_MUL_BITS = 22  # signed, what nncase emits (the field holds 24)
BN_MAX_SHIFT = 15
BN_ADD_LIMIT = 2**31
ACT_MUL_LIMIT = 2**15  # y_mul is 16-bit signed
ACT_MAX_SHIFT = 43  # what nncase emits at most
ACT_X_LIMIT = 2**35  # x_start is 36-bit signed


@dataclass(frozen=True)
class LayerGeometry:
    """What a KPU convolution reads and writes (channels x height x width, KPU RAM byte addresses)."""

    in_shape: tuple[int, int, int]
    out_channels: int
    filter: int  # 1 or 3
    depthwise: bool
    pool_type: int  # 0 bypass, 5 left-top 2x2 stride 2 (how stride 2 is done), ...
    src: int
    dst: int

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _f, stride = POOL_GEOMETRY[self.pool_type]
        _c, h, w = self.in_shape
        return self.out_channels, h // stride, w // stride

    @property
    def conv_shape(self) -> tuple[int, int, int]:
        """The map the convolution itself produces before pooling (what the KPU writes back is pooled)."""
        return self.out_channels, self.in_shape[1], self.in_shape[2]


@dataclass(frozen=True)
class ConvArgs:
    """The KPU's quantization terms: ``alu = sum(x*w) + (arg_x*sum(x) >> shr_x) + (arg_w*sum(w) >> shr_w)
    + arg_add * ic_per_group``."""

    arg_x: int
    shr_x: int
    arg_w: int
    shr_w: int
    arg_add: int
    pad_value: int


def layer_words(g: LayerGeometry, args: ConvArgs, send_data_out: bool = False) -> KpuLayer:
    c, h, w = g.in_shape
    oc, oh, ow = g.out_shape
    if g.filter not in KERNEL_TYPES:
        raise ValueError(f"the KPU runs 1x1 and 3x3 kernels, not {g.filter}x{g.filter}")
    if max(c, oc) > 1024:  # the channel fields are 10 bits: a larger count would be cut silently
        raise ValueError(f"a KPU layer reads and writes at most 1024 channels, not {c} -> {oc}")
    if g.depthwise:
        one_load = oc * g.filter * g.filter
        load_times, oc_one_time = 1, oc
    else:
        one_channel = g.filter * g.filter * c
        oc_one_time = min(oc, math.floor(WEIGHT_LOAD_LIMIT / one_channel))
        if oc_one_time < 1:
            raise ValueError(f"one output channel's weights ({one_channel} bytes) exceed the KPU's 30 KiB load")
        one_load = one_channel * oc_one_time
        load_times = math.ceil(oc / oc_one_time)
    lin, lout = row_layout(w), row_layout(ow)
    fields = {
        "depth_wise_layer": int(g.depthwise),
        "image_src_addr": g.src // 64, "image_dst_addr": g.dst // 64,
        "i_ch_num": c - 1, "o_ch_num": oc - 1, "o_ch_num_coef": oc_one_time - 1,
        "i_col_high": h - 1, "i_row_wid": w - 1, "o_col_high": oh - 1, "o_row_wid": ow - 1,
        "kernel_type": KERNEL_TYPES[g.filter], "load_para": 1, "pool_type": g.pool_type, "dma_burst_size": 15,
        "pad_type": 0, "pad_value": args.pad_value,
        "load_coor": 1, "load_time": load_times - 1, "para_size": one_load,
        "channel_switch_addr": lin.row_len * h, "row_switch_addr": lin.row_len, "coef_group": lin.groups,
        "load_act": 1,
        "wb_channel_switch_addr": lout.row_len * oh, "wb_row_switch_addr": lout.row_len, "wb_group": lout.groups,
        "arg_x": args.arg_x & 0xFFFFFF, "shr_x": args.shr_x, "arg_w": args.arg_w & 0xFFFFFF, "shr_w": args.shr_w,
        "arg_add": args.arg_add & ((1 << 40) - 1),
        "channel_byte_num": ow * oh - 1, "dma_total_byte": ow * oh * oc - 1, "send_data_out": int(send_data_out),
    }
    return KpuLayer((0,) * 12).replace(**fields)


def batch_norm(mul: np.ndarray, shift: np.ndarray, add: np.ndarray) -> BatchNorm:
    mul, shift, add = (np.asarray(v, np.int64) for v in (mul, shift, add))
    if np.any(np.abs(mul) >= 2 ** (BN_MUL_BITS - 1)) or np.any((shift < 0) | (shift > BN_MAX_SHIFT)):
        raise ValueError("batch-norm multiplier or shift outside what the KPU takes")
    if np.any(np.abs(add) >= BN_ADD_LIMIT):
        raise ValueError("batch-norm offset outside 32 bits")
    words = (mul & 0xFFFFFF).astype(np.uint64) | ((add & 0xFFFFFFFF).astype(np.uint64) << np.uint64(24)) \
        | (shift.astype(np.uint64) << np.uint64(56))
    return BatchNorm(words)


@dataclass(frozen=True)
class Segment:
    """One activation segment: for ``y > x_start``, ``out = round((y - x_start) * mul / 2**shift) + bias``."""

    x_start: int
    mul: int
    shift: int
    bias: int


def activation(segments: list[Segment]) -> Activation:
    if len(segments) != 16:
        raise ValueError(f"a KPU activation table has 16 segments, not {len(segments)}")
    words = np.zeros(16, np.uint64)
    bias = np.zeros(16, np.uint8)
    for i, s in enumerate(segments):
        if not (-ACT_X_LIMIT <= s.x_start < ACT_X_LIMIT and -ACT_MUL_LIMIT <= s.mul < ACT_MUL_LIMIT
                and 0 <= s.shift <= ACT_MAX_SHIFT and 0 <= s.bias <= 255):
            raise ValueError(f"activation segment {i} {s} outside what the KPU takes")
        words[i] = np.uint64(((s.x_start & ((1 << 36) - 1)) << 24) | ((s.mul & 0xFFFF) << 8) | s.shift)
        bias[i] = s.bias
    return Activation(words, bias)
