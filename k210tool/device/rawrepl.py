"""MicroPython raw REPL client (the protocol of MicroPython's ``pyexec.c``, as mpremote speaks it).

``enter()`` interrupts whatever runs (Ctrl-C), switches to the raw REPL (Ctrl-A) and waits for
``raw REPL; CTRL-B to exit\\r\\n>``; it retries a fixed number of times, each attempt returning what went
wrong, so the final error can say whether the board stayed silent or answered something else.
``exec()`` sends a program and returns its stdout and traceback. Raw-paste mode (flow-controlled, for
MicroPython >= 1.14) is negotiated once per connection and used when the board offers it; the 1.11 cores
of MaixPy/CanMV restart the raw REPL instead, and the client falls back to plain writes in 256-byte
pieces, as the board's UART buffer needs.
"""

from __future__ import annotations

import ast
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k210tool.device.transport import LinkTimeout, Transport
from k210tool.errors import DeviceError

BANNER = b"raw REPL; CTRL-B to exit\r\n"
PIECE = 256
PIECE_PAUSE = 0.01


class BoardError(DeviceError):
    """The program ran on the board and raised; ``traceback`` is the board's text."""

    def __init__(self, message: str, traceback: str) -> None:
        super().__init__(message)
        self.traceback = traceback


@dataclass
class ExecResult:
    stdout: bytes
    traceback: str


