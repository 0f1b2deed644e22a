"""Run consecutive KPU layers that split one convolution as one layer (an interpreter shortcut, exact).

k210tool's backend splits a convolution whose output needs more activation shapes than one table holds
into several layers: each reads the same input (or, for a depthwise convolution, the next block of its
channels) and writes the next block of output channels. The KPU runs them one by one; the interpreter
computes them as one convolution - one matrix product instead of many thin ones - and applies each output
channel's own table with the exact compiled kernels. Every value is what the separate layers give.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from k210tool.compile.kmodel.layout import kpu_bytes, row_layout
from k210tool.compile.kmodel.model import KpuConv, MemoryRange
from k210tool.sim.interp import jit
from k210tool.sim.interp.actfast import ActTable

_SAME = ("kernel_type", "pool_type", "pad_value", "arg_x", "shr_x", "arg_w", "shr_w", "arg_add", "depth_wise_layer",
         "i_row_wid", "i_col_high", "o_row_wid", "o_col_high")


def table_of(conv: KpuConv) -> ActTable:
    segs = conv.activation.segments()
    return ActTable(*(np.array([s[k] for s in segs], np.int64) for k in ("x_start", "y_mul", "shift", "bias")))


def follows(a: KpuConv, b: KpuConv) -> bool:
    """Whether ``b`` computes the output channels right after ``a``'s from the same input (block)."""
    la, lb = a.layer, b.layer
    if not jit.enabled() or a.batches != b.batches or any(la.get(f) != lb.get(f) for f in _SAME):
        return False
    oc, oh, ow = la.out_shape
    if oc % row_layout(ow).groups or lb.dst_address != la.dst_address + kpu_bytes(oc, oh, ow):
        return False
    if la.depthwise:
        ic, ih, iw = la.in_shape
        if ic % row_layout(iw).groups or lb.src_address != la.src_address + kpu_bytes(ic, ih, iw):
            return False
    elif lb.src_address != la.src_address or la.in_channels != lb.in_channels:
        return False
    ma, mb = a.main_mem_output, b.main_mem_output
    has_a, has_b = bool(ma is not None and ma.size), bool(mb is not None and mb.size)
    if has_a != has_b:
        return False
    return not has_a or (ma.location == mb.location and mb.start == ma.start + ma.size)  # type: ignore[union-attr]


MAX_CHANNELS = 1024  # what a layer word's channel fields hold: a merged layer must stay within it


def runs(ops: list) -> list[list]:
    """Consecutive ops grouped: runs of :class:`KpuConv` that :func:`follows` chains (up to 1024 output
    channels: a wide map of many narrow layers is more than one merged layer can describe), everything else
    alone."""
    out: list[list] = []
    for op in ops:
        if out and isinstance(op, KpuConv) and isinstance(out[-1][-1], KpuConv) and follows(out[-1][-1], op) \
                and sum(c.layer.out_channels for c in out[-1]) + op.layer.out_channels <= MAX_CHANNELS:
            out[-1].append(op)
        else:
            out.append([op])
    return out


def merge(convs: list[KpuConv]) -> tuple[KpuConv, list[ActTable] | None]:
    """One convolution computing all of ``convs``' outputs, and the per-output-channel tables (None: one)."""
    if len(convs) == 1:
        return convs[0], None
    first = convs[0]
    oc = sum(c.layer.out_channels for c in convs)
    fields = {"o_ch_num": oc - 1}
    if first.layer.depthwise:
        fields["i_ch_num"] = oc - 1
    layer = first.layer.replace(**fields)
    bn = replace(first.batch_norm, words=np.concatenate([c.batch_norm.words for c in convs]))
    weights = np.concatenate([np.asarray(c.weights, np.uint8).reshape(-1) for c in convs])
    main = first.main_mem_output
    if main is not None and main.size:
        main = MemoryRange(main.location, main.datatype, main.start, sum(c.main_mem_output.size for c in convs))
    tables = [t for c in convs for t in [table_of(c)] * c.layer.out_channels]
    return KpuConv(layer, bn, first.activation, weights, first.batches, main, first.reserved0), tables
