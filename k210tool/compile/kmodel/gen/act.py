"""Batch norm and activation table of one KPU layer: per-channel scales, and several PReLU slopes per table.

The KPU applies ``y = floor(alu * mul / 2**shift) + add`` per output channel, then one 16-segment table per
layer: ``out = clamp(round((y - x_start) * y_mul / 2**shift) + bias)`` for the last segment with
``y > x_start``. Here ``y`` is laid out in *zones*: each output channel is scaled so that one output step is
``U`` units of ``y`` (``U`` a power of two, so unit slopes are exact) and shifted by its zone's kink ``Y``.
A zone is one activation shape (slope left and right of the kink, output code at the kink); channels with
the same shape share a zone (a ReLU or linear layer needs one), a per-channel PReLU needs one zone per slope.
Zones sit far apart in ``y`` - farther than any channel can move, whatever its input, so no value ever
reaches another zone's segments. Each zone costs two segments (left arm, right arm) plus a flat *guard* when
the previous zone's right arm does not end at the value its left arm starts from (0 or 255); ordering zones
so they chain (``pack``) keeps guards rare: seven PReLU channels per table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from k210tool.compile.kmodel.gen.layer import (
    ACT_MAX_SHIFT,
    ACT_MUL_LIMIT,
    BN_MAX_SHIFT,
    BN_MUL_BITS,
    Segment,
    activation,
    batch_norm,
)
from k210tool.compile.kmodel.kpu import Activation, BatchNorm

Y_SPAN = 2**31 - 2**20  # zones live in |y| < 2**31: the batch-norm offset is a 32-bit field
X_LOW = -(2**35)  # segment 0 starts below every y (nncase writes the same)
X_UNUSED = 2**35 - 1  # never below any y: unused segments
MAX_U_LOG2 = 16


@dataclass(frozen=True)
class Zone:
    """An activation shape in output steps per step of ``u = (y - Y) / U``."""

    left: float  # slope left of the kink
    right: float  # slope right of the kink
    zero: int  # output code at the kink

    @property
    def left_end(self) -> int | None:
        """The output far left (0 or 255), None when the left arm is flat (it stays at ``zero``)."""
        return None if self.left == 0 else (0 if self.left > 0 else 255)

    @property
    def right_end(self) -> int:
        return self.zero if self.right == 0 else (255 if self.right > 0 else 0)


IDENTITY = Zone(0.0, 1.0, 0)  # linear (zero point carried in y) and ReLU (zero point 0)


def segments_needed(zones: list[Zone]) -> int:
    count, prev = 0, None
    for k, z in enumerate(zones):
        if z.left_end is not None and (k == 0 or prev != z.left_end):
            count += 1  # guard
        count += 2
        prev = z.right_end
    return count


@dataclass
class LayerScale:
    """What the output stage needs per output channel."""

    gain: np.ndarray  # output steps per alu unit (alpha / scale), signed
    offset: np.ndarray  # output steps added (bias and alu corrections, and a linear channel's zero point)
    reach: np.ndarray  # largest |output steps| any input can give (before clamping)
    zone: np.ndarray  # int: index into the layer's zones


def output_stage(ls: LayerScale, zones: list[Zone]) -> tuple[BatchNorm, Activation, int]:
    """The batch-norm words, the activation table and ``U`` (y units per output step)."""
    if segments_needed(zones) > 16:
        raise ValueError(f"{len(zones)} zones need {segments_needed(zones)} activation segments (16 at most)")
    half = np.zeros(len(zones))  # output steps a zone's channels can move either side of its kink
    for k in range(len(zones)):
        members = ls.zone == k
        if members.any():
            half[k] = float(np.max(ls.reach[members] + np.abs(ls.offset[members]))) + 2.0
    arms = [_left_arm(z, half[k]) for k, z in enumerate(zones)]
    gaps = np.array([arm[1] for arm in arms])  # output steps kept free below each zone
    # a zone's right arm must reach its end value (0 or 255) before the next zone starts, so the next zone's
    # left arm can start from it: the zone extends at least that far right
    right = np.array([max(half[k], abs(z.right_end - z.zero) / abs(z.right) if z.right else 0.0)
                      for k, z in enumerate(zones)])
    total = float(np.sum(half + right + gaps)) if len(zones) > 1 else float(half.max(initial=1.0))
    u_log2 = min(MAX_U_LOG2, math.floor(math.log2(Y_SPAN / max(total, 1.0))))
    # the batch-norm multiplier must hold gain * U in 22 signed bits
    peak = float(np.max(np.abs(ls.gain), initial=0.0))
    if peak > 0:
        u_log2 = min(u_log2, math.floor(math.log2((2 ** (BN_MUL_BITS - 1) - 1) / peak)))
    if u_log2 < 0:
        raise ValueError("the layer's outputs cannot be laid out in the activation table's range")
    unit = 2**u_log2
    kinks = _kinks(half * unit, right * unit, gaps * unit, len(zones))
    bn = _batch_norm(ls, kinks, unit)
    return bn, _table(zones, [a[0] for a in arms], kinks, half * unit, u_log2), unit


def _left_arm(z: Zone, half: float) -> tuple[str, float]:
    """How a zone's left arm starts: ``saturates`` inside the zone (at its end value, after a guard when the
    previous zone ends elsewhere), ``flat`` (a constant: no slope, or so little that it changes the output by
    less than half a step across the zone), or ``open`` (a gentle slope that never saturates: it starts at
    a whole output step at most one step's width below the zone, in a gap left free for it). Returns the
    kind and the gap (output steps) the zone needs below it."""
    if z.left == 0 or abs(z.left) * half < 0.5:
        return "flat", 1.0
    end = z.left_end
    assert end is not None
    if abs(z.left) * half >= abs(z.zero - end):
        return "saturates", 1.0
    return "open", 1.0 / abs(z.left) + 2.0


def _kinks(left: np.ndarray, right: np.ndarray, gaps: np.ndarray, n: int) -> list[int]:
    if n == 1:
        return [0]
    total = float(np.sum(left + right + gaps))
    y = -total / 2
    kinks = []
    for k in range(n):
        y += gaps[k] + left[k]
        kinks.append(int(round(y)))
        y += right[k]
    return kinks


def _batch_norm(ls: LayerScale, kinks: list[int], unit: int) -> BatchNorm:
    m = ls.gain * unit
    shift = np.zeros(len(m), np.int64)
    mul = np.zeros(len(m), np.int64)
    limit = 2 ** (BN_MUL_BITS - 1) - 1
    for o, v in enumerate(m):
        sh = BN_MAX_SHIFT
        while sh > 0 and abs(v) * 2**sh > limit:
            sh -= 1
        shift[o] = sh
        mul[o] = int(np.clip(round(v * 2**sh), -limit, limit))
    add = np.rint(ls.offset * unit + np.asarray(kinks, np.float64)[ls.zone]).astype(np.int64)
    return batch_norm(mul, shift, add)


def _slope(slope: float, u_log2: int) -> tuple[int, int]:
    """(mul, shift) with ``mul / 2**shift`` = slope / U as closely as 16 signed bits allow."""
    if slope == 0:
        return 0, 0
    target = slope / 2**u_log2
    shift = min(ACT_MAX_SHIFT, math.floor(math.log2((ACT_MUL_LIMIT - 1) / abs(target))))
    mul = int(round(target * 2**shift))
    while abs(mul) >= ACT_MUL_LIMIT:
        shift -= 1
        mul = int(round(target * 2**shift))
    if shift < 0:
        raise ValueError(f"activation slope {slope} per step is too steep")
    return mul, shift


def _table(zones: list[Zone], arms: list[str], kinks: list[int], half: np.ndarray, u_log2: int) -> Activation:
    unit = 2**u_log2
    segs: list[Segment] = []
    prev: int | None = None
    for k, z in enumerate(zones):
        low = X_LOW if k == 0 else int(kinks[k] - half[k] - 1)  # below every value this zone's channels reach
        if arms[k] == "flat":
            segs.append(Segment(low, 0, 0, z.zero))
        elif arms[k] == "saturates":
            end = z.left_end
            assert end is not None
            if k == 0 or prev != end:
                segs.append(Segment(low, 0, 0, end))  # guard: the left arm's end value below it
            start = kinks[k] - int(round((z.zero - end) / z.left * unit))
            segs.append(Segment(max(start, low + 1), *_slope(z.left, u_log2), end))
        else:  # open: start at a whole step just below the zone (the gap before it is free)
            reach = abs(z.left) * half[k] / unit
            value = z.zero - math.ceil(reach) if z.left > 0 else z.zero + math.ceil(reach)
            start = kinks[k] - int(round((z.zero - value) / z.left * unit))
            if k == 0:
                segs.append(Segment(X_LOW, 0, 0, value))  # segment 0 starts below every y
            segs.append(Segment(start, *_slope(z.left, u_log2), value))
        segs.append(Segment(kinks[k], *_slope(z.right, u_log2), z.zero))
        prev = z.right_end
    # unused segments: above every y, strictly increasing (a sorted table), holding the last zone's far-right
    # value so a single-zone table stays monotone
    while len(segs) < 16:
        segs.append(Segment(X_UNUSED - 16 + len(segs), 0, 0, zones[-1].right_end))
    return activation(segs)
