"""What a kmodel asks of the board, read from the kmodel itself: memory and the ops it runs where.

The firmware reads the whole kmodel file into a heap buffer, then allocates the runtime's working memory
(kmodel v4: its main memory, which holds the inputs and outputs; v5: the input, output and data pools, as
nncase's own TOTAL counts them) and the runtime's own objects (a small per-firmware allowance,
``model_overhead`` in ``boards/firmware.toml``); the 2 MiB KPU RAM is separate. :func:`board_fit` is the one
answer to "does this kmodel load on this firmware": ``convert``'s verdict, ``check``, ``script``, ``flash``
and the emulator's loader all ask it, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.model import Kmodel

if TYPE_CHECKING:
    from k210tool.boards import Firmware

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


@dataclass(frozen=True)
class Fit:
    """Whether a kmodel loads on a firmware, and the parts of what its loader allocates against the limit."""

    firmware: str  # firmware id (boards/firmware.toml)
    version: int  # the kmodel's format version
    file: int  # the kmodel file, read whole into a heap buffer first
    working: int  # the runtime's working memory (0 when the kmodel could not be read: see ``unread``)
    overhead: int  # the firmware's allowance for the runtime's own objects (boards/firmware.toml)
    limit: int  # RAM the firmware leaves for this model (minus the models already loaded)
    kpu_ram: int  # peak KPU RAM, out of its own 2 MiB (not counted against ``limit``)
    fits: bool
    problem: str  # "" fits, "version" (cannot load this version), "buffer" (the file alone), "memory" (the sum)
    reason: str  # one line saying which and by how much
    parts: dict[str, int] = field(default_factory=dict)  # the working memory by pool
    unread: str = ""  # why the working memory is unknown (a kmodel k210tool cannot read); "" when it is known

    @property
    def total(self) -> int:
        return self.file + self.working + self.overhead

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "total": self.total}


def board_fit(kmodel: Kmodel | bytes, firmware: Firmware, in_use: int = 0) -> Fit:
    """Does ``kmodel`` load and run on ``firmware`` with ``in_use`` bytes of its model memory already taken?

    The checks run in the firmware loader's order: the kmodel version, the file's own buffer, then the file +
    working memory + the firmware's overhead. Bytes that do not parse beyond the header are judged on what is
    known (version, file size) and ``unread`` says why the rest is not."""
    unread = ""
    if isinstance(kmodel, Kmodel):
        km: Kmodel | None = kmodel
        version, size = kmodel.version, kmodel.size
    else:
        from k210tool.compile.kmodel import kmodel_version, read_kmodel

        version, size = kmodel_version(kmodel), len(kmodel)
        try:
            km = read_kmodel(kmodel)
        except KmodelError as exc:
            km, unread = None, exc.message
    fp = footprint(km) if km is not None else Footprint(size, 0, 0)
    fit = Fit(firmware.id, version, size, fp.working, firmware.model_overhead, firmware.model_memory - in_use,
              fp.kpu_ram, True, "", "", fp.parts, unread)
    problem, reason = _verdict(fit, firmware, in_use)
    return dataclasses.replace(fit, fits=not problem, problem=problem, reason=reason)


def _verdict(fit: Fit, firmware: Firmware, in_use: int) -> tuple[str, str]:
    room = f"{_mib(firmware.model_memory)} {firmware.name} leaves for models"
    if in_use:
        room = f"{_mib(fit.limit)} left (other models hold {_mib(in_use)}) of the {room}"
    if not firmware.loads(fit.version):
        return "version", (f"{firmware.name} loads kmodel v{'/v'.join(map(str, firmware.kmodel_versions))}, "
                           f"this one is v{fit.version}")
    parts = (f"kmodel file {_mib(fit.file)} + working memory {_mib(fit.working)} + firmware {_kib(fit.overhead)}"
             + (" (working memory unknown: k210tool cannot read this kmodel)" if fit.unread else ""))
    if fit.file > fit.limit:
        return "buffer", (f"the {_mib(fit.file)} kmodel file alone does not fit the {room} (the firmware reads "
                          "the whole file into RAM before the runtime allocates anything)")
    if fit.total > fit.limit:
        return "memory", f"needs {_mib(fit.total)} ({parts}) of the {room}: {fit.total - fit.limit:,} bytes too many"
    return "", f"fits: {_mib(fit.total)} ({parts}) of the {room}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB"


def _kpu_peak(km: Kmodel) -> int:
    from k210tool.compile.kmodel.layout import kpu_bytes

    peak = 0
    for layer in km.layers:
        if layer.kpu is not None:
            c, h, w = layer.kpu.out_shape
            peak = max(peak, layer.kpu.dst_address + kpu_bytes(c, h, w))
    return peak


def largest_cpu_float_weights(km: Kmodel) -> int:
    """Bytes of the largest float32 weight tensor a CPU op holds (a dense layer nncase left on the CPU)."""
    largest = 0
    for layer in km.layers:
        w = layer.args.get("weights") if layer.placement == "CPU" else None
        if isinstance(w, dict) and w.get("dtype") == "float32":  # v5: a range of .rdata, in bytes
            largest = max(largest, int(w.get("size", 0)))
        elif isinstance(w, dict) and w.get("array") == "float32":  # v4: stored in the op, in elements
            largest = max(largest, 4 * int(w.get("length", 0)))
    return largest


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
