"""Run board scripts in CPython the way MicroPython's REPL runs them on the K210.

:class:`MicroPythonRuntime` is the pluggable part of the emulated firmware: the REPL hands it source
text, it runs it against MicroPython-ish modules (a :class:`ModuleRegistry` of factories taking the
:class:`BoardContext`) and returns the traceback MicroPython would print, or None. Globals persist
between runs until a soft reset, as on the board (mpremote relies on that).

Extending it (issue 7 adds the MaixPy/CanMV hardware modules)::

    registry = default_registry()
    registry.register("sensor", lambda ctx: make_sensor_module(ctx, frames="faces/"))
    Emulator(board, modules=registry)

``BoardContext.kmodel_loader`` is the hook the KPU shim calls with kmodel bytes (from flash or the
filesystem); it is where the firmware's loader version check (``board.require_kmodel_version``) and the
memory limit belong.
"""

from __future__ import annotations

import ctypes
import errno
import io
import threading
import time
import tokenize
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from k210tool.boards import Board
from k210tool.emulator.flash import SparseFlash
from k210tool.emulator.vfs import ConfinedFS


class BoardReset(BaseException):
    """Raised into a running script when the board is reset (not catchable by ``except Exception``)."""


class StdinBuffer:
    """Bytes the host sent while a script runs (what ``sys.stdin`` reads)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._cond = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._data += data
            self._cond.notify_all()

    def read(self, n: int) -> bytes:
        # Short waits so that an interrupt injected into this thread is delivered promptly.
        while True:
            with self._cond:
                if self._data:
                    out = bytes(self._data[:n])
                    del self._data[:n]
                    return out
                self._cond.wait(0.05)

    def drain(self) -> bytes:
        with self._cond:
            out = bytes(self._data)
            self._data.clear()
            return out

    def clear(self) -> None:
        self.drain()


@dataclass
class BoardContext:
    """What module factories get: the board, its flash and filesystem, the serial output."""

    board: Board
    flash: SparseFlash
    fs: ConfinedFS
    write: Callable[[str], None]
    stdin: StdinBuffer = field(default_factory=StdinBuffer)
    request_reset: Callable[[], None] = lambda: None
    # Issue 7 hook: called by the KPU shim as kmodel_loader(ctx, kmodel_bytes) -> model object.
    kmodel_loader: Callable[[BoardContext, bytes], Any] | None = None
    boot_time: float = field(default_factory=time.monotonic)
    keyboard_interrupt: bool = True

    def sleep(self, seconds: float) -> None:
        """Sleep in short slices so Ctrl-C (an exception injected into this thread) lands promptly."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.02))


ModuleFactory = Callable[[BoardContext], types.ModuleType]


class ModuleRegistry:
    """Module name -> factory. A factory runs once per soft reset, on first import."""

    def __init__(self) -> None:
        self._factories: dict[str, ModuleFactory] = {}

    def register(self, name: str, factory: ModuleFactory, *aliases: str) -> None:
        for n in (name, *aliases):
            self._factories[n] = factory

    def get(self, name: str) -> ModuleFactory | None:
        return self._factories.get(name)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def copy(self) -> ModuleRegistry:
        new = ModuleRegistry()
        new._factories = dict(self._factories)
        return new


# Pure CPython modules whose MicroPython counterparts behave alike (u-names are MicroPython's).
PASSTHROUGH = {
    "struct": "struct", "ustruct": "struct", "math": "math", "cmath": "cmath", "json": "json",
    "ujson": "json", "re": "re", "ure": "re", "collections": "collections", "ucollections": "collections",
    "errno": "errno", "uerrno": "errno", "array": "array", "uarray": "array", "random": "random",
    "urandom": "random", "heapq": "heapq", "uheapq": "heapq", "binascii": "binascii",
    "ubinascii": "binascii", "zlib": "zlib", "uzlib": "zlib",
}
BOARD_SYS_PATH = ["", "/flash", "/flash/lib", "/sd", "/sd/lib"]


