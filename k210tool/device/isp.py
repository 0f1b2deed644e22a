"""Flash over the K210's UART ISP with kflash, and prove what landed in flash.

1. :func:`isp_connect` - our own bounded greeting probe: reset into the ISP ROM with the board's line
   sequence and send the ROM greeting, a fixed number of attempts, each returning what went wrong (no
   answer / text from a running firmware / the lines cannot be driven). A missing, busy or silent port
   fails here in seconds with one line, before kflash's own 15-attempt loop.
2. :func:`flash` - build a kfpkg from the :class:`~k210tool.device.kfpkg.FlashPlan` and run kflash's
   Python API (``KFlash().process``) in a child process (:mod:`k210tool.device.kflash_runner`) with an
   idle and an overall timeout that scale with the data size.
3. Verification. The flash-mode program checks each chunk's CRC32; kflash 1.1.6 logs "Data checksum
   error, retrying..." for a rejected chunk but then moves on without re-sending it, so such a line fails
   the attempt here (and the whole flash is retried). Then, when the board runs MicroPython, the board
   itself hashes every region (``Maix.utils.flash_read`` + SHA-256) and the digests must match.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k210tool.device import ispproto as P
from k210tool.device.kfpkg import FlashPlan, Region, write_kfpkg
from k210tool.device.ptylink import PtyBridge
from k210tool.device.rawrepl import RawRepl
from k210tool.device.reset import ResetSequence, isp_strategies
from k210tool.device.transport import Transport, open_transport
from k210tool.errors import DeviceError, InputError
from k210tool.fileio import scratch_dir
from k210tool.report import Progress, Reporter

GREETING_TIMEOUT = 0.5
READ_BACK = "read back by the board (SHA-256)"
CRC_ONLY = "chunk CRC32s acknowledged by the ISP program"
FRAME = 64 * 1024  # kflash writes flash in 64 KiB frames


# --- 1. greeting probe -----------------------------------------------------------------------------------
def _try_greeting(transport: Transport, strategy: ResetSequence) -> str | None:
    """One reset + greeting; None on success, else what happened."""
    transport.reset_input()
    strategy(transport)
    transport.reset_input()
    transport.write(P.GREETING)
    decoder = P.SlipDecoder()
    deadline = time.monotonic() + GREETING_TIMEOUT
    while time.monotonic() < deadline:
        chunk = transport.read_available(256, max(0.0, deadline - time.monotonic()))
        for frame in decoder.feed(chunk):
            if frame[:1] == bytes([P.ROM_NOP]):
                return None
    if decoder.noise:
        return (f"after the {strategy.name} reset the board sent {bytes(decoder.noise[-40:])!r} instead of an "
                "ISP answer: it booted its firmware (wrong reset wiring for this board?)")
    return f"no answer to the ISP greeting after the {strategy.name} reset"


def isp_connect(transport: Transport, kflash_board: str | None, attempts: int = 3) -> ResetSequence:
    """Put the board into the ISP ROM; returns the strategy that worked. Raises a one-line DeviceError."""
    errors: list[str] = []
    strategies = isp_strategies(kflash_board)
    for _ in range(attempts):
        for strategy in strategies:
            problem = _try_greeting(transport, strategy)
            if problem is None:
                return strategy
            errors.append(problem)
    raise DeviceError(
        f"{transport.name}: the board never answered the K210 ISP greeting ({len(errors)} attempts); last: "
        f"{errors[-1]}",
        "check --board (its DTR/RTS reset wiring), the cable and the port; "
        "or hold the board's BOOT button while pressing RESET, then retry",
    )


# --- 2. kflash in a child process ------------------------------------------------------------------------
@dataclass
class KflashRun:
    ok: bool
    error: str = ""
    logs: list[str] = field(default_factory=list)
    rejected_chunks: int = 0


def _child_env() -> dict[str, str]:
    """The child must import k210tool and, for the emulator, the DTR/RTS shim this process uses."""
    import k210tool

    paths = [str(Path(k210tool.__file__).resolve().parent.parent)]
    try:
        import serial.serialposix as sp

        paths += list(getattr(sp, "_k210tool_emulator_dirs", []))
    except ImportError:
        pass
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH", "")])])
    return env


def run_kflash(port: str, baud: int, kflash_board: str, kfpkg: Path, *, idle_timeout: float,
               overall_timeout: float, reporter: Reporter) -> KflashRun:
    cmd = [sys.executable, "-m", "k210tool.device.kflash_runner", port, str(baud), kflash_board, str(kfpkg)]
    run = KflashRun(ok=False)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_child_env())
    start = last = time.monotonic()
    bars = _Bars(reporter)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        while True:
            now = time.monotonic()
            if now - last > idle_timeout:
                run.error = f"kflash made no progress for {idle_timeout:.0f} s (link lost or board hung?)"
                return run
            if now - start > overall_timeout:
                run.error = f"kflash did not finish within {overall_timeout:.0f} s (link lost or board hung?)"
                return run
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # the child closed stdout: it is done
                proc.wait(timeout=10)
                if not run.ok and not run.error:
                    run.error = f"kflash exited with status {proc.returncode} without a result"
                return run
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if _handle_event(line.decode("utf-8", "replace"), run, bars):
                    last = now  # only bytes written count: kflash's retry logs after a cut link are not progress
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        bars.close()


class _Bars:
    """One reporter progress bar per thing kflash reports on ("ISP" loader, each file)."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._open: dict[str, tuple[Any, Progress]] = {}

    def update(self, what: str, done: int, total: int) -> bool:
        """Move ``what``'s bar to ``done``; True when that is further than before."""
        if what not in self._open:
            cm = self._reporter.progress(f"kflash {what}", total=total)
            self._open[what] = (cm, cm.__enter__())
        handle = self._open[what][1]
        step = done - handle.done
        handle.advance(step)
        return step > 0

    def close(self) -> None:
        for cm, _handle in self._open.values():
            cm.__exit__(None, None, None)
        self._open.clear()


