"""KPU RAM: the 2 MiB the KPU's layers read and write, batched over N images.

Feature maps lie in KPU RAM in the row layout of :func:`k210tool.compile.kmodel.layout.row_layout`
(``upload``/``download``). :class:`KpuRam` keeps them in the interpreter's channel-major form
``(C, M, H, W)`` until something reads them as bytes.
"""

from __future__ import annotations

import functools

import numpy as np

from k210tool.compile.kmodel.layout import row_layout
from k210tool.errors import InputError

__all__ = ["KpuModelError", "KpuRam", "download", "fmap_bytes", "from_cm", "to_cm", "upload"]


class KpuModelError(InputError):
    """A KPU layer this functional model cannot run (a hardware setting nncase never emits)."""


def upload(ram: np.ndarray, start: int, x: np.ndarray) -> None:
    """Write ``x`` (N, B, C, H, W) uint8 into KPU RAM ``ram`` (N, bytes) at ``start`` in row layout."""
    n, b, c, h, w = x.shape
    for batch in range(b):
        region, lay = _region(ram, start + batch * fmap_bytes(c, h, w), c, h, w)
        if lay.groups == 1:
            region[:, :c, :, :w] = x[:, batch]
            continue
        full = c // lay.groups
        if full:
            src = x[:, batch, : full * lay.groups].reshape(n, full, lay.groups, h, w).transpose(0, 1, 3, 2, 4)
            region[:, :full, :, :, :w] = src
        for ch in range(full * lay.groups, c):
            region[:, full, :, ch % lay.groups, :w] = x[:, batch, ch]


