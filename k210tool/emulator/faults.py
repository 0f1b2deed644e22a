"""Fault injection on the emulated link: cut it, corrupt a byte, stall the board.

A fault fires once, when the host->board byte stream of a phase reaches a given offset::

    corrupt:stub:3000      flip a bit of the 3000th byte the flash-mode program receives
    cut:repl:500:2         the link goes dead for 2 s at the REPL's 500th byte (bytes both ways are lost)
    cut:isp:100            ... for good (until the emulator restarts)
    stall:repl:200:1.5     the board stops reading and answering for 1.5 s (nothing is lost)

Phases: ``rom`` (mask-ROM loader), ``stub`` (flash-mode program), ``isp`` (both), ``repl`` (the
MicroPython firmware), ``any``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from k210tool.errors import InputError

KINDS = ("cut", "corrupt", "stall")
PHASES = ("rom", "stub", "isp", "repl", "any")
_SPECIAL = {0xC0, 0xDB}  # SLIP framing bytes: corrupting them would break framing, not data


@dataclass(frozen=True)
class Fault:
    kind: str
    phase: str
    at: int
    duration: float | None = None

    def __str__(self) -> str:
        tail = "" if self.duration is None else f":{self.duration:g}"
        return f"{self.kind}:{self.phase}:{self.at}{tail}"


def parse_fault(spec: str) -> Fault:
    parts = spec.strip().split(":")
    usage = "write KIND:PHASE:BYTE[:SECONDS], e.g. corrupt:stub:3000 or cut:repl:500:2"
    if len(parts) not in (3, 4) or parts[0] not in KINDS or parts[1] not in PHASES:
        raise InputError(f"bad fault {spec!r}", usage + f" (kinds {', '.join(KINDS)}; phases {', '.join(PHASES)})")
    try:
        at = int(parts[2], 0)
        duration = float(parts[3]) if len(parts) == 4 else None
    except ValueError:
        raise InputError(f"bad fault {spec!r}", usage) from None
    if at < 0 or (duration is not None and duration < 0):
        raise InputError(f"bad fault {spec!r}: offsets and durations are >= 0", usage)
    if parts[0] == "stall" and duration is None:
        raise InputError(f"bad fault {spec!r}: a stall needs a duration", usage)
    return Fault(parts[0], parts[1], at, duration)


def _flip(b: int) -> int:
    for mask in (0x01, 0x20, 0x40):
        v = b ^ mask
        if v not in _SPECIAL and v >= 0x06:
            return v
    return b ^ 0x80


class FaultInjector:
    """Applies the faults to received chunks; the server asks it before feeding the board."""

    def __init__(self, faults: list[Fault] | tuple[Fault, ...] = ()) -> None:
        self.pending = list(faults)
        self.fired: list[str] = []
        self._counters: dict[str, int] = defaultdict(int)
        self.link_down_until = 0.0
        self.stall_until = 0.0
        self._lock = threading.Lock()

    def link_down(self) -> bool:
        return time.monotonic() < self.link_down_until

    def stalled(self) -> bool:
        return time.monotonic() < self.stall_until

    def filter_rx(self, phase: str, data: bytes) -> list[tuple[bytes, float]]:
        """Split ``data`` into (bytes to deliver, seconds to wait before them) pieces."""
        with self._lock:
            if self.link_down():
                return []
            keys = [phase, "any"] + (["isp"] if phase in ("rom", "stub") else [])
            starts = {k: self._counters[k] for k in keys}
            for k in keys:
                self._counters[k] += len(data)
            out = bytearray(data)
            cut_at: int | None = None
            stall: tuple[int, float] | None = None
            for fault in list(self.pending):
                if fault.phase not in keys:
                    continue
                idx = fault.at - starts[fault.phase]
                if not 0 <= idx < len(data):
                    continue
                self.pending.remove(fault)
                self.fired.append(f"{fault} fired")
                if fault.kind == "corrupt":
                    while idx < len(out) - 1 and out[idx] in _SPECIAL:
                        idx += 1
                    out[idx] = _flip(out[idx])
                elif fault.kind == "cut":
                    cut_at = idx if cut_at is None else min(cut_at, idx)
                    self.link_down_until = time.monotonic() + (math.inf if fault.duration is None else fault.duration)
                else:
                    stall = (idx, fault.duration or 0.0)
            if cut_at is not None:
                return [(bytes(out[:cut_at]), 0.0)]
            if stall is not None:
                idx, seconds = stall
                self.stall_until = time.monotonic() + seconds
                return [(bytes(out[:idx]), 0.0), (bytes(out[idx:]), seconds)]
            return [(bytes(out), 0.0)]