def _handle_event(line: str, run: KflashRun, bars: _Bars) -> bool:
    """Record one event of the runner; True when it is progress (more bytes written, or the end)."""
    try:
        event = json.loads(line)
    except ValueError:
        return False
    if not isinstance(event, dict):
        return False
    kind = event.get("event")
    if kind == "log":
        text = event.get("text", "")
        run.logs.append(text)
        if "checksum error" in text.lower():
            run.rejected_chunks += 1
    elif kind == "progress":
        return bars.update(str(event.get("what") or "flash"), int(event.get("done", 0)), int(event.get("total", 0)))
    elif kind == "done":
        run.ok = True
        return True
    elif kind == "error":
        run.error = str(event.get("text", "kflash failed")).replace("[ERROR]", "").strip()
        return True
    return False


# --- 3. verification -------------------------------------------------------------------------------------
_READBACK = """\
def _k210_flash_sha(a, n):
    from Maix import utils
    try:
        import uhashlib as h
    except ImportError:
        import hashlib as h
    try:
        import ubinascii as b
    except ImportError:
        import binascii as b
    d = h.sha256()
    while n > 0:
        k = 4096 if n > 4096 else n
        d.update(utils.flash_read(a, k))
        a += k
        n -= k
    return b.hexlify(d.digest()).decode()
"""


def readback_digests(transport: Transport, regions: tuple[Region, ...], prompt_timeout: float = 5.0) -> list[str]:
    """SHA-256 of each region's stored bytes, computed by the board from its own flash."""
    repl = RawRepl(transport, prompt_timeout=prompt_timeout)
    repl.enter()
    digests = []
    repl.exec(_READBACK)
    for r in regions:
        timeout = 10 + r.size / 100_000
        digests.append(repl.eval(f"_k210_flash_sha({r.address}, {r.size})", timeout=timeout))
    repl.exit()
    return digests


# --- the public function ---------------------------------------------------------------------------------
@dataclass
class FlashedRegion:
    name: str
    kind: str
    address: int
    size: int
    sha256: str
    verified: str  # how: "read back by the board (SHA-256)" or "chunk CRC32s acknowledged by the ISP program"


@dataclass
class FlashResult:
    port: str
    board: str
    baud: int
    kflash_board: str
    regions: list[FlashedRegion]
    attempts: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_per_second(self) -> float:
        return sum(r.size for r in self.regions) / self.seconds if self.seconds > 0 else 0.0


