"""The K210 UART ISP wire format, shared by the greeting probe and the emulator.

Both the mask-ROM loader and the flash-mode program that kflash uploads speak SLIP-framed packets
(0xC0 ends a frame; 0xDB 0xDC / 0xDB 0xDD escape 0xC0 / 0xDB). A request is::

    u16 op | u16 reserved (0) | u32 crc32 | payload

where the CRC covers the payload; write requests carry ``u32 address | u32 length | data``. A response is
``u8 op | u8 status`` (the op it answers, then one of the ``RET_*`` codes). Ops 0xC1-0xC6 belong to the
ROM, 0xD1-0xD9 to the flash-mode program. Learned from kflash 1.1.6's sources (read, not copied).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SLIP_END = 0xC0
SLIP_ESC = 0xDB
SLIP_ESC_END = 0xDC
SLIP_ESC_ESC = 0xDD

# ROM (mask ROM boot loader, entered when IO16 is low at reset)
ROM_NOP = 0xC2
ROM_MEMORY_WRITE = 0xC3
ROM_MEMORY_BOOT = 0xC5
ROM_CHANGE_BAUDRATE = 0xC6
# flash-mode program (uploaded to SRAM by the host and booted with ROM_MEMORY_BOOT)
FLASH_DEBUG_INFO = 0xD1
FLASH_NOP = 0xD2
FLASH_ERASE = 0xD3
FLASH_WRITE = 0xD4
FLASH_REBOOT = 0xD5
FLASH_BAUDRATE_SET = 0xD6
FLASH_INIT = 0xD7
FLASH_ERASE_NONBLOCKING = 0xD8
FLASH_STATUS = 0xD9

RET_DEFAULT = 0x00
RET_OK = 0xE0
RET_BAD_DATA_LEN = 0xE1
RET_BAD_DATA_CHECKSUM = 0xE2
RET_INVALID_COMMAND = 0xE3
RET_BAD_INIT = 0xE4
RET_BAD_ERASE = 0xE5
RET_BAD_WRITE = 0xE6
RET_FLASH_BUSY = 0xE7

# Requests whose CRC field is sent as zero (kflash sends these as fixed byte strings).
UNCHECKED_OPS = frozenset({ROM_NOP, FLASH_NOP, FLASH_REBOOT, FLASH_STATUS})
SRAM_BASE = 0x80000000
SRAM_SIZE = 6 * 1024 * 1024

# The firmware image header kflash writes when a kfpkg entry has "sha256Prefix": true:
# u8 flags (bit0 AES, bit1 DIO) | u32 length | image | sha256(flags | length | image).
FIRMWARE_HEADER = 5
FIRMWARE_TRAILER = 32


def slip_encode(packet: bytes) -> bytes:
    body = packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


def slip_unescape(body: bytes) -> bytes:
    return body.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")


class SlipDecoder:
    """Incremental SLIP decoder: feed bytes, get complete frames. Bytes outside frames are kept apart."""

    def __init__(self) -> None:
        self._frame: bytearray | None = None
        self.noise = bytearray()  # bytes seen outside any frame (e.g. REPL text)

    def feed(self, data: bytes) -> list[bytes]:
        # bytes.find instead of a per-byte loop: megabytes of flash data pass through here.
        frames: list[bytes] = []
        pos = 0
        while pos < len(data):
            end = data.find(b"\xc0", pos)
            if self._frame is None:
                if end < 0:
                    self.noise += data[pos:]
                    break
                self.noise += data[pos:end]
                self._frame = bytearray()
            else:
                if end < 0:
                    self._frame += data[pos:]
                    break
                self._frame += data[pos:end]
                if self._frame:  # an empty frame (0xC0 0xC0) is the start of the next one
                    frames.append(slip_unescape(bytes(self._frame)))
                    self._frame = None
            pos = end + 1
        return frames

    def reset(self) -> None:
        self._frame = None
        self.noise.clear()


@dataclass(frozen=True)
class Request:
    op: int
    crc: int
    payload: bytes

    @property
    def crc_ok(self) -> bool:
        return self.op in UNCHECKED_OPS or zlib.crc32(self.payload) & 0xFFFFFFFF == self.crc

    def address_length_data(self) -> tuple[int, int, bytes]:
        """For write requests: (address, declared length, data)."""
        if len(self.payload) < 8:
            return 0, -1, b""
        address, length = struct.unpack_from("<II", self.payload)
        return address, length, self.payload[8:]

    def words(self) -> tuple[int, ...]:
        n = len(self.payload) // 4
        return struct.unpack_from(f"<{n}I", self.payload) if n else ()


def parse_request(frame: bytes) -> Request | None:
    if len(frame) < 8:
        return None
    op, _reserved, crc = struct.unpack_from("<HHI", frame)
    return Request(op, crc, frame[8:])


def build_request(op: int, payload: bytes = b"\x00" * 8, checked: bool = True) -> bytes:
    crc = zlib.crc32(payload) & 0xFFFFFFFF if checked else 0
    return slip_encode(struct.pack("<HHI", op, 0, crc) + payload)


def build_response(op: int, status: int) -> bytes:
    return slip_encode(bytes((op, status)))


# The exact bytes kflash sends as its greeting (a NOP with a 5-byte zero payload), known to work on boards.
GREETING = build_request(ROM_NOP, b"\x00" * 5, checked=False)
