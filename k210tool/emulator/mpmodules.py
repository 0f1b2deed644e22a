"""MicroPython-ish modules of the emulated firmware: enough for mpremote's fs commands and k210tool's own
deploy and flash read-back (``os``, ``sys``, ``time``, ``gc``, ``hashlib``, ``micropython``, ``machine``,
``Maix.utils``, ``io``). The MaixPy/CanMV hardware modules (``sensor``, ``lcd``, ``KPU``...) are issue 7's
and register into the same :class:`~k210tool.emulator.runtime.ModuleRegistry`.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import types
from typing import Any

from k210tool.emulator.runtime import BOARD_SYS_PATH, BoardContext, ModuleRegistry


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def make_os(ctx: BoardContext) -> types.ModuleType:
    fs = ctx.fs
    uname = types.SimpleNamespace(sysname="k210", nodename="k210", release="1.11.0",
                                  version=f"emulated {ctx.board.firmware.name}", machine=ctx.board.name)
    return _module(
        "uos", listdir=fs.listdir, ilistdir=fs.ilistdir, stat=fs.stat, statvfs=fs.statvfs, mkdir=fs.mkdir,
        rmdir=fs.rmdir, remove=fs.remove, unlink=fs.remove, rename=fs.rename, chdir=fs.chdir,
        getcwd=fs.getcwd, uname=lambda: uname, sync=lambda: None, urandom=os.urandom, sep="/",
    )


class _Stdout:
    """``sys.stdout``: text and ``.buffer`` bytes both go to the serial line."""

    _k210_stdout = True

    def __init__(self, ctx: BoardContext) -> None:
        self._ctx = ctx
        self.buffer = self

    def write(self, data: str | bytes | bytearray | memoryview, n: int | None = None) -> int:
        if not isinstance(data, str):
            data = bytes(data)[:n].decode("utf-8", "replace")
        self._ctx.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _Stdin:
    def __init__(self, ctx: BoardContext) -> None:
        self._ctx = ctx
        self.buffer = self

    def read(self, n: int = 1) -> bytes:
        return self._ctx.stdin.read(n)

    def readinto(self, buf: Any, n: int | None = None) -> int:
        n = len(buf) if n is None else n
        data = self._ctx.stdin.read(n)
        buf[:len(data)] = data
        return len(data)


def make_sys(ctx: BoardContext) -> types.ModuleType:
    stdout = _Stdout(ctx)

    def print_exception(exc: BaseException, file: Any = None) -> None:
        from k210tool.emulator.runtime import exception_line

        (file or stdout).write("Traceback (most recent call last):\n" + exception_line(exc) + "\n")

    def sys_exit(code: int = 0) -> None:
        raise SystemExit(code)

    return _module(
        "usys", stdout=stdout, stderr=stdout, stdin=_Stdin(ctx), argv=[], path=list(BOARD_SYS_PATH),
        platform="k210", version="3.4.0", byteorder="little", maxsize=2**31 - 1,
        implementation=types.SimpleNamespace(name="micropython", version=(1, 11, 0)),
        version_info=(3, 4, 0), modules={}, exit=sys_exit, print_exception=print_exception,
    )


def make_time(ctx: BoardContext) -> types.ModuleType:
    def ticks_ms() -> int:
        return int((time.monotonic() - ctx.boot_time) * 1000) & 0x3FFFFFFF

    def ticks_us() -> int:
        return int((time.monotonic() - ctx.boot_time) * 1_000_000) & 0x3FFFFFFF

    def ticks_diff(a: int, b: int) -> int:
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    return _module(
        "utime", sleep=ctx.sleep, sleep_ms=lambda ms: ctx.sleep(ms / 1000), sleep_us=lambda us: ctx.sleep(us / 1e6),
        ticks_ms=ticks_ms, ticks_us=ticks_us, ticks_cpu=ticks_us, ticks_diff=ticks_diff,
        ticks_add=lambda t, d: (t + d) & 0x3FFFFFFF, time=lambda: int(time.time()), localtime=time.localtime,
        mktime=lambda t: int(time.mktime(t)),
    )


def make_gc(ctx: BoardContext) -> types.ModuleType:
    heap = ctx.board.firmware.model_memory
    return _module("gc", collect=lambda: None, enable=lambda: None, disable=lambda: None,
                   mem_free=lambda: heap // 2, mem_alloc=lambda: heap // 8, threshold=lambda *a: -1)


def make_hashlib(ctx: BoardContext) -> types.ModuleType:
    return _module("uhashlib", sha256=hashlib.sha256, sha1=hashlib.sha1, md5=hashlib.md5)


def make_micropython(ctx: BoardContext) -> types.ModuleType:
    def kbd_intr(char: int) -> None:
        ctx.keyboard_interrupt = char == 3

    return _module("micropython", const=lambda x: x, opt_level=lambda *a: 0, kbd_intr=kbd_intr,
                   mem_info=lambda *a: None, qstr_info=lambda *a: None, heap_lock=lambda: None,
                   heap_unlock=lambda: None, alloc_emergency_exception_buf=lambda n: None,
                   schedule=lambda f, arg: f(arg))


def make_machine(ctx: BoardContext) -> types.ModuleType:
    def reset() -> None:
        ctx.request_reset()
        ctx.sleep(10)  # the reset interrupts this script

    return _module("machine", reset=reset, soft_reset=reset, freq=lambda *a: 400_000_000,
                   unique_id=lambda: b"\x00" * 32, idle=lambda: None)


def make_maix(ctx: BoardContext) -> types.ModuleType:
    """``Maix`` with ``utils.flash_read(address, length)`` (what k210tool's flash read-back uses)."""

    def flash_read(address: int, length: int) -> bytes:
        try:
            return ctx.flash.read(int(address), int(length))
        except ValueError:
            raise OSError(5, "EIO") from None

    utils = types.SimpleNamespace(flash_read=flash_read, gc_heap_size=lambda *a: ctx.board.firmware.model_memory,
                                  heap_free=lambda: ctx.board.firmware.model_memory // 2)
    return _module("Maix", utils=utils)


def make_io(ctx: BoardContext) -> types.ModuleType:
    # io.open must go through the confined filesystem like the builtin.
    return _module("uio", BytesIO=io.BytesIO, StringIO=io.StringIO, IOBase=io.IOBase, open=ctx.fs.open)


def default_registry() -> ModuleRegistry:
    reg = ModuleRegistry()
    reg.register("os", make_os, "uos")
    reg.register("sys", make_sys, "usys")
    reg.register("time", make_time, "utime")
    reg.register("gc", make_gc)
    reg.register("hashlib", make_hashlib, "uhashlib")
    reg.register("micropython", make_micropython)
    reg.register("machine", make_machine)
    reg.register("Maix", make_maix)
    reg.register("io", make_io, "uio")
    return reg


__all__ = ["default_registry", "make_os", "make_sys", "make_time", "make_gc", "make_hashlib",
           "make_micropython", "make_machine", "make_maix", "make_io"]
