"""Serve a :class:`~k210tool.emulator.board.VirtualBoard` on a Linux pseudo-terminal.

The emulator is a port like any other: clients open the pty path it prints. Bytes written while no
client has the port open are lost, as on a UART. The shim directory holds ``sitecustomize.py``
(:mod:`k210tool.emulator.linkshim`) and the Unix socket that carries DTR/RTS changes::

    with Emulator("maix_dock", fs_root=tmp) as emu:
        subprocess.run(["kflash", "-p", emu.port, "-B", "dan", "x.kfpkg"], env=emu.client_env())
        emu.flash.read(0x300000, 16)

Threads: a reader (pty -> faults -> board), a writer (board -> pty, throttled to baud/10 when asked),
the line-channel server, and the board's MicroPython task. Everything the board does goes to
:attr:`Emulator.events` (and to ``log`` when given).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import select
import shutil
import socket
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from k210tool.boards import Board, get_board
from k210tool.emulator.board import VirtualBoard
from k210tool.emulator.faults import Fault, FaultInjector, parse_fault
from k210tool.emulator.flash import SparseFlash
from k210tool.emulator.runtime import ModuleRegistry
from k210tool.errors import InputError

_BAUD = {getattr(termios, n): int(n[1:]) for n in dir(termios) if n.startswith("B") and n[1:].isdigit()}
_SOCKET_NAME = "lines.sock"


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
        self.port = ""
        self.shim_dir = Path()
        self._master = -1
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: socket.socket | None = None
        self._connected = False
        self.rx_bytes = 0
        self.tx_bytes = 0

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before a client configures the port
        self.port = os.ttyname(slave)
        os.close(slave)  # with no slave open, writes are dropped (a UART nobody listens to)
        os.set_blocking(master, False)
        self._master = master
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.port)
        self._make_shim_dir()
        for target, name in ((self._reader, "k210-emu-reader"), (self._writer, "k210-emu-writer"),
                             (self._line_server, "k210-emu-lines")):
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
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        for t in self._threads:
            t.join(timeout=2)
        with contextlib.suppress(OSError):
            os.close(self._master)
        if self.flash_image:
            self.flash.save(self.flash_image)
        if self.link:
            with contextlib.suppress(OSError):
                self.link.unlink()
        shutil.rmtree(self.shim_dir, ignore_errors=True)
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
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.shim_dir), env.get("PYTHONPATH", "")) if p)
        return env

    def attach_in_process(self) -> None:
        """Let this process's pyserial reach the emulated DTR/RTS lines (what the shim does in clients)."""
        from k210tool.emulator import linkshim

        linkshim.install(str(self.shim_dir))

    def log(self, text: str) -> None:
        line = f"{time.monotonic() - self._t0:8.3f} {text}"
        self.events.append(text)
        if self._log_cb is not None:
            self._log_cb(line)

    def _make_shim_dir(self) -> None:
        from k210tool.emulator import linkshim

        self.shim_dir = Path(tempfile.mkdtemp(prefix="k210tool-emu-"))
        shutil.copyfile(linkshim.__file__, self.shim_dir / "sitecustomize.py")
        sock = str(self.shim_dir / _SOCKET_NAME)
        config = {"ports": [{"pty": self.port, "socket": sock, "board": self.board_info.id}]}
        (self.shim_dir / linkshim.CONFIG_NAME).write_text(json.dumps(config, indent=2))
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(sock)
        self._server.listen(8)
        self._server.settimeout(0.2)

    # --- the link --------------------------------------------------------------------------------------
    def _rate(self) -> float | None:
        """Bytes per second of the client's current baud rate (8N1: 10 bits a byte), when throttling."""
        if not self.throttle:
            return None
        try:
            speed = termios.tcgetattr(self._master)[4]
        except termios.error:
            return None
        baud = _BAUD.get(speed, 115200)
        return baud / 10 if baud else None

    def _read_available(self, limit: int = 65536) -> bytes | None:
        """Non-blocking read; None when no client has the port open."""
        try:
            data = os.read(self._master, limit)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                self._set_connected(False)
                return None
            raise
        self._set_connected(True)
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
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
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
                if not self._write_all(data[pos:pos + step]):
                    break
                if rate:
                    time.sleep(min(step, len(data) - pos) / rate)

    def _write_all(self, data: bytes) -> bool:
        while data and not self._stop.is_set():
            try:
                n = os.write(self._master, data)
                self.tx_bytes += n
                data = data[n:]
            except BlockingIOError:
                select.select([], [self._master], [], 0.05)
            except OSError:
                return False  # no client: the bytes are lost, as on a UART
        return True

    # --- DTR/RTS side channel --------------------------------------------------------------------------
    def _line_server(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._line_client, args=(conn,), daemon=True).start()

    def _line_client(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            conn.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(256)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._apply_line_change(line.decode(errors="replace").strip())
                    with contextlib.suppress(OSError):
                        conn.sendall(b"OK\n")

    def _apply_line_change(self, command: str) -> None:
        parts = command.split()
        if len(parts) != 2 or parts[0] not in ("DTR", "RTS"):
            return
        with self.board.lock:
            # Bytes the client wrote before changing the line reach the board first.
            while True:
                data = self._read_available()
                if not data:
                    break
                self._ingest(data)
            if self.faults.link_down():
                return
            self.board.set_line(parts[0].lower(), parts[1] == "1")


def run_emulator(**kwargs: Any) -> Emulator:
    """Start an emulator (same keywords as :class:`Emulator`); stop it with ``.stop()``."""
    return Emulator(**kwargs).start()
