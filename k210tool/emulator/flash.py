"""The emulated SPI flash: a sparse image of ``board.flash_size`` bytes that reads 0xFF where unwritten."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

from k210tool.errors import InputError

SECTOR = 4096
_MAGIC = b"K210FLSH"


class SparseFlash:
    """Thread-safe sparse flash; whole 4 KiB sectors are allocated on first write."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sectors: dict[int, bytearray] = {}
        self._lock = threading.Lock()

    def _check(self, address: int, length: int) -> None:
        if address < 0 or length < 0 or address + length > self.size:
            raise ValueError(f"flash range 0x{address:x}+{length} is outside 0..0x{self.size:x}")

    def write(self, address: int, data: bytes) -> None:
        self._check(address, len(data))
        with self._lock:
            pos = 0
            while pos < len(data):
                index, offset = divmod(address + pos, SECTOR)
                n = min(SECTOR - offset, len(data) - pos)
                sector = self._sectors.setdefault(index, bytearray(b"\xff" * SECTOR))
                sector[offset:offset + n] = data[pos:pos + n]
                pos += n

    def read(self, address: int, length: int) -> bytes:
        self._check(address, length)
        out = bytearray()
        with self._lock:
            pos = 0
            while pos < length:
                index, offset = divmod(address + pos, SECTOR)
                n = min(SECTOR - offset, length - pos)
                sector = self._sectors.get(index)
                out += sector[offset:offset + n] if sector is not None else b"\xff" * n
                pos += n
        return bytes(out)

    def erase(self, address: int, length: int) -> None:
        """Erase whole sectors covering the range (``length`` 0 = the whole chip)."""
        if length == 0:
            with self._lock:
                self._sectors.clear()
            return
        self._check(address, length)
        with self._lock:
            for index in range(address // SECTOR, (address + length + SECTOR - 1) // SECTOR):
                self._sectors.pop(index, None)

    def written_bytes(self) -> int:
        with self._lock:
            return len(self._sectors) * SECTOR

    def save(self, path: str | Path) -> None:
        """Persist as ``K210FLSH | u32 size | (u32 sector index | 4096 bytes)*``, atomically."""
        from k210tool.fileio import atomic_open

        with self._lock, atomic_open(path, "wb") as fh:
            fh.write(_MAGIC + struct.pack("<I", self.size))
            for index in sorted(self._sectors):
                fh.write(struct.pack("<I", index) + bytes(self._sectors[index]))

    @classmethod
    def load(cls, path: str | Path, size: int) -> SparseFlash:
        flash = cls(size)
        data = Path(path).read_bytes()
        if data[:8] != _MAGIC or len(data) < 12 or (len(data) - 12) % (SECTOR + 4):
            raise InputError(f"{path} is not a k210tool flash image", "delete it or choose another --flash-image")
        saved = struct.unpack_from("<I", data, 8)[0]
        if saved != size:
            raise InputError(f"{path} holds a {saved}-byte flash, the board has {size} bytes",
                             "use the same --board or another --flash-image")
        for pos in range(12, len(data), SECTOR + 4):
            index = struct.unpack_from("<I", data, pos)[0]
            flash._sectors[index] = bytearray(data[pos + 4:pos + 4 + SECTOR])
        return flash