class RawRepl:
    def __init__(self, transport: Transport, *, prompt_timeout: float = 3.0, attempts: int = 3,
                 raw_paste: bool | None = None) -> None:
        self.t = transport
        self.prompt_timeout = prompt_timeout
        self.attempts = attempts
        self.raw_paste = raw_paste  # None: ask the board once; False: never try
        self.in_raw = False

    # --- entering / leaving ---------------------------------------------------------------------------
    def enter(self, soft_reset: bool = False) -> None:
        errors: list[str] = []
        for _ in range(self.attempts):
            problem = self._try_enter()
            if problem is None:
                break
            errors.append(problem)
        else:
            raise DeviceError(
                f"no MicroPython raw REPL prompt from {self.t.name} "
                f"({self.attempts} attempts, {self.prompt_timeout:g} s each): {errors[-1]}",
                "is the board running MicroPython firmware (not held in reset or in ISP mode), at "
                "115200 baud, with no program that disabled Ctrl-C? press its RESET button and retry",
            )
        self.in_raw = True
        if soft_reset:
            self.soft_reset()

    def _try_enter(self) -> str | None:
        """One attempt; returns what went wrong, or None."""
        self.t.write(b"\r\x03\x03")
        time.sleep(0.1)
        self.t.reset_input()
        self.t.write(b"\r\x01")
        try:
            self.t.read_until(BANNER + b">", timeout=self.prompt_timeout)
        except LinkTimeout as exc:
            if not exc.data:
                return "the board sent nothing"
            return f"it sent {exc.data[-60:]!r} instead"
        return None

    def soft_reset(self) -> None:
        """Ctrl-D in the raw REPL: fresh interpreter, boot.py runs, back at the raw prompt."""
        self.t.write(b"\x04")
        try:
            self.t.read_until(b"soft reboot\r\n", timeout=self.prompt_timeout)
            self.t.read_until(BANNER + b">", timeout=self.prompt_timeout + 10)
        except LinkTimeout as exc:
            raise DeviceError(f"the board did not come back from a soft reset: got {exc.data[-60:]!r}",
                              "a boot.py that never returns? retry with --no-soft-reset and remove it") from None

    def exit(self) -> None:
        """Back to the friendly REPL (Ctrl-B)."""
        self.t.write(b"\r\x02")
        self.in_raw = False

    def reboot_to_app(self) -> None:
        """Leave the raw REPL and soft-reset in the friendly REPL, so boot.py and main.py run."""
        self.exit()
        time.sleep(0.05)
        self.t.write(b"\x04")
        self.in_raw = False

    # --- running programs -----------------------------------------------------------------------------
    def exec_raw(self, code: str | bytes, timeout: float | None = 10.0,
                 on_output: Callable[[bytes], None] | None = None) -> ExecResult:
        """Run ``code``; stdout is streamed to ``on_output`` as it arrives. ``timeout`` bounds the silence."""
        self.send_program(code.encode() if isinstance(code, str) else code)
        return self.follow(timeout, on_output)

    def follow(self, timeout: float | None, on_output: Callable[[bytes], None] | None = None) -> ExecResult:
        """Read a running program's output, its traceback and the next prompt."""
        out = self._read_section(timeout, on_output, "the program's output")
        err = self._read_section(timeout, None, "the traceback")
        try:
            self.t.read_until(b">", timeout=timeout or self.prompt_timeout)
        except LinkTimeout:
            raise DeviceError(f"{self.t.name}: no raw REPL prompt after the program ended (link lost?)") from None
        return ExecResult(out, err.decode("utf-8", "replace"))

    def exec(self, code: str | bytes, timeout: float | None = 10.0) -> bytes:
        """Run ``code`` and return its stdout; a traceback on the board raises :class:`BoardError`."""
        result = self.exec_raw(code, timeout)
        if result.traceback:
            last = result.traceback.strip().splitlines()[-1] if result.traceback.strip() else "error"
            raise BoardError(f"the board raised {last}", result.traceback)
        return result.stdout

    def eval(self, expression: str, timeout: float | None = 10.0) -> Any:
        text = self.exec(f"print(repr({expression}))", timeout).decode("utf-8", "replace").strip()
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise DeviceError(f"unexpected answer from the board: {text[:80]!r}") from None

    def interrupt(self) -> None:
        self.t.write(b"\x03")

    def send_program(self, data: bytes) -> None:
        if self.raw_paste is not False:
            self.t.write(b"\x05A\x01")
            head = self.t.read(2, timeout=self.prompt_timeout)
            if head == b"R\x01":
                self.raw_paste = True
                self._paste(data)
                return
            if head == b"R\x00":
                self.raw_paste = False
            else:  # a pre-1.14 core restarted the raw REPL: "raw REPL; CTRL-B to exit\r\n>"
                try:
                    self.t.read_until(b"w REPL; CTRL-B to exit\r\n>", timeout=self.prompt_timeout)
                except LinkTimeout as exc:
                    raise DeviceError(f"{self.t.name}: the board did not answer the raw REPL "
                                      f"(got {(head + exc.data)[-60:]!r})") from None
                self.raw_paste = False
        for pos in range(0, len(data), PIECE):
            self.t.write(data[pos:pos + PIECE])
            time.sleep(PIECE_PAUSE)
        self.t.write(b"\x04")
        ok = self.t.read(2, timeout=self.prompt_timeout)
        if ok != b"OK":
            raise DeviceError(f"{self.t.name}: the board did not accept the program (answered {ok!r})",
                              "the link may have dropped bytes; retry")

    def _paste(self, data: bytes) -> None:
        window = struct.unpack("<H", self.t.read(2, timeout=self.prompt_timeout).ljust(2, b"\x00"))[0]
        if window == 0:
            raise DeviceError(f"{self.t.name}: bad raw-paste window from the board")
        remaining, pos = 0, 0
        while pos < len(data):
            while remaining == 0:
                flag = self.t.read(1, timeout=self.prompt_timeout)
                if flag == b"\x01":
                    remaining += window
                elif flag == b"\x04":
                    self.t.write(b"\x04")
                    raise DeviceError(f"{self.t.name}: the board ended the raw-paste transfer early")
                else:
                    raise DeviceError(f"{self.t.name}: raw-paste flow control lost (got {flag!r})")
            piece = data[pos:pos + remaining]
            self.t.write(piece)
            pos += len(piece)
            remaining -= len(piece)
        self.t.write(b"\x04")
        try:
            self.t.read_until(b"\x04", timeout=self.prompt_timeout + len(data) / 1000)
        except LinkTimeout:
            raise DeviceError(f"{self.t.name}: the board did not acknowledge the raw-paste program") from None

    def _read_section(self, timeout: float | None, on_output: Callable[[bytes], None] | None, what: str) -> bytes:
        """Bytes up to the next Ctrl-D; ``timeout`` bounds the silence between bytes (None: wait)."""
        data = bytearray()
        last = time.monotonic()
        while True:
            chunk = self.t.read_available(4096, timeout=0.1)
            if chunk:
                last = time.monotonic()
                end = chunk.find(b"\x04")
                if end >= 0:
                    # anything after the Ctrl-D belongs to the next section: give it back
                    self.t.unread(chunk[end + 1:])
                    chunk = chunk[:end]
                data += chunk
                if on_output and chunk:
                    on_output(chunk)
                if end >= 0:
                    return bytes(data)
            elif timeout is not None and time.monotonic() - last >= timeout:
                raise LinkTimeout(f"{self.t.name}: no end of {what} within {timeout:g} s of silence "
                                  "(link lost or program still running?)", bytes(data))
