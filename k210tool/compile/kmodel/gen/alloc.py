"""KPU RAM for the generated program: each feature map gets an address while it is alive.

Maps are placed first-fit, lowest address first, never overlapping a map alive at the same time (a KPU
layer's input stays alive while the layer writes its output, so the two never overlap). A residual add
reads its two operands as one map, so the operand produced later is reserved right before the earlier one
when that one is placed.
"""

from __future__ import annotations

from dataclasses import dataclass

KPU_RAM = 2 * 1024 * 1024


@dataclass
class Block:
    name: str
    size: int
    born: int
    dies: int
    addr: int = -1


class OutOfKpuRam(ValueError):
    def __init__(self, message: str, block: str = "") -> None:
        super().__init__(message)
        self.block = block  # the map that found no room


def allocate(blocks: list[Block], capacity: int = KPU_RAM) -> int:
    """Give every block an address (64-byte aligned); returns the peak address used."""
    placed: list[Block] = []
    peak = 0
    for b in sorted(blocks, key=lambda b: (b.born, -b.size)):
        busy = sorted((p.addr, p.addr + p.size) for p in placed if p.born <= b.dies and b.born <= p.dies)
        addr = 0
        for start, end in busy:
            if addr + b.size <= start:
                break
            addr = max(addr, _align(end))
        if addr + b.size > capacity:
            raise OutOfKpuRam(f"{b.name} ({b.size:,} bytes) does not fit the {capacity // 1024} KiB of KPU RAM "
                              f"next to the maps alive at the same time", b.name)
        b.addr = addr
        placed.append(b)
        peak = max(peak, addr + b.size)
    return peak


def _align(n: int, a: int = 64) -> int:
    return (n + a - 1) // a * a
