"""The MicroPython REPL of the emulated firmware: friendly REPL, raw REPL and (when the firmware has it)
raw-paste mode, byte for byte as MicroPython's ``pyexec.c`` answers them.

Raw REPL: Ctrl-A enters (``raw REPL; CTRL-B to exit\\r\\n>``); text up to Ctrl-D is one program; the board
answers ``OK``, runs it and prints ``<stdout>\\x04<traceback>\\x04>``. Ctrl-D on an empty program soft-resets.
Raw paste (MicroPython >= 1.14): ``\\x05A\\x01`` is answered ``R\\x01`` + window size and flow control.
The firmwares K210 boards ship pin MicroPython 1.11, which predates it: there ``\\x05A`` are two ordinary
bytes and Ctrl-A restarts the raw REPL, which is how mpremote learns to fall back.

Scripts run on a worker thread (the board's MicroPython task), so the serial reader stays free for
Ctrl-C; bytes that arrive while a script runs wait, as in the UART buffer, and are what ``sys.stdin``
reads; leftovers are read by the REPL afterwards.
"""

from __future__ import annotations

import codeop
import queue
import re
import struct
import threading
from collections.abc import Callable

from k210tool.emulator.runtime import BoardReset, MicroPythonRuntime

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_WINDOW = 128
_CTRL = re.compile(rb"[\x01-\x04]")


