"""The KPU hardware words: layer argument, batch-norm table, activation table.

These structures are bit-for-bit the same in kmodel v3, v4 and v5. The field layout below is
``kpu_layer_argument_t``, ``kpu_batchnorm_argument_t`` and ``kpu_activate_table_t`` as declared in
kendryte-standalone-sdk ``lib/drivers/include/kpu.h`` and nncase v1.9.0
``modules/k210/include/nncase/runtime/k210/runtime_types.h`` (facts, restated as tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LAYER_WORDS = 12
ACT_TABLE_BYTES = 18 * 8  # 16 segments + 16 bias bytes

# register name -> [(field, lsb, width)], in word order.
LAYER_FIELDS: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...] = (
    ("interrupt_enabe", (("int_en", 0, 1), ("ram_flag", 1, 1), ("full_add", 2, 1), ("depth_wise_layer", 3, 1))),
    ("image_addr", (("image_src_addr", 0, 15), ("image_dst_addr", 32, 15))),
    ("image_channel_num", (("i_ch_num", 0, 10), ("o_ch_num", 32, 10), ("o_ch_num_coef", 48, 10))),
    ("image_size", (("i_row_wid", 0, 10), ("i_col_high", 10, 9), ("o_row_wid", 32, 10), ("o_col_high", 42, 9))),
    ("kernel_pool_type_cfg", (("kernel_type", 0, 3), ("pad_type", 3, 1), ("pool_type", 4, 4),
                              ("first_stride", 8, 1), ("bypass_conv", 9, 1), ("load_para", 10, 1),
                              ("dma_burst_size", 16, 8), ("pad_value", 24, 8), ("bwsx_base_addr", 32, 32))),
    ("kernel_load_cfg", (("load_coor", 0, 1), ("load_time", 1, 6), ("para_size", 15, 17),
                         ("para_start_addr", 32, 32))),
    ("kernel_offset", (("coef_column_offset", 0, 4), ("coef_row_offset", 4, 12))),
    ("kernel_calc_type_cfg", (("channel_switch_addr", 0, 15), ("row_switch_addr", 16, 4), ("coef_size", 20, 8),
                              ("coef_group", 28, 3), ("load_act", 31, 1), ("active_addr", 32, 32))),
    ("write_back_cfg", (("wb_channel_switch_addr", 0, 15), ("wb_row_switch_addr", 16, 4), ("wb_group", 20, 3))),
    ("conv_value", (("shr_w", 0, 4), ("shr_x", 4, 4), ("arg_w", 8, 24), ("arg_x", 32, 24))),
    ("conv_value2", (("arg_add", 0, 40),)),
    ("dma_parameter", (("send_data_out", 0, 1), ("channel_byte_num", 16, 16), ("dma_total_byte", 32, 32))),
)
_REG_INDEX = {name: i for i, (name, _f) in enumerate(LAYER_FIELDS)}
_FIELD_INDEX = {f: (i, lsb, width) for i, (_n, fields) in enumerate(LAYER_FIELDS) for f, lsb, width in fields}

POOL_TYPES = {
    0: "bypass", 1: "max_2_s2", 2: "mean_2_s2", 3: "max_4_s4", 4: "mean_4_s4",
    5: "left_top_2_s2", 6: "right_top_2_s2", 7: "left_top_4_s4", 8: "mean_2_s1", 9: "max_2_s1",
}
# pool type -> (filter, stride), from runtime_op_utility.h get_kpu_filter_size / get_kpu_filter_stride.
POOL_GEOMETRY = {0: (1, 1), 1: (2, 2), 2: (2, 2), 3: (4, 4), 4: (4, 4), 5: (2, 2), 6: (2, 2), 7: (4, 4),
                 8: (2, 1), 9: (2, 1)}
FILTER_SIZES = {0: 1, 1: 3}


def signed(value: int, bits: int) -> int:
    """Two's-complement value of the low ``bits`` bits (the runtimes' ``to_signed<Bits>``)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@dataclass(frozen=True)