def flash(port: str, plan: FlashPlan, *, baud: int | None = None, kflash_board: str | None = None,
          attempts: int = 2, connect_attempts: int = 3, readback: bool | None = None,
          idle_timeout: float | None = None, reporter: Reporter | None = None) -> FlashResult:
    """Write ``plan`` to the board on ``port`` and verify it; raises DeviceError if it cannot be verified.

    ``port`` is a device or any pyserial URL (kflash then gets a local pty bridged to it).
    ``readback``: True requires the board to hash its flash over the raw REPL, False skips it, None does
    it when the board's firmware is MicroPython.
    """
    reporter = reporter or Reporter()
    if attempts < 1 or connect_attempts < 1:
        raise InputError(f"--attempts {min(attempts, connect_attempts)}: at least one attempt is needed")
    board = plan.board
    baud = baud or board.serial.isp_baud
    kflash_board = kflash_board or board.serial.kflash_board
    want_readback = board.firmware.micropython if readback is None else readback
    frame_seconds = FRAME * 10 / baud
    idle = idle_timeout or 15 + 3 * frame_seconds
    overall = 60 + 3 * (plan.total_bytes + 20_000) * 10 / min(baud, 115200 * 4)
    start = time.monotonic()

    with _PortAccess(port) as access, scratch_dir("flash") as tmp:
        with reporter.stage("connect (ISP greeting)"), access.transport(115200) as transport:
            strategy = isp_connect(transport, kflash_board, connect_attempts)
        kflash_board = kflash_board if kflash_board not in ("", "auto") else strategy.wiring.name
        kfpkg = write_kfpkg(plan.regions, Path(tmp) / "k210tool.kfpkg")
        errors: list[str] = []
        for attempt in range(1, attempts + 1):
            with reporter.stage(f"kflash (attempt {attempt})"), access.kflash_port() as kflash_port:
                run = run_kflash(kflash_port, baud, kflash_board, kfpkg, idle_timeout=idle,
                                 overall_timeout=overall, reporter=reporter)
            problem, how = _judge(run), CRC_ONLY
            if problem is None and want_readback:
                problem, how = _verify_readback(access, board.serial.repl_baud, plan, reporter)
            if problem is None:
                regions = [FlashedRegion(r.name, r.kind, r.address, r.size, r.sha256, how) for r in plan.regions]
                return FlashResult(port, board.id, baud, kflash_board, regions, attempt,
                                   time.monotonic() - start, list(reporter.warnings))
            errors.append(problem)
            if attempt < attempts:
                reporter.warn(f"flash attempt {attempt} failed: {problem}; retrying")
    raise DeviceError(f"flashing {port} failed after {attempts} attempts: {errors[-1]}",
                      "check the cable, try a lower --baud, and retry")


def _judge(run: KflashRun) -> str | None:
    if not run.ok:
        return f"kflash: {run.error}"
    if run.rejected_chunks:
        return (f"the ISP program rejected {run.rejected_chunks} chunk(s) with a bad checksum and kflash "
                "did not re-send them")
    return None


class _PortAccess:
    """How kflash and k210tool reach the board in turn. A local device is opened by each when its turn
    comes (kflash opens it by name); a pyserial URL stays open here and kflash gets a pty bridged to it."""

    def __init__(self, port: str) -> None:
        self.port = port
        self._shared = open_transport(port, 115200) if "://" in port else None

    @contextlib.contextmanager
    def transport(self, baud: int) -> Iterator[Transport]:
        if self._shared is None:
            with open_transport(self.port, baud) as t:
                yield t
            return
        self._shared.baudrate = baud
        self._shared.reset_input()
        yield self._shared

    @contextlib.contextmanager
    def kflash_port(self) -> Iterator[str]:
        if self._shared is None:
            yield self.port
            return
        with PtyBridge(self._shared) as bridge:
            yield bridge.port

    def __enter__(self) -> _PortAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._shared is not None:
            self._shared.close()


def _verify_readback(access: _PortAccess, baud: int, plan: FlashPlan, reporter: Reporter) -> tuple[str | None, str]:
    """(problem or None, how the regions were verified). A read-back that cannot run is a problem: the
    chunk CRCs alone do not prove what is in the flash (--no-readback accepts them knowingly)."""
    with reporter.stage("verify (board hashes its flash)"):
        try:
            with access.transport(baud) as transport:
                time.sleep(0.3)  # the board reboots after kflash; let the firmware start
                digests = readback_digests(transport, plan.regions)
        except DeviceError as exc:
            return (f"could not read the flash back: {exc.message} (--no-readback accepts the ISP program's chunk "
                    "CRCs alone)", CRC_ONLY)
    if len(digests) != len(plan.regions) or not all(isinstance(d, str) and len(d) == 64 for d in digests):
        return f"the board's read-back gave no SHA-256 digests ({str(digests)[:80]})", CRC_ONLY
    for region, digest in zip(plan.regions, digests, strict=True):
        expected = _stored_sha256(region)
        if digest != expected:
            return (f"{region.describe()} reads back as sha256 {digest[:16]}..., expected {expected[:16]}...",
                    CRC_ONLY)
    return None, READ_BACK


def _stored_sha256(region: Region) -> str:
    import hashlib

    return hashlib.sha256(region.stored).hexdigest()
