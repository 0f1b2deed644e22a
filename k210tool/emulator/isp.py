"""The emulated ISP side: the K210 mask-ROM loader and the flash-mode program the host uploads.

ROM stage: answers the greeting, stores ``MEMORY_WRITE`` chunks in SRAM after checking each chunk's
CRC32 and length, and on ``MEMORY_BOOT`` "runs" what was loaded - only if it is one contiguous image
from the boot address (a rejected chunk that the host then re-sent at the wrong address leaves a hole,
and a real board would crash: so does this one, by going silent). Stub stage: flash init/erase/status,
``FLASH_WRITE`` chunks checked (CRC32, length, range) and stored into the sparse flash, reboot.
The bytes of the uploaded program are never interpreted (we do not know them and must not copy them).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from k210tool.device import ispproto as P
from k210tool.emulator.flash import SparseFlash


@dataclass
class FlashWrite:
    """One ``FLASH_WRITE`` request as the emulator judged it."""

    address: int
    length: int
    status: str  # "ok" | "bad-crc" | "bad-length" | "out-of-range"
    time: float = field(default_factory=time.monotonic)  # when the request was complete


class IspEmulator:
    def __init__(self, flash: SparseFlash, send: Callable[[bytes], None], log: Callable[[str], None],
                 on_reboot: Callable[[], None]) -> None:
        self.flash = flash
        self._send = send
        self._log = log
        self._on_reboot = on_reboot
        self.writes: list[FlashWrite] = []
        self.rejected_sram_chunks = 0
        self.baudrates: list[int] = []
        self.flash_init_time: float | None = None  # when the host initialised the flash (programming starts)
        self.stage = "idle"
        self._decoder = P.SlipDecoder()
        self._sram: dict[int, bytes] = {}

    def enter_rom(self) -> None:
        self.stage = "rom"
        self._decoder.reset()
        self._sram.clear()

    def stop(self) -> None:
        self.stage = "idle"

    def feed(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            if self.stage in ("idle", "dead"):
                return
            request = P.parse_request(frame)
            if request is None:
                continue
            if self.stage == "rom":
                self._rom(request)
            else:
                self._stub(request)
        self._decoder.noise.clear()

    def _reply(self, op: int, status: int) -> None:
        self._send(P.build_response(op, status))

    # --- mask ROM ---------------------------------------------------------------------------------------
    def _rom(self, req: P.Request) -> None:
        if req.op == P.ROM_NOP:
            self._reply(req.op, P.RET_OK)
        elif req.op == P.ROM_MEMORY_WRITE:
            status = self._check_write(req, P.SRAM_BASE, P.SRAM_SIZE)
            if status == P.RET_OK:
                address, _n, data = req.address_length_data()
                self._sram[address] = data
            else:
                self.rejected_sram_chunks += 1
                self._log(f"isp: SRAM chunk rejected ({_status_name(status)})")
            self._reply(req.op, status)
        elif req.op == P.ROM_MEMORY_BOOT:
            if req.crc_ok:
                self._boot_program(req.words()[0] if req.words() else P.SRAM_BASE)
        elif req.op == P.ROM_CHANGE_BAUDRATE:
            if req.crc_ok and len(req.words()) >= 3:
                self.baudrates.append(req.words()[2])
        else:
            self._reply(req.op & 0xFF, P.RET_INVALID_COMMAND)

    def _boot_program(self, entry: int) -> None:
        image = bytearray()
        cursor = entry
        for address in sorted(self._sram):
            if address != cursor:
                self.stage = "dead"
                self._log(f"isp: booted a corrupt program (nothing loaded at 0x{cursor:08x}): the board hangs")
                return
            image += self._sram[address]
            cursor = address + len(self._sram[address])
        if not image:
            self.stage = "dead"
            self._log("isp: MEMORY_BOOT with no program loaded: the board hangs")
            return
        self.stage = "stub"
        digest = hashlib.sha256(image).hexdigest()[:16]
        self._log(f"isp: running the uploaded flash-mode program ({len(image)} bytes, sha256 {digest}...)")

    # --- flash-mode program ------------------------------------------------------------------------------
    def _stub(self, req: P.Request) -> None:
        op = req.op
        if op in (P.FLASH_NOP, P.FLASH_STATUS, P.FLASH_ERASE):
            self._reply(op, P.RET_OK)
        elif op == P.FLASH_BAUDRATE_SET:
            if req.crc_ok and len(req.words()) >= 3:
                self.baudrates.append(req.words()[2])
        elif op == P.FLASH_INIT:
            self.flash_init_time = time.monotonic()
            self._reply(op, P.RET_OK if req.crc_ok else P.RET_BAD_DATA_CHECKSUM)
        elif op == P.FLASH_ERASE_NONBLOCKING:
            self._erase(req)
        elif op == P.FLASH_WRITE:
            self._write(req)
        elif op == P.FLASH_REBOOT:
            self._reply(op, P.RET_OK)
            self.stage = "idle"
            self._log("isp: reboot requested")
            self._on_reboot()
        else:
            self._reply(op & 0xFF, P.RET_INVALID_COMMAND)

    def _erase(self, req: P.Request) -> None:
        if not req.crc_ok:
            self._reply(req.op, P.RET_BAD_DATA_CHECKSUM)
            return
        address, length = (req.words() + (0, 0))[:2]
        try:
            self.flash.erase(address, length)
        except ValueError:
            self._reply(req.op, P.RET_BAD_ERASE)
            return
        self._log(f"isp: erased {'the whole flash' if length == 0 else f'0x{address:x}+{length}'}")
        self._reply(req.op, P.RET_OK)

    def _write(self, req: P.Request) -> None:
        address, declared, data = req.address_length_data()
        status = self._check_write(req, 0, self.flash.size)
        self.writes.append(FlashWrite(address, len(data), _status_name(status)))
        if status == P.RET_OK:
            self.flash.write(address, data)
        else:
            self._log(f"isp: flash chunk at 0x{address:x} ({declared} bytes) rejected: {_status_name(status)}")
        self._reply(req.op, status)

    @staticmethod
    def _check_write(req: P.Request, base: int, size: int) -> int:
        if not req.crc_ok:
            return P.RET_BAD_DATA_CHECKSUM
        address, declared, data = req.address_length_data()
        if declared != len(data) or declared < 0:
            return P.RET_BAD_DATA_LEN
        if address < base or address + len(data) > base + size:
            return P.RET_BAD_WRITE
        return P.RET_OK


def _status_name(status: int) -> str:
    return {P.RET_OK: "ok", P.RET_BAD_DATA_CHECKSUM: "bad-crc", P.RET_BAD_DATA_LEN: "bad-length",
            P.RET_BAD_WRITE: "out-of-range"}.get(status, f"0x{status:02x}")