class FirmwareRepl:
    def __init__(self, runtime: MicroPythonRuntime, send: Callable[[bytes], None], *, label: str,
                 banner: str, raw_paste: bool, log: Callable[[str], None]) -> None:
        self.runtime = runtime
        self._send = send
        self.label = label  # "CanMV" / "MaixPy": the firmware's log prefix
        self.banner = banner
        self.raw_paste = raw_paste
        self._log = log
        self.state = "off"  # off | friendly | raw | paste | busy
        self._after_busy = "friendly"
        self._line = ""
        self._block: list[str] = []
        self._raw = bytearray()
        self._paste_count = 0
        self._epoch = 0
        self._pending_interrupt = False
        self._lock = threading.RLock()
        self._jobs: queue.Queue[tuple[int, Callable[[], None]]] = queue.Queue()
        self._job_epoch = -1
        self._worker = threading.Thread(target=self._work, name="k210-micropython", daemon=True)
        self._worker.start()
        runtime.ctx.write = self._script_write

    # --- output -------------------------------------------------------------------------------------
    def _script_write(self, text: str) -> None:
        """What scripts print: LF becomes CRLF (MicroPython's cooked stdout). Dropped after a reset."""
        if threading.get_ident() == self._worker.ident and self._job_epoch != self._epoch:
            return
        self._send(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace"))

    # --- power / reset --------------------------------------------------------------------------------
    def power_on(self, boot_log: str) -> None:
        """Hard reset into the firmware: boot log, boot.py, main.py, then the friendly REPL."""
        with self._lock:
            self._epoch += 1
            self.runtime.interrupt(BoardReset)
            self.runtime.ctx.stdin.clear()
            self._pending_interrupt = False
            self._send(boot_log.encode())
            self._start_boot("friendly")

    def power_off(self) -> None:
        with self._lock:
            self._epoch += 1
            self.runtime.interrupt(BoardReset)
            self.state = "off"

    def _start_boot(self, mode: str) -> None:
        self.state, self._after_busy = "busy", mode
        epoch = self._epoch

        def boot() -> None:
            self.runtime.soft_reset()
            for script in ("/flash/boot.py", "/flash/main.py") if mode == "friendly" else ("/flash/boot.py",):
                self._write_traceback(self._run(lambda s=script: self.runtime.run_file(s)))
            self._finish(epoch, self._prompt_bytes(mode))

        self._jobs.put((epoch, boot))

    def _prompt_bytes(self, mode: str) -> bytes:
        if mode == "raw":
            return RAW_BANNER + b">"
        return self.banner.encode() + b">>> "

    # --- input ----------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        with self._lock:
            while data:
                if self.state == "off":
                    return
                if self.state == "busy":
                    self._feed_busy(data)
                    return
                if self.state == "paste":
                    data = self._feed_paste(data)
                elif self.state == "raw":
                    data = self._feed_raw(data)
                else:
                    data = self._feed_friendly(data)

    def _feed_busy(self, data: bytes) -> None:
        ctx = self.runtime.ctx
        if ctx.keyboard_interrupt and b"\x03" in data:
            data = data.replace(b"\x03", b"")
            if not self.runtime.interrupt(KeyboardInterrupt):
                self._pending_interrupt = True  # between scripts: interrupt the next one as it starts
        if data:
            ctx.stdin.feed(data)

    def _feed_raw(self, data: bytes) -> bytes:
        m = _CTRL.search(data)
        if m is None:
            self._raw += data
            return b""
        self._raw += data[:m.start()]
        rest = data[m.end():]
        c = data[m.start()]
        if c == 0x01:
            if self._raw == b"\x05A" and self.raw_paste:
                self._raw.clear()
                self.state, self._paste_count = "paste", 0
                self._send(b"R\x01" + struct.pack("<H", PASTE_WINDOW) + b"\x01")
            else:
                self._raw.clear()
                self._send(RAW_BANNER + b">")
        elif c == 0x02:
            self._raw.clear()
            self.state = "friendly"
            self._send(b"\r\n" + self._prompt_bytes("friendly"))
        elif c == 0x03:
            self._raw.clear()
        else:  # Ctrl-D
            program = bytes(self._raw)
            self._raw.clear()
            self._send(b"OK")
            if program:
                self._start_program(program, "raw")
            else:
                self._soft_reset("raw", b"\r\n")
        return rest

    def _feed_paste(self, data: bytes) -> bytes:
        end = data.find(b"\x04")
        body = data if end < 0 else data[:end]
        self._raw += body
        self._paste_count += len(body)
        while self._paste_count >= PASTE_WINDOW:
            self._paste_count -= PASTE_WINDOW
            self._send(b"\x01")
        if end < 0:
            return b""
        program = bytes(self._raw)
        self._raw.clear()
        self._send(b"\x04")
        self._start_program(program, "raw")
        return data[end + 1:]

    def _feed_friendly(self, data: bytes) -> bytes:
        for i, b in enumerate(data):
            ch = chr(b)
            if b == 0x01:
                self._line, self._block = "", []
                self.state = "raw"
                self._send(b"\r\n" + RAW_BANNER + b">")
                return data[i + 1:]
            if b == 0x02:
                self._line, self._block = "", []
                self._send(b"\r\n" + self._prompt_bytes("friendly"))
            elif b == 0x03:
                self._line, self._block = "", []
                self._send(b"\r\nKeyboardInterrupt\r\n>>> ")
            elif b == 0x04:
                if not self._line and not self._block:
                    self._soft_reset("friendly", b"\r\n")
                    return data[i + 1:]
            elif ch in "\r\n":
                if ch == "\n" and i and data[i - 1:i] == b"\r":
                    continue
                self._send(b"\r\n")
                if self._enter_line():
                    return data[i + 1:]
            elif b in (0x08, 0x7F):
                if self._line:
                    self._line = self._line[:-1]
                    self._send(b"\x08 \x08")
            elif b >= 0x20 and b != 0x1B:
                self._line += ch
                self._send(bytes([b]))
        return b""

    def _enter_line(self) -> bool:
        """Handle a finished friendly-REPL line; True when a program started (the rest waits)."""
        line, self._line = self._line, ""
        if self._block:
            if line.strip():
                self._block.append(line)
                self._send(b"... ")
                return False
            source, self._block = "\n".join(self._block) + "\n", []
        else:
            if not line.strip():
                self._send(b">>> ")
                return False
            source = line
            try:
                complete = codeop.compile_command(line + "\n", "<stdin>", "exec")
            except (SyntaxError, ValueError, OverflowError):
                complete = True  # run it: the traceback says what is wrong
            if complete is None:
                self._block = [line]
                self._send(b"... ")
                return False
        self._start_program(source.encode(), "friendly")
        return True

    # --- running ----------------------------------------------------------------------------------------
    def _start_program(self, program: bytes, mode: str) -> None:
        self.state, self._after_busy = "busy", mode
        epoch = self._epoch

        def job() -> None:
            tb = self._run(lambda: self.runtime.run_source(program, repl_line=(mode == "friendly")))
            if mode == "raw":
                self._finish(epoch, b"\x04" + self._crlf(tb) + b"\x04>")
            else:
                self._write_traceback(tb)
                self._finish(epoch, b">>> ")

        self._jobs.put((epoch, job))

    def _soft_reset(self, mode: str, lead: bytes) -> None:
        self._log("repl: soft reboot")
        self._send(lead + f"[{self.label}]: soft reboot\r\n".encode())
        self._start_boot(mode)

    def _run(self, fn: Callable[[], str | None]) -> str | None:
        if self._pending_interrupt:
            self._pending_interrupt = False
            return self.runtime.format_exception(KeyboardInterrupt())
        return fn()

    def _write_traceback(self, tb: str | None) -> None:
        if tb:
            self._script_write(tb)

    @staticmethod
    def _crlf(tb: str | None) -> bytes:
        return (tb or "").replace("\n", "\r\n").encode()

    def _finish(self, epoch: int, tail: bytes) -> None:
        with self._lock:
            if epoch != self._epoch:
                return
            self.state = self._after_busy
            self._send(tail)
            leftover = self.runtime.ctx.stdin.drain()
        if leftover:
            self.feed(leftover)

    def _work(self) -> None:
        while True:
            epoch, job = self._jobs.get()
            if epoch != self._epoch:
                continue
            self._job_epoch = epoch
            try:
                job()
            except BoardReset:
                pass
            except Exception as exc:  # an emulator bug must not kill the board's task
                self._log(f"repl: internal error {type(exc).__name__}: {exc}")
                self._finish(epoch, b"\x04" + repr(exc).encode() + b"\x04>")