class MicroPythonRuntime:
    def __init__(self, ctx: BoardContext, registry: ModuleRegistry) -> None:
        self.ctx = ctx
        self.registry = registry
        self._board_files: set[str] = set()
        self._lock = threading.Lock()
        self._running_thread: int | None = None
        self.soft_reset()

    # --- state ------------------------------------------------------------------------------------
    def soft_reset(self) -> None:
        self.modules: dict[str, types.ModuleType] = {}
        self.ctx.keyboard_interrupt = True
        self.ctx.fs.cwd = "/flash"
        self.globals = self.new_namespace("__main__")

    def new_namespace(self, name: str) -> dict[str, Any]:
        return {"__name__": name, "__builtins__": self._builtins()}

    def _builtins(self) -> dict[str, Any]:
        import builtins

        b = dict(vars(builtins))
        for name in ("exit", "quit", "copyright", "credits", "license", "breakpoint", "help"):
            b.pop(name, None)
        b["print"] = self._print
        b["open"] = self.ctx.fs.open
        b["__import__"] = self._import
        b["input"] = self._input
        return b

    # --- running code -----------------------------------------------------------------------------
    def run_source(self, source: str | bytes, filename: str = "<stdin>", repl_line: bool = False) -> str | None:
        """Run ``source``; return the MicroPython-style traceback text, or None when it ran cleanly."""
        if isinstance(source, bytes):
            source = source.decode("utf-8", "replace")
        self._board_files.add(filename)
        with self._lock:
            self._running_thread = threading.get_ident()
        try:
            try:
                self._check_dialect(source, filename)
                if repl_line:
                    return self._run_repl_line(source, filename)
                code = compile(source, filename, "exec", dont_inherit=True)
                exec(code, self.globals)
                return None
            finally:
                with self._lock:
                    self._running_thread = None
                    # Drop an interrupt that arrived after the script finished.
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
        except BoardReset:
            raise
        except SystemExit:
            return None
        except BaseException as exc:  # everything the script raised, including KeyboardInterrupt
            return self.format_exception(exc)

    def _run_repl_line(self, source: str, filename: str) -> str | None:
        try:
            code = compile(source, filename, "eval", dont_inherit=True)
        except SyntaxError:
            exec(compile(source, filename, "exec", dont_inherit=True), self.globals)
            return None
        value = eval(code, self.globals)
        if value is not None:
            self.ctx.write(repr(value) + "\n")
        return None

    def run_file(self, board_path: str) -> str | None:
        """Run a script from the board's filesystem (boot.py, main.py); None also when it does not exist."""
        try:
            host = self.ctx.fs.host_path(board_path)
        except OSError:
            return None
        if not host.is_file():
            return None
        return self.run_source(host.read_bytes(), board_path.rsplit("/", 1)[-1])

    def interrupt(self, exc_type: type[BaseException] = KeyboardInterrupt) -> bool:
        """Raise ``exc_type`` in the thread running a script (Ctrl-C, or a reset). False if none runs."""
        with self._lock:
            if self._running_thread is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._running_thread),
                                                       ctypes.py_object(exc_type))
            return True

    @property
    def running(self) -> bool:
        return self._running_thread is not None

    def _check_dialect(self, source: str, filename: str) -> None:
        """Reject f-strings when the board's MicroPython predates them (SyntaxError, as the board)."""
        if self.ctx.board.firmware.fstrings:
            return
        try:
            for tok in tokenize.generate_tokens(io.StringIO(source).readline):
                if tok.type == tokenize.STRING and "f" in tok.string.split("'")[0].split('"')[0].lower():
                    err = SyntaxError("invalid syntax")
                    err.filename, err.lineno = filename, tok.start[0]
                    raise err
        except (tokenize.TokenError, IndentationError):
            return  # compile() reports these

    # --- builtins the script sees -----------------------------------------------------------------
    def _print(self, *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
               flush: bool = False) -> None:
        text = (" " if sep is None else sep).join(str(a) for a in args) + ("\n" if end is None else end)
        if file is None or getattr(file, "_k210_stdout", False):
            self.ctx.write(text)
        else:
            file.write(text)

    def _input(self, prompt: str = "") -> str:
        self.ctx.write(prompt)
        line = b""
        while not line.endswith((b"\r", b"\n")):
            line += self.ctx.stdin.read(1)
        self.ctx.write("\n")
        return line.decode(errors="replace").rstrip("\r\n")

    def _import(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: int = 0) -> types.ModuleType:
        if level:
            raise ImportError("relative import not supported")
        module = self.load_module(name)
        if fromlist or "." not in name:
            return module
        return self.load_module(name.split(".")[0])

    def load_module(self, name: str) -> types.ModuleType:
        if name in self.modules:
            return self.modules[name]
        factory = self.registry.get(name)
        if factory is not None:
            module = factory(self.ctx)
        elif name in PASSTHROUGH:
            import importlib

            module = importlib.import_module(PASSTHROUGH[name])
        else:
            module = self._module_from_fs(name)
        self.modules[name] = module
        return module

    def _module_from_fs(self, name: str) -> types.ModuleType:
        for folder in BOARD_SYS_PATH:
            path = f"{folder}/{name}.py" if folder else f"{name}.py"
            try:
                host = self.ctx.fs.host_path(path)
            except OSError:
                continue
            if host.is_file():
                module = types.ModuleType(name)
                module.__dict__.update(self.new_namespace(name))
                board_name = self.ctx.fs.board_path(path)
                self._board_files.add(board_name)
                self.modules[name] = module  # before exec: circular imports see the partial module
                exec(compile(host.read_bytes(), board_name, "exec", dont_inherit=True), module.__dict__)
                return module
        raise ImportError(f"no module named '{name}'")

    # --- MicroPython's traceback format -----------------------------------------------------------
    def format_exception(self, exc: BaseException) -> str:
        lines = ["Traceback (most recent call last):"]
        if isinstance(exc, SyntaxError) and exc.filename in self._board_files:
            lines.append(f'  File "{exc.filename}", line {exc.lineno}')
            lines.append("SyntaxError: invalid syntax" if not isinstance(exc, IndentationError)
                         else "IndentationError: unexpected indent")
            return "\n".join(lines) + "\n"
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename in self._board_files:
                lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        lines.append(exception_line(exc))
        return "\n".join(lines) + "\n"


def exception_line(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"OSError: [Errno {exc.errno}] {errno.errorcode.get(exc.errno, exc.errno)}"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt: "
    text = str(exc)
    return f"{name}: {text}" if text else name
