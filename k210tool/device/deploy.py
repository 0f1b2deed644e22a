"""Copy files to the board's filesystem and run scripts, over the raw REPL.

A file is written in chunks to a temporary name, each chunk's written length echoed by the board; the
board then checksums the whole file itself (SHA-256 with ``uhashlib``, Adler-32 in plain Python when
the firmware has no hashlib) and only a match against the local file renames it into place. So a
corrupted or cut transfer never leaves a damaged file under the real name, and nothing is reported as
deployed that was not read back by the board. Failed files are retried after re-synchronising the REPL.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import posixpath
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from k210tool.device.rawrepl import RawRepl
from k210tool.device.transport import Transport
from k210tool.errors import DeviceError, InputError
from k210tool.report import Reporter

CHUNK = 1024
TEMP_NAME = "_k210tmp"

# Runs on the board (MicroPython 1.11: no f-strings). Returns (algorithm, size, hex digest).
_CHECKSUM_FN = """\
def _k210_sum(p):
    try:
        import uhashlib as h
    except ImportError:
        try:
            import hashlib as h
        except ImportError:
            h = None
    try:
        import ubinascii as b
    except ImportError:
        import binascii as b
    f = open(p, 'rb')
    n = 0
    if h is not None and hasattr(h, 'sha256'):
        d = h.sha256()
        while True:
            c = f.read(1024)
            if not c:
                break
            n += len(c)
            d.update(c)
        f.close()
        return ('sha256', n, b.hexlify(d.digest()).decode())
    x, y = 1, 0
    while True:
        c = f.read(1024)
        if not c:
            break
        n += len(c)
        for v in c:
            x = (x + v) % 65521
            y = (y + x) % 65521
    f.close()
    return ('adler32', n, '%08x' % ((y << 16) | x))
"""

_OPEN_FN = """\
try:
    import ubinascii as _b
except ImportError:
    import binascii as _b
_f = open(%r, 'wb')
_w = _f.write
_d = _b.a2b_base64
"""

_REPLACE_FN = """\
import uos as _o
try:
    _o.remove(%r)
except OSError:
    pass
