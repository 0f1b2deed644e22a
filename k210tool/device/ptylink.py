"""A pseudo-terminal that clients open like a serial port, plus the side channel for its DTR/RTS lines.

Used by the emulator (the board sits behind the pty) and by :class:`PtyBridge` (a pyserial URL such as
``rfc2217://`` sits behind it, for programs like kflash that only open device paths). A pty has no
modem lines, so the clients' pyserial is patched by :mod:`k210tool.device.linkshim` (loaded from
``<shim dir>/sitecustomize.py`` via ``PYTHONPATH``) to send each line change over a Unix socket here;
``on_line(name, asserted)`` runs before the change is acknowledged, so it is ordered with the bytes the
client writes next. Bytes written while no client has the pty open are lost, as on a UART.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
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

from k210tool.device import linkshim

_BAUD = {getattr(termios, n): int(n[1:]) for n in dir(termios) if n.startswith("B") and n[1:].isdigit()}
SOCKET_NAME = "lines.sock"
COALESCE = 0.015


class PtyLink:
    def __init__(self, on_line: Callable[[str, bool], None], description: str = "") -> None:
        self._on_line = on_line
        self._description = description
        self.port = ""
        self.shim_dir = Path()
        self.master = -1
        self.connected = False
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, link: Path | None = None) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before a client configures the port
        self.port = os.ttyname(slave)
        os.close(slave)  # with no slave open, writes are dropped (a UART nobody listens to)
        os.set_blocking(master, False)
        self.master = master
        self.shim_dir = Path(tempfile.mkdtemp(prefix="k210tool-pty-"))
        shutil.copyfile(linkshim.__file__, self.shim_dir / "sitecustomize.py")
        sock = str(self.shim_dir / SOCKET_NAME)
        ports = [{"pty": self.port, "socket": sock, "what": self._description}]
        (self.shim_dir / linkshim.CONFIG_NAME).write_text(json.dumps({"ports": ports}, indent=2))
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(sock)
        self._server.listen(8)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve_lines, name="k210-pty-lines", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            os.close(self.master)
        shutil.rmtree(self.shim_dir, ignore_errors=True)

    # --- clients -----------------------------------------------------------------------------------------
    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client subprocess: PYTHONPATH starts with the shim directory."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.shim_dir), env.get("PYTHONPATH", "")) if p)
        return env

    def attach_in_process(self) -> None:
        """Let this process's pyserial (and the children it starts) reach this pty's DTR/RTS."""
        linkshim.install(str(self.shim_dir))

    # --- bytes -------------------------------------------------------------------------------------------
    def wait_readable(self, timeout: float) -> bool:
        try:
            return bool(select.select([self.master], [], [], timeout)[0])
        except (OSError, ValueError):
            return False

    def read_available(self, limit: int = 65536) -> bytes | None:
        """What the client wrote (non-blocking, b'' if nothing); None when no client has the pty open."""
        try:
            data = os.read(self.master, limit)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                self.connected = False
                return None
            raise
        self.connected = True
        return data

    def write_all(self, data: bytes, stop: threading.Event | None = None) -> bool:
        """Write to the client; False when nobody has the pty open (the bytes are lost)."""
        stop = stop or self._stop
        while data and not stop.is_set():
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                select.select([], [self.master], [], 0.05)
            except OSError:
                return False
        return True

    def baudrate(self) -> int | None:
        """The baud rate the client set on its end."""
        try:
            return _BAUD.get(termios.tcgetattr(self.master)[4])
        except termios.error:
            return None

    # --- the DTR/RTS side channel ------------------------------------------------------------------------
    def _serve_lines(self) -> None:
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
                    parts = line.decode(errors="replace").split()
                    if len(parts) == 2 and parts[0] in ("DTR", "RTS"):
                        self._on_line(parts[0].lower(), parts[1] == "1")
                    with contextlib.suppress(OSError):
                        conn.sendall(b"OK\n")


class PtyBridge:
    """A local pty whose far end is a :class:`~k210tool.device.transport.SerialTransport` (any URL).

    Bytes flow both ways, the client's DTR/RTS changes and baud rate are applied to the transport. kflash
    only opens device paths; through this it flashes a board behind ``rfc2217://`` too.

    Line changes that come within :data:`COALESCE` seconds of each other are applied together,
    assertions first: a remote link takes tens of milliseconds per change, and kflash's Dock sequence
    releases RESET one call *before* it asserts BOOT - fine on a local port, but over the network the
    board would sample BOOT still released. Both pins are active-low on every Maix wiring, so "assert,
    then release" is always the order the hardware means. Written bytes never overtake a line change.
    """

    def __init__(self, transport: object) -> None:
        self.transport = transport
        self.link = PtyLink(self._on_line, f"bridge to {getattr(transport, 'name', '?')}")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._baud: int | None = None
        self._lines: dict[str, bool] = {}
        self._lines_since = 0.0

    @property
    def port(self) -> str:
        return self.link.port

    def start(self) -> PtyBridge:
        self.link.open()
        self.link.attach_in_process()
        for target in (self._to_transport, self._from_transport):
            t = threading.Thread(target=target, name="k210-pty-bridge", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.link.close()

    def __enter__(self) -> PtyBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sync_baud(self) -> None:
        baud = self.link.baudrate()
        if baud and baud != self._baud:
            self._baud = baud
            with contextlib.suppress(Exception):
                self.transport.baudrate = baud  # type: ignore[attr-defined]

    def _apply_lines(self) -> None:
        """Pending line changes, assertions first (caller holds the lock)."""
        for line, asserted in sorted(self._lines.items(), key=lambda item: not item[1]):
            self.transport.set_lines(**{line: asserted})  # type: ignore[attr-defined]
        self._lines.clear()

    def _forward_pending(self) -> None:
        data = self.link.read_available()
        if data:
            self._apply_lines()
            self._sync_baud()
            self.transport.write(data)  # type: ignore[attr-defined]

    def _to_transport(self) -> None:
        while not self._stop.is_set():
            readable = self.link.wait_readable(0.005 if self._lines else 0.05)
            with self._lock:
                try:
                    if self._lines and time.monotonic() - self._lines_since >= COALESCE:
                        self._apply_lines()
                    if readable:
                        self._forward_pending()
                except Exception:  # the far end failed: the client will time out and say so
                    self._stop.wait(0.05)
            if readable and not self.link.connected:
                self._stop.wait(0.02)

    def _from_transport(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.transport.read_available(4096, 0.05)  # type: ignore[attr-defined]
            except Exception:
                self._stop.wait(0.05)
                continue
            if data:
                self._sync_baud()
                self.link.write_all(data, self._stop)

    def _on_line(self, line: str, asserted: bool) -> None:
        with self._lock:
            self._forward_pending()  # bytes written before the line change go first
            if not self._lines:
                self._lines_since = time.monotonic()
            self._lines[line] = asserted
