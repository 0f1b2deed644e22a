"""What a kmodel asks of the board, read from the kmodel itself: memory and the ops it runs where.

The firmware reads the whole kmodel file into a heap buffer, then allocates the runtime's working memory
(kmodel v4: its main memory, which holds the inputs and outputs; v5: the input, output and data pools);
the 2 MiB KPU RAM is separate. ``convert``'s verdict, the emulator's loader and ``inspect`` all use
:func:`footprint`, so they cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from k210tool.compile.kmodel.model import Kmodel

# ops that only move data (not computing anything on the CPU)
GLUE = frozenset({"kpu_upload", "kpu_download", "copy", "memory_copy", "quantize", "dequantize", "call",
                  "transpose", "slice", "strided_slice", "pad"})


@dataclass
class Footprint:
    file: int  # the kmodel file, held in RAM by the firmware
    working: int  # the runtime's working memory besides the file
    kpu_ram: int  # peak KPU RAM (its own 2 MiB, not counted in total)
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.file + self.working


def footprint(km: Kmodel) -> Footprint:
    mem = km.memory
    if km.version == 5:
        data = {k: v for k, v in mem.items() if k.endswith(".data")}
        parts = {"input": int(mem.get("input", 0)), "output": int(mem.get("output", 0)), **data}
        kpu = _kpu_peak(km)
    else:
        parts = {"main": int(mem.get("main", 0))}
        kpu = int(mem.get("kpu_peak", 0))
    return Footprint(km.size, sum(parts.values()), kpu, parts)


def _kpu_peak(km: Kmodel) -> int:
    from k210tool.compile.kmodel.layout import kpu_bytes

    peak = 0
    for layer in km.layers:
        if layer.kpu is not None:
            c, h, w = layer.kpu.out_shape
            peak = max(peak, layer.kpu.dst_address + kpu_bytes(c, h, w))
    return peak


@dataclass
class OpCensus:
    kpu_convs: int
    kpu_uploads: int
    kpu_downloads: int
    cpu_ops: dict[str, int]  # every CPU op by name
    cpu_compute_ops: dict[str, int]  # CPU ops that compute (not data movement)


def census(km: Kmodel) -> OpCensus:
    names = Counter(layer.op for layer in km.layers)
    cpu = Counter(layer.op for layer in km.layers if layer.placement == "CPU")
    downloads = names.get("kpu_download", 0)
    if km.version == 4:  # downloads are folded into the convolutions (send_data_out)
        downloads = sum(1 for layer in km.layers if layer.kpu is not None and layer.kpu.get("send_data_out"))
    return OpCensus(names.get("kpu_conv2d", 0), names.get("kpu_upload", 0), downloads, dict(cpu),
                    {k: v for k, v in cpu.items() if k not in GLUE})
