"""Child processes that never outlive their parent and never hang it.

nncase is C++ that can spin forever (a NaN in its options) or crash (a corrupt kmodel); it runs in a child.
:func:`run_streaming` reads the child's output with a deadline that holds even when the child prints
nothing, and kills the child's whole process group when the deadline passes, on Ctrl-C and on any error.
:func:`die_with_parent`, called first thing in a child, makes the kernel kill it if the parent is killed
(SIGKILL included), so an orphaned compile never keeps a core busy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

PARENT_ENV = "K210TOOL_PARENT_PID"
_PR_SET_PDEATHSIG = 1


class Deadline(Exception):
    """The child did not finish in time (it has been killed)."""


def die_with_parent() -> None:
    """In a child started by :func:`run_streaming`: get SIGKILL when the parent dies; exit now if it already has.

    The parent's pid comes from :func:`child_env` (taken out of the environment here, so the child's own
    children do not compare against it). The kernel sends the signal when the *thread* that started the
    child ends; run_streaming waits for the child in that thread, so the two end together.
    """
    expected = os.environ.pop(PARENT_ENV, "")
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if expected.isdigit() and os.getppid() != int(expected):
        os._exit(1)  # the parent died before prctl took effect


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    env[PARENT_ENV] = str(os.getpid())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@contextlib.contextmanager
def owned(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """Kill ``proc``'s process group on leaving, however the block ends (a finished child is untouched)."""
    try:
        yield proc
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def run_streaming(cmd: list[str], timeout: float, on_line: Callable[[str], None], **popen: Any) -> int:
    """Run ``cmd`` (stdout and stderr merged), pass each output line to ``on_line``; return the exit code.

    Raises :class:`Deadline` ``timeout`` seconds after the start, whether or not the child prints.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=popen.pop("env", None) or child_env(), **popen)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with owned(proc):
        fd = proc.stdout.fileno()
        pending = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Deadline(f"did not finish within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace"))
        if pending:
            on_line(pending.decode("utf-8", "replace"))
        return proc.wait(max(1.0, deadline - time.monotonic()))