_o.rename(%r, %r)
print(_o.stat(%r)[6])
"""


@dataclass
class DeployedFile:
    local: str
    remote: str
    size: int
    checksum: str  # "sha256:<hex>" or "adler32:<hex>", as computed by the board
    attempts: int
    seconds: float


@dataclass
class DeployResult:
    port: str
    files: list[DeployedFile] = field(default_factory=list)
    rebooted: bool = False
    seconds: float = 0.0

    @property
    def bytes_per_second(self) -> float:
        total = sum(f.size for f in self.files)
        return total / self.seconds if self.seconds > 0 else 0.0


def local_checksum(data: bytes, algorithm: str) -> str:
    if algorithm == "sha256":
        return hashlib.sha256(data).hexdigest()
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def plan_files(sources: list[str], dest_dir: str = "/flash") -> list[tuple[Path, str]]:
    """``FILE`` -> (path, ``dest_dir/name``); ``FILE:/board/path`` names the board path itself."""
    plan: list[tuple[Path, str]] = []
    for spec in sources:
        local, remote = spec, ""
        if ":/" in spec:
            local, remote = spec.split(":/", 1)
            remote = "/" + remote
        path = Path(local)
        if not path.exists():
            raise InputError(f"{local} does not exist", "give the files to copy, e.g. a script `k210tool script` wrote")
        if not path.is_file():
            raise InputError(f"{local} is not a file", "give files to copy (folders are not copied)")
        plan.append((path, remote or posixpath.join(dest_dir, path.name)))
    remotes = [r for _p, r in plan]
    duplicates = sorted({r for r in remotes if remotes.count(r) > 1})
    if duplicates:
        raise InputError(f"two files would land on {duplicates[0]}", "rename one or give FILE:/board/path")
    return plan


def write_file(repl: RawRepl, remote: str, data: bytes, *, local: str = "", attempts: int = 3,
               reporter: Reporter | None = None) -> DeployedFile:
    """Write ``data`` to ``remote`` on the board and verify it there; retries after a failed attempt."""
    reporter = reporter or Reporter()
    start = time.monotonic()
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            checksum = _write_once(repl, remote, data, reporter)
            return DeployedFile(local, remote, len(data), checksum, attempt, time.monotonic() - start)
        except DeviceError as exc:
            errors.append(exc.message)
            if attempt < attempts:
                reporter.warn(f"{remote}: attempt {attempt} failed ({exc.message}); retrying")
                repl.enter()  # re-synchronise: whatever the board was doing is interrupted
    raise DeviceError(f"could not write {remote} after {attempts} attempts: {errors[-1]}",
                      "check the cable and the board's free space (a soft reset frees memory)")


def _write_once(repl: RawRepl, remote: str, data: bytes, reporter: Reporter) -> str:
    folder = posixpath.dirname(remote) or "/flash"
    temp = posixpath.join(folder, TEMP_NAME)
    _ensure_dir(repl, folder)
    repl.exec(_OPEN_FN % temp)
    written = 0
    with reporter.progress(f"copy {remote}", total=len(data)) as bar:
        for pos in range(0, len(data), CHUNK):
            piece = data[pos:pos + CHUNK]
            text = base64.b64encode(piece).decode()
            answer = repl.exec(f"print(_w(_d({text!r})))").strip()
            if answer != str(len(piece)).encode():
                raise DeviceError(f"the board wrote {answer[:20]!r} bytes of a {len(piece)}-byte chunk")
            written += len(piece)
            bar.advance(len(piece))
    repl.exec("_f.close()")
    algorithm, size, digest = board_checksum(repl, temp, len(data))
    expected = local_checksum(data, algorithm)
    if size != len(data) or digest != expected:
        repl.exec(f"import uos\nuos.remove({temp!r})")
        raise DeviceError(f"checksum mismatch on the board for {remote}: {algorithm} {digest} ({size} bytes), "
                          f"expected {expected} ({len(data)} bytes)")
    final = repl.exec(_REPLACE_FN % (remote, temp, remote, remote)).strip()
    if final != str(len(data)).encode():
        raise DeviceError(f"{remote} has {final[:20]!r} bytes after the rename, expected {len(data)}")
    return f"{algorithm}:{digest}"


def board_checksum(repl: RawRepl, path: str, size: int) -> tuple[str, int, str]:
    """(algorithm, size, hex digest) of a file, computed by the board itself."""
    # The definition travels with the call: a reset on the board since the last file loses it.
    text = repl.exec(_CHECKSUM_FN + f"print(repr(_k210_sum({path!r})))", timeout=10 + size / 50_000)
    try:
        algorithm, n, digest = ast.literal_eval(text.decode("utf-8", "replace").strip())
    except (ValueError, SyntaxError, TypeError):
        raise DeviceError(f"unexpected checksum answer from the board: {text[:80]!r}") from None
    return str(algorithm), int(n), str(digest)


def _ensure_dir(repl: RawRepl, folder: str) -> None:
    repl.exec(
        "import uos\n"
        f"_p = ''\nfor _c in {folder!r}.strip('/').split('/'):\n"
        "    _p += '/' + _c\n"
        "    try:\n        uos.stat(_p)\n    except OSError:\n        uos.mkdir(_p)\n"
    )


def deploy(transport: Transport, files: list[tuple[Path, str]], *, soft_reset: bool = True, reboot: bool = True,
           attempts: int = 3, prompt_timeout: float = 3.0, reporter: Reporter | None = None) -> DeployResult:
    """Copy ``files`` ((local path, board path) pairs) and verify each on the board; then start the app."""
    reporter = reporter or Reporter()
    start = time.monotonic()
    repl = RawRepl(transport, prompt_timeout=prompt_timeout)
    repl.enter(soft_reset=soft_reset)
    result = DeployResult(transport.name)
    for path, remote in files:
        data = path.read_bytes()
        result.files.append(write_file(repl, remote, data, local=str(path), attempts=attempts, reporter=reporter))
    result.seconds = time.monotonic() - start
    if reboot:
        repl.reboot_to_app()
        result.rebooted = True
    else:
        repl.exit()
    return result


@dataclass
class RunResult:
    port: str
    traceback: str
    seconds: float
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.traceback


def run_script(transport: Transport, source: str | bytes, *, on_output: Callable[[bytes], None],
               soft_reset: bool = True, timeout: float | None = None, prompt_timeout: float = 3.0) -> RunResult:
    """Run ``source`` on the board, streaming its output; Ctrl-C here interrupts it there."""
    repl = RawRepl(transport, prompt_timeout=prompt_timeout)
    repl.enter(soft_reset=soft_reset)
    start = time.monotonic()
    repl.send_program(source.encode() if isinstance(source, str) else source)
    try:
        result = repl.follow(timeout, on_output)
        interrupted = False
    except KeyboardInterrupt:
        repl.interrupt()  # the board prints the KeyboardInterrupt traceback and returns to the prompt
        result = repl.follow(prompt_timeout, on_output)
        interrupted = True
    repl.exit()
    return RunResult(transport.name, result.traceback, time.monotonic() - start, interrupted)
