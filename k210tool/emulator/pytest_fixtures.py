"""pytest fixtures for tests that need a virtual board (import them into a ``conftest.py``)::

    from k210tool.emulator.pytest_fixtures import kmodel_bytes, make_emulator  # noqa: F401

``make_emulator(board="maix_dock", **Emulator keywords)`` starts an emulator with its own pty,
filesystem (under the test's ``tmp_path``) and shim dir, and stops it after the test.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k210tool.emulator.server import Emulator


@pytest.fixture
def make_emulator(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(board: str = "maix_dock", **kwargs: object) -> Emulator:
        emu = Emulator(board, fs_root=tmp_path / f"board-fs-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(emu.start())
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def kmodel_bytes() -> Callable[..., bytes]:
    """``make(version=4, size=20000)``: a kmodel-shaped file (LDMK header, or a leading u32 3 for v3)."""

    def make(version: int = 4, size: int = 20_000) -> bytes:
        head = struct.pack("<I", 3) if version == 3 else b"LDMK" + struct.pack("<I", version)
        return head + os.urandom(size - len(head))

    return make


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``condition`` (the board works on its own threads); its last value after ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)
    return condition()


def serve_tcp(pty_path: str, rfc2217: bool = False) -> tuple[str, threading.Event]:
    """Put the emulator behind a local TCP port: ``socket://`` (raw bytes) or ``rfc2217://`` (pyserial's
    RFC 2217 port manager, so DTR/RTS and baud changes travel too - attach the emulator in-process).
    Returns the URL and an event that stops the server."""
    import socket

    import serial
    import serial.rfc2217

    class PtySerial(serial.Serial):
        # a pty has no modem status lines to report (the ioctl fails); the port manager polls them
        cts = dsr = ri = cd = property(lambda self: False)

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        conn.settimeout(0.05)
        port = PtySerial(pty_path, timeout=0.02)

        class Net:
            def write(self, data: bytes) -> None:
                conn.sendall(data)

        manager = serial.rfc2217.PortManager(port, Net()) if rfc2217 else None

        def board_to_net() -> None:
            while not stop.is_set():
                try:
                    data = port.read(4096)
                    if data:
                        conn.sendall(b"".join(manager.escape(data)) if manager else data)
                except (OSError, TypeError, serial.SerialException):
                    return  # closed when the test ends

        threading.Thread(target=board_to_net, daemon=True).start()
        while not stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            if not data:
                break
            port.write(b"".join(manager.filter(data)) if manager else data)
        stop.set()
        port.close()
        conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    scheme = "rfc2217" if rfc2217 else "socket"
    return f"{scheme}://127.0.0.1:{server.getsockname()[1]}", stop