def download(ram: np.ndarray, start: int, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Read a (B, C, H, W) feature map at ``start`` of KPU RAM: returns (N, B, C, H, W) uint8."""
    b, c, h, w = shape
    out = np.empty((ram.shape[0], b, c, h, w), np.uint8)
    for batch in range(b):
        region, lay = _region(ram, start + batch * fmap_bytes(c, h, w), c, h, w)
        if lay.groups == 1:
            out[:, batch] = region[:, :c, :, :w]
        else:
            blocks = region.shape[1]
            out[:, batch] = region[..., :w].transpose(0, 1, 3, 2, 4).reshape(
                ram.shape[0], blocks * lay.groups, h, w)[:, :c]
    return out


def fmap_bytes(c: int, h: int, w: int) -> int:
    lay = row_layout(w)
    per_row = min(c, lay.groups)
    return lay.row_len * h * ((c + per_row - 1) // per_row) * 64


def _region(ram: np.ndarray, start: int, c: int, h: int, w: int) -> tuple[np.ndarray, object]:
    lay = row_layout(w)
    blocks = (c + lay.groups - 1) // lay.groups
    size = blocks * h * lay.row_len * 64
    if start < 0 or start + size > ram.shape[1]:
        raise KpuModelError(f"feature map {c}x{h}x{w} at {start} lies outside the 2 MiB KPU RAM")
    flat = ram[:, start : start + size]
    if lay.groups == 1:
        return flat.reshape(ram.shape[0], blocks, h, lay.row_len * 64), lay
    return flat.reshape(ram.shape[0], blocks, h, lay.groups, lay.row_pitch), lay


def to_cm(x: np.ndarray) -> np.ndarray:
    """(N, B, C, H, W) -> (C, N*B, H, W)."""
    n, b, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n * b, c, h, w).transpose(1, 0, 2, 3))


def from_cm(x: np.ndarray, n: int) -> np.ndarray:
    """(C, N*B, H, W) -> (N, B, C, H, W)."""
    c, m, h, w = x.shape
    return x.transpose(1, 0, 2, 3).reshape(n, m // n, c, h, w)


class _Lazy:
    """A feature map kept in channel-major form at ``start``. ``covered`` marks the bytes later stores
    wrote over (None: none); only this map's other bytes are still its own."""

    __slots__ = ("covered", "end", "left", "shape", "start", "x")

    def __init__(self, start: int, end: int, shape: tuple[int, int, int, int], x: np.ndarray) -> None:
        self.start, self.end, self.shape, self.x = start, end, shape, x
        self.covered: np.ndarray | None = None
        self.left = -1  # how many of its data bytes are still its own, counted on the first cover

    def cover(self, start: int, shape: tuple[int, int, int, int]) -> bool:
        """Mark the bytes a store of ``shape`` at ``start`` writes; True when none of this map's are left.

        A store writes its data bytes only: the unused channel slots and row ends of the KPU's row layout
        keep what was there, so ranges overlapping is not enough to drop the older map.
        """
        theirs = written_bytes(shape)
        a, b = max(start, self.start), min(start + len(theirs), self.end)
        mine = written_bytes(self.shape)[a - self.start : b - self.start]
        if self.covered is None:
            self.covered = np.zeros(self.end - self.start, bool)
            self.left = int(np.count_nonzero(written_bytes(self.shape)))
        covered = self.covered[a - self.start : b - self.start]
        new = theirs[a - start : b - start] & ~covered
        self.left -= int(np.count_nonzero(new & mine))
        covered |= new
        return self.left == 0


@functools.lru_cache(maxsize=256)
def written_bytes(shape: tuple[int, int, int, int]) -> np.ndarray:
    """Which bytes of its KPU RAM range a (B, C, H, W) map's upload writes (read-only)."""
    b, c, h, w = shape
    probe = np.zeros((1, b * fmap_bytes(c, h, w)), np.uint8)
    upload(probe, 0, np.ones((1, b, c, h, w), np.uint8))
    mask = probe[0] != 0
    mask.flags.writeable = False
    return mask


class KpuRam:
    """KPU RAM whose feature maps stay in channel-major form until something reads them as bytes.

    ``store`` keeps a map lazily at its address; ``load`` of the same address and shape returns it as is.
    A store that overwrites part of an older map only marks those bytes as the newer map's: the older map
    is written out (its remaining bytes only) if and when something reads them, which in nncase's memory
    plans is usually never. Any access that is not an exact hit writes the overlapping maps into the byte
    array first, so reads always see exactly the bytes the hardware would hold.
    """

    def __init__(self, ram: np.ndarray) -> None:
        self.ram = ram
        self.n = ram.shape[0]
        self.maps: list[_Lazy] = []

    def store(self, start: int, shape: tuple[int, int, int, int], x: np.ndarray) -> None:
        end = start + shape[0] * fmap_bytes(*shape[1:])
        if end > self.ram.shape[1] or start < 0:
            raise KpuModelError(f"feature map {shape} at {start} lies outside the 2 MiB KPU RAM")
        self.maps = [m for m in self.maps if not (m.start < end and start < m.end and m.cover(start, shape))]
        self.maps.append(_Lazy(start, end, shape, x))

    def load(self, start: int, shape: tuple[int, int, int, int]) -> np.ndarray:
        for m in self.maps:
            if m.start == start and m.shape == shape and m.covered is None:
                return m.x
        self.flush_range(start, start + shape[0] * fmap_bytes(*shape[1:]))
        return to_cm(download(self.ram, start, shape))

    def flush_range(self, start: int, end: int) -> None:
        """Write every map with bytes in [start, end) into the byte array (each map its own bytes only)."""
        keep = []
        for m in self.maps:
            if m.start < end and start < m.end:
                self._write(m)
            else:
                keep.append(m)
        self.maps = keep

    def _write(self, m: _Lazy) -> None:
        if m.covered is None:
            upload(self.ram, m.start, from_cm(m.x, self.n))
            return
        # lay the whole map out over a copy of the current bytes, then keep the bytes still its own
        region = self.ram[:, m.start : m.end]
        scratch = region.copy()
        upload(scratch, 0, from_cm(m.x, self.n))
        np.copyto(region, scratch, where=~m.covered[None, :])
