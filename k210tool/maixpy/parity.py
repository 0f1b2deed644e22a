"""The text format the ``parity`` template prints on the board, and the host-side parser.

The board prints one frame per line, anywhere among other output (firmware chatter such as CanMV's
"model load succeed" is ignored)::

    @K210P begin format=1 api=canmv vectors=2 outputs=1 input=exact chw=3x112x112 sizes=128 crc=1a2b3c4d
    @K210P out vec=0 out=0 n=128 off=0 data=<hex of float32 little-endian> crc=...
    @K210P time vec=0 us=41234 crc=...
    @K210P err vec=1 msg=<hex of the UTF-8 exception text> crc=...
    @K210P end vectors=2 crc=...

``crc`` is the CRC-32 (zlib's polynomial) of the text between ``@K210P `` and `` crc=``, written as 8 hex
digits. An output is split over frames of at most 64 floats (``off`` = index of the first float) so no line
is long. Floats travel as their IEEE bytes: the host gets exactly what the KPU runtime returned.

Inputs: the board reads ``NNNN.bin`` files, each the model's uint8 input in NCHW order (what
``Preprocess.prepare`` gives, transposed). CanMV releases take a file path in ``run_with_output`` and feed
the bytes unchanged (``input=exact``). MaixPy-v1 and CanMV feat/kpu only accept an image: the template
writes the pixels into an RGB565 image and calls ``pix_to_ai()``, which rounds every value to 5/6/5 bits
(``input=rgb565``); :func:`board_inputs` applies the same rounding on the host (tables of the firmware's
``rgb2rgb_tab.c``), so simulator and board see identical bytes. Single-channel models are exact everywhere
(a greyscale image's ``pix_to_ai`` is a copy).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from k210tool.errors import DeviceError, InputError

MAGIC = "@K210P "
FORMAT_VERSION = 1
CHUNK_FLOATS = 64
_KINDS = {
    "begin": ("format", "api", "vectors", "outputs", "input", "chw", "sizes"),
    "out": ("vec", "out", "n", "off", "data"),
    "time": ("vec", "us"),
    "err": ("vec", "msg"),
    "end": ("vectors",),
}
_FRAME = re.compile(r"^(?P<body>[a-z]+(?: [a-z]+=[0-9A-Za-z_.,x-]*)*) crc=(?P<crc>[0-9a-f]{8})$")


def input_mode(kpu_api: str, channels: int = 3) -> str:
    """``exact`` when the board feeds input files unchanged, ``rgb565`` when they pass an RGB565 image."""
    return "exact" if kpu_api == "canmv" or channels == 1 else "rgb565"


def _tables() -> tuple[np.ndarray, np.ndarray]:
    # 8 -> 5/6 -> 8 bit round trip of the firmware's rgb2rgb tables: round(v*31/255) then round(r5*255/31).
    # The products never land on .5, so floor(x + 0.5) reproduces the tables exactly.
    v = np.arange(256, dtype=np.float64)
    rb = np.floor(np.floor(v * 31 / 255 + 0.5) * 255 / 31 + 0.5).astype(np.uint8)
    g = np.floor(np.floor(v * 63 / 255 + 0.5) * 255 / 63 + 0.5).astype(np.uint8)
    return rb, g


def rgb565_roundtrip(nhwc: np.ndarray) -> np.ndarray:
    """What ``set_pixel((r, g, b))`` + ``pix_to_ai()`` leave of uint8 RGB pixels ``(..., 3)``."""
    x = np.asarray(nhwc)
    if x.dtype != np.uint8 or x.shape[-1] != 3:
        raise InputError(f"expected uint8 (..., 3) pixels, got {x.dtype} {x.shape}")
    rb, g = _tables()
    out = np.empty_like(x)
    out[..., 0] = rb[x[..., 0]]
    out[..., 1] = g[x[..., 1]]
    out[..., 2] = rb[x[..., 2]]
    return out


def board_inputs(batch_nhwc: np.ndarray, kpu_api: str) -> np.ndarray:
    """The uint8 NHWC inputs the board will really feed the KPU for ``batch_nhwc`` (see module doc)."""
    batch = np.asarray(batch_nhwc)
    if batch.dtype != np.uint8 or batch.ndim != 4:
        raise InputError(f"expected a uint8 (N, H, W, C) batch, got {batch.dtype} {batch.shape}")
    if input_mode(kpu_api, batch.shape[-1]) == "rgb565":
        return rgb565_roundtrip(batch)
    return batch


def input_file_bytes(hwc: np.ndarray) -> bytes:
    """One input file: uint8 ``(H, W, C)`` -> NCHW bytes (the K210's planar ``pix_to_ai`` layout)."""
    return np.ascontiguousarray(np.asarray(hwc, np.uint8).transpose(2, 0, 1)).tobytes()


def input_file_name(index: int) -> str:
    return f"{index:04d}.bin"


@dataclass(frozen=True)
class CorruptFrame:
    line: int
    reason: str
    text: str


@dataclass
class ParityRun:
    """Everything the frames said. ``outputs[v]`` is None for a vector whose frames are missing."""

    header: dict[str, str]
    outputs: list[list[np.ndarray] | None]
    latency_us: list[int | None]
    errors: dict[int, str] = field(default_factory=dict)
    corrupt: list[CorruptFrame] = field(default_factory=list)
    complete: bool = False
    other_lines: int = 0

    @property
    def vectors(self) -> int:
        return len(self.outputs)

    def problems(self) -> list[str]:
        found = [f"line {c.line}: {c.reason}" for c in self.corrupt]
        if not self.header:
            found.append("no begin frame (did the parity script start?)")
        if self.header and not self.complete:
            found.append("no end frame: the output was cut off")
        found += [f"vector {v} failed on the board: {msg}" for v, msg in sorted(self.errors.items())]
        found += [f"vector {v}: output frames missing" for v, o in enumerate(self.outputs)
                  if o is None and v not in self.errors]
        return found


def crc_of(body: str) -> str:
    return f"{zlib.crc32(body.encode('ascii')) & 0xFFFFFFFF:08x}"


def _fields(kind: str, body: str) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in body.split(" ")[1:])
    if set(pairs) != set(_KINDS[kind]):
        raise ValueError(f"{kind} frame has fields {sorted(pairs)}, expected {sorted(_KINDS[kind])}")
    return pairs