class KpuLayer:
    """The twelve 64-bit words of ``kpu_layer_argument_t`` with named access to every field."""

    words: tuple[int, ...]

    def get(self, field: str) -> int:
        i, lsb, width = _FIELD_INDEX[field]
        return (self.words[i] >> lsb) & ((1 << width) - 1)

    def replace(self, **fields: int) -> KpuLayer:
        words = list(self.words)
        for name, value in fields.items():
            i, lsb, width = _FIELD_INDEX[name]
            mask = ((1 << width) - 1) << lsb
            words[i] = (words[i] & ~mask) | ((int(value) << lsb) & mask)
        return KpuLayer(tuple(words))

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {reg: {f: self.get(f) for f, _l, _w in fields} for reg, fields in LAYER_FIELDS}

    # The fields every consumer needs, decoded (sizes are stored minus one in the hardware words).
    @property
    def in_channels(self) -> int:
        return self.get("i_ch_num") + 1

    @property
    def out_channels(self) -> int:
        return self.get("o_ch_num") + 1

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.get("i_col_high") + 1, self.get("i_row_wid") + 1)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, self.get("o_col_high") + 1, self.get("o_row_wid") + 1)

    @property
    def depthwise(self) -> bool:
        return bool(self.get("depth_wise_layer"))

    @property
    def filter_size(self) -> int:
        return FILTER_SIZES.get(self.get("kernel_type"), 0)

    @property
    def pool_type(self) -> int:
        return self.get("pool_type")

    @property
    def pool_name(self) -> str:
        return POOL_TYPES.get(self.pool_type, f"unknown({self.pool_type})")

    @property
    def src_address(self) -> int:
        return self.get("image_src_addr") * 64

    @property
    def dst_address(self) -> int:
        return self.get("image_dst_addr") * 64

    def weights_count(self) -> int:
        f = self.filter_size
        return self.out_channels * f * f * (1 if self.depthwise else self.in_channels)

    def summary(self) -> dict[str, Any]:
        c, h, w = self.in_shape
        oc, oh, ow = self.out_shape
        return {
            "input": [c, h, w], "output": [oc, oh, ow], "filter": self.filter_size,
            "depthwise": self.depthwise, "pool": self.pool_name, "pad_value": self.get("pad_value"),
            "kpu_src": self.src_address, "kpu_dst": self.dst_address,
        }


def read_layer(words: np.ndarray | list[int] | tuple[int, ...]) -> KpuLayer:
    return KpuLayer(tuple(int(w) for w in words))


@dataclass(frozen=True)
class BatchNorm:
    """Per-output-channel ``kpu_batchnorm_argument_t`` words (mul:24 signed, add:32 signed, shift:4)."""

    words: np.ndarray  # uint64, one per output channel

    @property
    def mul(self) -> np.ndarray:
        w = self.words.astype(np.int64)
        m = w & 0xFFFFFF
        return np.where(m >> 23, m - (1 << 24), m)

    @property
    def add(self) -> np.ndarray:
        a = (self.words >> np.uint64(24)).astype(np.int64) & 0xFFFFFFFF
        return np.where(a >> 31, a - (1 << 32), a)

    @property
    def shift(self) -> np.ndarray:
        return (self.words >> np.uint64(56)).astype(np.int64) & 0xF


@dataclass(frozen=True)
class Activation:
    """``kpu_activate_table_t``: 16 segments {shift:8, y_mul:16 signed, x_start:36 signed} + 16 bias bytes."""

    words: np.ndarray  # uint64[16]
    bias: np.ndarray  # uint8[16]

    @classmethod
    def from_bytes(cls, raw: bytes) -> Activation:
        words = np.frombuffer(raw[:128], dtype="<u8").copy()
        return cls(words, np.frombuffer(raw[128:144], dtype=np.uint8).copy())

    def to_bytes(self) -> bytes:
        return self.words.astype("<u8").tobytes() + self.bias.astype(np.uint8).tobytes()

    def segments(self) -> list[dict[str, int]]:
        out = []
        for i, w in enumerate(int(x) for x in self.words):
            out.append({
                "x_start": signed(w >> 24, 36), "y_mul": signed(w >> 8, 16),
                "shift": w & 0xFF, "bias": int(self.bias[i]),
            })
        return out
