"""Parse nncase 1.9's dump folder: the ground truth of what runs on the KPU and what on the CPU.

- ``kmodel_info.txt``: memory usage (input, output, data, MODEL, TOTAL);
- ``codegen/main.sched``: the CPU compute sequence (``%n = Op(...)`` lines);
- ``k210/*/runtime_ops.txt``: KPU ops per k210 function (``[KPUConv2D] name``, ``[KPUUpload]``,
  ``[KPUDownload]``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from k210tool.errors import CompileError

# CPU ops that only move data between the KPU and the CPU, or start/end the graph
GLUE_OPS = frozenset({"Input", "Constant", "Call", "Quantize", "Dequantize", "Transpose", "Copy", "Output",
                      "Bitcast"})
# CPU ops that the rewrite exists to remove (each costs a KPU round trip on the device)
PROBLEM_OPS = frozenset({"Pad", "Slice", "Binary", "TableLookup1D", "Unary", "Clamp", "Concat", "Resize"})

_SCHED_OP = re.compile(r"^\s*%\d+(?:\[[^\]]*\])?(?:\s*,\s*%\d+(?:\[[^\]]*\])?)*\s*=\s*([A-Za-z0-9_]+)\(")
_MEM = re.compile(r"^\s*\.?([A-Za-z]+):?\s+[\d.]+\s*[KMG]?B\s*\((\d+) B\)")
_KPU = re.compile(r"^\[(KPU[A-Za-z0-9]+)\]\s*(.*)$")


@dataclass
class MemoryUsage:
    input: int = 0
    output: int = 0
    data: int = 0
    model: int = 0
    total: int = 0


@dataclass
class KpuOp:
    kind: str  # KPUConv2D | KPUUpload | KPUDownload
    name: str  # nncase's name, built from the TensorFlow op names it fused
    function: str  # k210 function folder (k210_0, ...)


@dataclass
class DumpInfo:
    memory: MemoryUsage
    cpu_ops: dict[str, int]  # every op in the CPU schedule
    kpu_ops: list[KpuOp] = field(default_factory=list)

    @property
    def kpu_convs(self) -> int:
        return sum(1 for op in self.kpu_ops if op.kind == "KPUConv2D")

    @property
    def kpu_uploads(self) -> int:
        return sum(1 for op in self.kpu_ops if op.kind == "KPUUpload")

    @property
    def kpu_downloads(self) -> int:
        return sum(1 for op in self.kpu_ops if op.kind == "KPUDownload")

    @property
    def cpu_compute_ops(self) -> dict[str, int]:
        """CPU ops besides glue (what actually computes on the CPU)."""
        return {k: v for k, v in self.cpu_ops.items() if k not in GLUE_OPS}

    @property
    def problem_ops(self) -> dict[str, int]:
        return {k: v for k, v in self.cpu_ops.items() if k in PROBLEM_OPS}


def parse_memory(text: str) -> MemoryUsage:
    mem = MemoryUsage()
    for line in text.splitlines():
        m = _MEM.match(line)
        if m and hasattr(mem, m.group(1).lower()):
            setattr(mem, m.group(1).lower(), int(m.group(2)))
    return mem


def parse_schedule(text: str) -> dict[str, int]:
    body = text.split(".compute_sequence", 1)[-1]
    return dict(Counter(m.group(1) for line in body.splitlines() if (m := _SCHED_OP.match(line))))


def parse_runtime_ops(text: str, function: str) -> list[KpuOp]:
    return [KpuOp(m.group(1), m.group(2).strip(), function) for line in text.splitlines() if (m := _KPU.match(line))]


def parse_dump(dump_dir: Path) -> DumpInfo:
    info = dump_dir / "kmodel_info.txt"
    sched = dump_dir / "codegen" / "main.sched"
    if not info.exists() or not sched.exists():
        raise CompileError(f"nncase wrote no dump in {dump_dir}", "this nncase build may not be 1.9")
    kpu: list[KpuOp] = []
    k210 = dump_dir / "k210"
    if k210.is_dir():
        for folder in sorted((p for p in k210.iterdir() if p.is_dir()), key=_natural):
            ops = folder / "runtime_ops.txt"
            if ops.exists():
                kpu.extend(parse_runtime_ops(ops.read_text(errors="replace"), folder.name))
    return DumpInfo(parse_memory(info.read_text(errors="replace")), parse_schedule(sched.read_text(errors="replace")), kpu)


def _natural(p: Path) -> tuple[str, int]:
    m = re.match(r"(.*?)(\d+)$", p.name)
    return (m.group(1), int(m.group(2))) if m else (p.name, -1)