def _decode_frame(text: str) -> tuple[str, dict[str, str]]:
    m = _FRAME.match(text)
    if not m:
        raise ValueError("malformed frame")
    body = m.group("body")
    if crc_of(body) != m.group("crc"):
        raise ValueError("checksum mismatch")
    kind = body.split(" ", 1)[0]
    if kind not in _KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    return kind, _fields(kind, body)


class _Collector:
    def __init__(self) -> None:
        self.run = ParityRun({}, [], [])
        self.sizes: list[int] = []
        self.chunks: dict[tuple[int, int], dict[int, np.ndarray]] = {}

    def begin(self, f: dict[str, str]) -> None:
        if int(f["format"]) != FORMAT_VERSION:
            raise ValueError(f"frame format {f['format']} (this k210tool reads {FORMAT_VERSION})")
        n = int(f["vectors"])
        self.sizes = [int(s) for s in f["sizes"].split(",") if s] if f["sizes"] else []
        if len(self.sizes) != int(f["outputs"]):
            raise ValueError("begin frame: sizes do not match outputs")
        self.run = ParityRun(dict(f), [None] * n, [None] * n, other_lines=self.run.other_lines,
                             corrupt=self.run.corrupt)
        self.chunks = {}

    def _vec(self, f: dict[str, str]) -> int:
        v = int(f["vec"])
        if not self.run.header or not 0 <= v < len(self.run.outputs):
            raise ValueError(f"vector {v} outside the announced {len(self.run.outputs)}")
        return v

    def out(self, f: dict[str, str]) -> None:
        v, o, n, off = self._vec(f), int(f["out"]), int(f["n"]), int(f["off"])
        if not 0 <= o < len(self.sizes) or n != self.sizes[o]:
            raise ValueError(f"output {o} of {n} floats was not announced")
        data = np.frombuffer(bytes.fromhex(f["data"]), dtype="<f4")
        if off < 0 or off + data.size > n or data.size == 0:
            raise ValueError(f"chunk {off}+{data.size} outside output of {n} floats")
        self.chunks.setdefault((v, o), {})[off] = data

    def time(self, f: dict[str, str]) -> None:
        self.run.latency_us[self._vec(f)] = int(f["us"])

    def err(self, f: dict[str, str]) -> None:
        self.run.errors[self._vec(f)] = bytes.fromhex(f["msg"]).decode("utf-8", "replace")

    def end(self, f: dict[str, str]) -> None:
        if not self.run.header or int(f["vectors"]) != len(self.run.outputs):
            raise ValueError("end frame does not match the begin frame")
        self.run.complete = True

    def assemble(self) -> None:
        for v in range(len(self.run.outputs)):
            outs = [self._joined(v, o, n) for o, n in enumerate(self.sizes)]
            self.run.outputs[v] = None if any(x is None for x in outs) else outs  # type: ignore[misc]

    def _joined(self, v: int, o: int, n: int) -> np.ndarray | None:
        parts = self.chunks.get((v, o), {})
        out = np.empty(n, np.float32)
        covered = 0
        for off in sorted(parts):
            if off != covered:
                return None
            out[off : off + parts[off].size] = parts[off]
            covered = off + parts[off].size
        return out if covered == n else None


def parse_parity(text: str, strict: bool = True) -> ParityRun:
    """Parse the board's output. ``strict`` raises DeviceError on any corrupt, missing or failed frame."""
    col = _Collector()
    for number, raw in enumerate(text.splitlines(), 1):
        at = raw.find(MAGIC)
        if at < 0:
            col.run.other_lines += 1 if raw.strip() else 0
            continue
        line = raw[at + len(MAGIC):].rstrip("\r\n ")
        try:
            kind, fields = _decode_frame(line)
            getattr(col, kind)(fields)
        except (ValueError, KeyError) as exc:
            col.run.corrupt.append(CorruptFrame(number, str(exc), line[:80]))
    col.assemble()
    run = col.run
    if strict and run.problems():
        issues = run.problems()
        raise DeviceError(f"parity output from the board is not usable: {issues[0]}"
                          + (f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""),
                          "run the parity script again; check the serial link if frames are corrupted")
    return run
