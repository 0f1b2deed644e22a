"""How a feature map sits in KPU RAM (nncase ``runtime_op_utility.h`` ``get_kpu_row_layout``).

KPU RAM is addressed in 64-byte rows. A channel of width <= 16 takes a quarter row per image row (four
channels share a row), width <= 32 half a row, wider channels ``ceil(width / 64)`` whole rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowLayout:
    groups: int  # channels that share one 64-byte row
    row_len: int  # 64-byte rows per image row of one channel
    row_pitch: int  # bytes between the channels that share a row


def row_layout(width: int) -> RowLayout:
    if width <= 16:
        return RowLayout(4, 1, 16)
    if width <= 32:
        return RowLayout(2, 1, 32)
    return RowLayout(1, (width + 63) // 64, 64)


def kpu_rows(channels: int, height: int, width: int) -> int:
    lay = row_layout(width)
    per_row = min(channels, lay.groups)
    blocks = (channels + per_row - 1) // per_row
    return lay.row_len * height * blocks


def kpu_bytes(channels: int, height: int, width: int) -> int:
    """Bytes one image of ``channels x height x width`` occupies in KPU RAM."""
    return kpu_rows(channels, height, width) * 64
