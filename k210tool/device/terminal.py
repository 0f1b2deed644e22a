"""A serial terminal for the board's REPL (``k210tool repl``).

Interactive (stdin is a terminal): keys go to the board byte for byte (Ctrl-C interrupts the board's
program, Ctrl-D soft-resets it); Ctrl-] leaves. Piped stdin: its bytes are sent, then the board's
answer is shown until it has been quiet for ``linger`` seconds - handy in scripts and tests.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from typing import BinaryIO

from k210tool.device.transport import Transport
from k210tool.errors import DeviceError

EXIT_KEY = b"\x1d"  # Ctrl-]


def terminal(transport: Transport, stdin_fd: int | None = None, stdout: BinaryIO | None = None,
             linger: float = 1.0) -> None:
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    out = stdout or sys.stdout.buffer
    stop = threading.Event()
    last_rx = [time.monotonic()]
    failure: list[DeviceError] = []

    def pump() -> None:
        while not stop.is_set():
            try:
                data = transport.read_available(4096, 0.05)
            except DeviceError as exc:
                failure.append(exc)
                stop.set()
                return
            if data:
                last_rx[0] = time.monotonic()
                out.write(data)
                out.flush()

    reader = threading.Thread(target=pump, name="k210-terminal", daemon=True)
    reader.start()
    try:
        if os.isatty(stdin_fd):
            _interactive(transport, stdin_fd, stop)
        else:
            _piped(transport, stdin_fd, stop, last_rx, linger)
    finally:
        stop.set()
        reader.join(timeout=1)
    if failure:
        raise failure[0]


def _interactive(transport: Transport, fd: int, stop: threading.Event) -> None:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, 1024)
            if not data or EXIT_KEY in data:
                transport.write(data.split(EXIT_KEY)[0])
                return
            transport.write(data)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _piped(transport: Transport, fd: int, stop: threading.Event, last_rx: list[float], linger: float) -> None:
    while not stop.is_set():
        data = os.read(fd, 1024)
        if not data:
            break
        transport.write(data.replace(b"\n", b"\r"))  # Enter on a terminal sends CR
    last_rx[0] = max(last_rx[0], time.monotonic())
    while not stop.is_set() and time.monotonic() - last_rx[0] < linger:
        time.sleep(0.05)
