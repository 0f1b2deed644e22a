"""The virtual board: reset/boot pins driven by DTR/RTS, and which program owns the UART.

Modes: ``firmware`` (MicroPython REPL), ``rom``/``stub`` (ISP), ``reset`` (held in reset: deaf and mute),
``dead`` (booted something broken: silent until the next reset). The ROM samples IO16 shortly after
RESET is released (:data:`BOOT_SAMPLE_DELAY`), so the order in which a host flips the two lines within
one step does not matter, as on the hardware.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from k210tool.boards import Board
from k210tool.device import ispproto as P
from k210tool.device.reset import WIRINGS, Wiring, wiring_for
from k210tool.emulator.flash import SparseFlash
from k210tool.emulator.isp import IspEmulator
from k210tool.emulator.mpmodules import default_registry
from k210tool.emulator.repl import FirmwareRepl
from k210tool.emulator.runtime import BoardContext, MicroPythonRuntime, ModuleRegistry
from k210tool.emulator.vfs import ConfinedFS

BOOT_SAMPLE_DELAY = 0.02
REBOOT_DELAY = 0.05


def _board_registry() -> ModuleRegistry:
    """The MicroPython core plus the MaixPy/CanMV hardware (camera, LCD, image, KPU, pins) of
    :mod:`k210tool.emulator.maixpy`, configured from the environment (``$K210TOOL_CAMERA``, ``$K210TOOL_LCD``)."""
    from k210tool.emulator.maixpy import register_hardware

    registry = default_registry()
    register_hardware(registry)
    return registry


class VirtualBoard:
    def __init__(self, board: Board, flash: SparseFlash, fs_root: str | Path, send: Callable[[bytes], None],
                 log: Callable[[str], None], *, modules: ModuleRegistry | None = None,
                 silent: str | None = None, raw_paste: bool | None = None) -> None:
        self.board = board
        self.flash = flash
        self._send = send
        self.log = log
        self.silent = silent  # None | "isp" | "repl" | "all"
        self.wiring: Wiring = wiring_for(board.serial.kflash_board) or WIRINGS["dan"]
        self.lines = {"dtr": False, "rts": False}
        self.mode = "reset"
        self.lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self.isp = IspEmulator(flash, self._out, log, self._schedule_reboot)
        self.context = BoardContext(board, flash, ConfinedFS(fs_root), write=lambda s: None,
                                    request_reset=self.hard_reset)
        self.runtime = MicroPythonRuntime(self.context, modules or _board_registry())
        label = "CanMV" if board.firmware.kpu_api.startswith("canmv") else "MaixPy"
        banner = (f"MicroPython v1.11 (emulated {board.firmware.name}); {board.name} with kendryte-k210\r\n"
                  'Type "help()" for more information.\r\n')
        self.repl = FirmwareRepl(self.runtime, self._out, label=label, banner=banner,
                                 raw_paste=board.firmware.raw_paste if raw_paste is None else raw_paste, log=log)

    # --- output gate ------------------------------------------------------------------------------------
    def _out(self, data: bytes) -> None:
        if self.mode in ("reset", "dead"):
            return
        if self.silent == "all" or (self.silent == "isp" and self.mode in ("rom", "stub")) or (
                self.silent == "repl" and self.mode == "firmware"):
            return
        self._send(data)

    @property
    def phase(self) -> str:
        return {"rom": "rom", "stub": "stub", "firmware": "repl"}.get(self.mode, "off")

    # --- input --------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        with self.lock:
            if self.mode in ("rom", "stub"):
                self.isp.feed(data)
                self._sync_isp_stage()
            elif self.mode == "firmware":
                self.repl.feed(data)

    def _sync_isp_stage(self) -> None:
        if self.isp.stage == "stub":
            self.mode = "stub"
        elif self.isp.stage == "dead":
            self.mode = "dead"

    # --- pins ----------------------------------------------------------------------------------------------
    def set_line(self, line: str, asserted: bool) -> None:
        with self.lock:
            before = self._pins()
            self.lines[line] = asserted
            reset, _boot = self._pins()
            if reset and not before[0]:
                self._enter_reset()
            elif before[0] and not reset:
                self._cancel_timer()
                self._timer = threading.Timer(BOOT_SAMPLE_DELAY, self._sample_boot_pin)
                self._timer.daemon = True
                self._timer.start()

    def _pins(self) -> tuple[bool, bool]:
        return self.lines[self.wiring.reset], self.lines[self.wiring.boot]

    def _enter_reset(self) -> None:
        self._cancel_timer()
        self.mode = "reset"
        self.isp.stop()
        self.repl.power_off()
        self.log("pins: RESET asserted")

    def _sample_boot_pin(self) -> None:
        with self.lock:
            reset, boot = self._pins()
            if reset:
                return
            if boot:
                self.mode = "rom"
                self.isp.enter_rom()
                self.log(f"pins: RESET released with IO16 low: ISP mode ({self.wiring.name} wiring)")
            else:
                self.log("pins: RESET released with IO16 high: booting the firmware")
                self.boot_firmware()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- booting ----------------------------------------------------------------------------------------
    def hard_reset(self) -> None:
        """What ``machine.reset()`` and the ISP reboot command do: boot the firmware from flash."""
        with self.lock:
            self._enter_reset()
            self.boot_firmware()

    def _schedule_reboot(self) -> None:
        self.mode = "reset"
        timer = threading.Timer(REBOOT_DELAY, self.hard_reset)
        timer.daemon = True
        timer.start()

    def boot_firmware(self) -> None:
        with self.lock:
            problem = self._firmware_problem()
            if problem:
                self.mode = "dead"
                self.log(f"boot: {problem}: the board does not start")
                return
            self.mode = "firmware"
            self.log("boot: firmware started")
            label = self.repl.label
            self.repl.power_on(f"\r\n[{label}] emulated by k210tool: {self.board.name}, {self.board.firmware.name}\r\n"
                               f"[{label}] Flash:0xef:0x17\r\n")

    def _firmware_problem(self) -> str | None:
        """Check the image at 0 as the boot ROM does (SHA-256 trailer), once something was flashed there."""
        if not any(w.address == 0 for w in self.isp.writes):
            return None  # nobody tried to replace the emulator's own (virtual) firmware
        header = self.flash.read(0, P.FIRMWARE_HEADER)
        length = struct.unpack_from("<I", header, 1)[0]
        if length == 0 or length + P.FIRMWARE_HEADER + P.FIRMWARE_TRAILER > self.flash.size:
            return "no valid firmware header at 0x0"
        body = self.flash.read(0, P.FIRMWARE_HEADER + length)
        stored = self.flash.read(P.FIRMWARE_HEADER + length, P.FIRMWARE_TRAILER)
        if hashlib.sha256(body).digest() != stored:
            return "firmware SHA-256 at 0x0 does not match its image"
        return None

    def power_on(self) -> None:
        self.boot_firmware()

    def shutdown(self) -> None:
        with self.lock:
            self._cancel_timer()
            self.mode = "reset"
            self.repl.power_off()
