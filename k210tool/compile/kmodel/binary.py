"""Bounded little-endian reading and writing of kmodel bytes.

Every read checks its bounds first, so a truncated or corrupt file becomes one :class:`KmodelError`
naming what was being read and where, never an ``IndexError`` or a read past the end.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import numpy as np

from k210tool.compile.kmodel.errors import KmodelError


@lru_cache(maxsize=256)
def _struct(fmt: str) -> struct.Struct:
    return struct.Struct("<" + fmt)


class Reader:
    """A cursor over ``data[start:end]``; positions are absolute offsets into ``data``."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None, what: str = "kmodel"):
        self.data = memoryview(data)
        self.end = len(self.data) if end is None else end
        if not 0 <= start <= self.end <= len(self.data):
            raise KmodelError(f"{what}: range {start}..{end} lies outside the file ({len(self.data)} bytes)")
        self.pos = start
        self.start = start
        self.what = what

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, size: int, what: str) -> None:
        if size < 0 or self.pos + size > self.end:
            raise KmodelError(
                f"{self.what}: truncated while reading {what} at offset {self.pos} "
                f"({size} bytes needed, {max(self.end - self.pos, 0)} left)"
            )

    def unpack(self, fmt: str, what: str) -> tuple:
        s = _struct(fmt)
        self._need(s.size, what)
        values = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return values

    def u8(self, what: str) -> int:
        return int(self.unpack("B", what)[0])

    def u32(self, what: str) -> int:
        return int(self.unpack("I", what)[0])

    def i32(self, what: str) -> int:
        return int(self.unpack("i", what)[0])

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", what)[0])

    def f32(self, what: str) -> float:
        return float(self.unpack("f", what)[0])

    def bytes(self, size: int, what: str) -> bytes:
        self._need(size, what)
        out = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return out

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        size = count * dt.itemsize
        self._need(size, what)
        out = np.frombuffer(self.data, dtype=dt, count=count, offset=self.pos).copy()
        self.pos += size
        return out

    def skip(self, size: int, what: str) -> None:
        self._need(size, what)
        self.pos += size

    def seek(self, pos: int, what: str) -> None:
        if not self.start <= pos <= self.end:
            raise KmodelError(f"{self.what}: {what} offset {pos} lies outside {self.start}..{self.end}")
        self.pos = pos

    def sub(self, size: int, what: str) -> Reader:
        """A reader over the next ``size`` bytes; this reader moves past them."""
        self._need(size, what)
        r = Reader(self.data, self.pos, self.pos + size, f"{self.what}: {what}")
        self.pos += size
        return r


class Writer:
    """Appends little-endian values to a bytearray; positions are absolute in the output."""

    def __init__(self) -> None:
        self.buf = bytearray()

    @property
    def pos(self) -> int:
        return len(self.buf)

    def pack(self, fmt: str, *values: object) -> None:
        self.buf += _struct(fmt).pack(*values)

    def u32(self, v: int) -> None:
        self.pack("I", v & 0xFFFFFFFF)

    def i32(self, v: int) -> None:
        self.pack("i", v)

    def u64(self, v: int) -> None:
        self.pack("Q", v)

    def f32(self, v: float) -> None:
        self.pack("f", v)

    def raw(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
        self.buf += data

    def align(self, alignment: int) -> int:
        """Pad with zeros to a multiple of ``alignment``; returns the number of padding bytes."""
        pad = (-len(self.buf)) % alignment
        self.buf += bytes(pad)
        return pad

    def patch(self, pos: int, fmt: str, *values: object) -> None:
        _struct(fmt).pack_into(self.buf, pos, *values)
