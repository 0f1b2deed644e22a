"""Serve a :class:`~k210tool.emulator.board.VirtualBoard` on a Linux pseudo-terminal.

The emulator is a port like any other: clients open the pty path it prints. Bytes written while no
client has the port open are lost, as on a UART. The shim directory holds ``sitecustomize.py``
(:mod:`k210tool.device.linkshim`) and the Unix socket that carries DTR/RTS changes
(:class:`k210tool.device.ptylink.PtyLink`)::

    with Emulator("maix_dock", fs_root=tmp) as emu:
        subprocess.run(["kflash", "-p", emu.port, "-B", "dan", "x.kfpkg"], env=emu.client_env())
        emu.flash.read(0x300000, 16)

Threads: a reader (pty -> faults -> board), a writer (board -> pty, throttled to baud/10 when asked),
the line channel, and the board's MicroPython task. Everything the board does goes to
:attr:`Emulator.events` (and to ``log`` when given).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from k210tool.boards import Board, get_board
from k210tool.device.ptylink import PtyLink
from k210tool.emulator.board import VirtualBoard
from k210tool.emulator.faults import Fault, FaultInjector, parse_fault
from k210tool.emulator.flash import SparseFlash
from k210tool.emulator.runtime import ModuleRegistry
from k210tool.errors import InputError


class Emulator:
    def __init__(self, board: str | Board = "maix_dock", firmware: str | None = None, *,
                 fs_root: str | os.PathLike[str] | None = None, flash_image: str | os.PathLike[str] | None = None,
                 faults: list[Fault | str] | tuple[Fault | str, ...] = (), silent: str | None = None,
                 raw_paste: bool | None = None, throttle: bool = False, modules: ModuleRegistry | None = None,
                 link: str | os.PathLike[str] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.board_info = board if isinstance(board, Board) else get_board(board, firmware)
        if silent not in (None, "isp", "repl", "all"):
            raise InputError(f"bad --silent value {silent!r}", "choose isp, repl or all")
        self.throttle = throttle
        self.faults = FaultInjector([f if isinstance(f, Fault) else parse_fault(f) for f in faults])
        self.events: list[str] = []
        self._log_cb = log
        self._t0 = time.monotonic()
        self.flash_image = Path(flash_image) if flash_image else None
        size = self.board_info.flash_size
        self.flash = (SparseFlash.load(self.flash_image, size) if self.flash_image and self.flash_image.exists()
                      else SparseFlash(size))
        self._own_fs = fs_root is None
        self.fs_root = Path(fs_root) if fs_root else Path(tempfile.mkdtemp(prefix="k210tool-emu-fs-"))
        self.fs_root.mkdir(parents=True, exist_ok=True)
        self.link = Path(link) if link else None
        self._out: queue.Queue[bytes] = queue.Queue()
        self.board = VirtualBoard(self.board_info, self.flash, self.fs_root, self._out.put, self.log,
                                  modules=modules, silent=silent, raw_paste=raw_paste)
        self.pty = PtyLink(self._apply_line_change, f"k210tool emulator ({self.board_info.id})")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connected = False
        self.rx_bytes = 0
        self.tx_bytes = 0

    # --- lifecycle -------------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        return self.pty.port

    @property
    def shim_dir(self) -> Path:
        return self.pty.shim_dir

    def start(self) -> Emulator:
        self.pty.open()
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.port)
        for target, name in ((self._reader, "k210-emu-reader"), (self._writer, "k210-emu-writer")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.board.power_on()
        self.log(f"serving {self.board_info.id} ({self.board_info.firmware.id}) on {self.port}")
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.board.shutdown()
        for t in self._threads:
            t.join(timeout=2)
        self.pty.close()
        if self.flash_image:
            self.flash.save(self.flash_image)
        if self.link:
            with contextlib.suppress(OSError):
                self.link.unlink()
        if self._own_fs:
            shutil.rmtree(self.fs_root, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()

    # --- for clients -----------------------------------------------------------------------------------
    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client subprocess: PYTHONPATH starts with the shim directory."""
        return self.pty.client_env(base)

    def attach_in_process(self) -> None:
        """Let this process's pyserial reach the emulated DTR/RTS lines (what the shim does in clients)."""
        self.pty.attach_in_process()

    def log(self, text: str) -> None:
        line = f"{time.monotonic() - self._t0:8.3f} {text}"
        self.events.append(text)
        if self._log_cb is not None:
            self._log_cb(line)

    # --- the link --------------------------------------------------------------------------------------
    def _rate(self) -> float | None:
        """Bytes per second of the client's current baud rate (8N1: 10 bits a byte), when throttling."""
        if not self.throttle:
            return None
        return (self.pty.baudrate() or 115200) / 10

    def _read_available(self, limit: int = 65536) -> bytes | None:
        """Non-blocking read; None when no client has the port open."""
        data = self.pty.read_available(limit)
        self._set_connected(data is not None)
        return data

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            self.log("host opened the port" if connected else "host closed the port")

    def _ingest(self, data: bytes) -> None:
        """Received bytes -> fault injection -> board (caller holds the board lock)."""
        self.rx_bytes += len(data)
        for piece, wait in self.faults.filter_rx(self.board.phase, data):
            if wait:
                time.sleep(wait)
            if piece:
                self.board.feed(piece)
        for note in self.faults.fired:
            self.log(f"fault: {note}")
        self.faults.fired.clear()

    def _reader(self) -> None:
        while not self._stop.is_set():
            if not self.pty.wait_readable(0.05):
                continue
            rate = self._rate()
            with self.board.lock:
                try:
                    data = self._read_available(max(1, int(rate * 0.01)) if rate else 65536)
                except OSError:
                    return
                if data:
                    self._ingest(data)
            if data is None:
                time.sleep(0.02)
            elif data and rate:
                time.sleep(len(data) / rate)

    def _writer(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._out.get(timeout=0.1)
            except queue.Empty:
                continue
            while self.faults.stalled() and not self._stop.is_set():
                time.sleep(0.01)
            if self.faults.link_down():
                continue
            rate = self._rate()
            step = max(1, int(rate * 0.01)) if rate else len(data)
            for pos in range(0, len(data), step):
                piece = data[pos:pos + step]
                if not self.pty.write_all(piece, self._stop):
                    break  # no client: the bytes are lost, as on a UART
                self.tx_bytes += len(piece)
                if rate:
                    time.sleep(len(piece) / rate)

    # --- DTR/RTS side channel --------------------------------------------------------------------------
    def _apply_line_change(self, line: str, asserted: bool) -> None:
        with self.board.lock:
            # Bytes the client wrote before changing the line reach the board first.
            while True:
                data = self._read_available()
                if not data:
                    break
                self._ingest(data)
            if self.faults.link_down():
                return
            self.board.set_line(line, asserted)


def run_emulator(**kwargs: Any) -> Emulator:
    """Start an emulator (same keywords as :class:`Emulator`); stop it with ``.stop()``."""
    return Emulator(**kwargs).start()
