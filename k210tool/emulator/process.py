"""Run ``k210tool emulate`` in a child process (for tests and scripts that want it out of process)::

    with emulator_process("maix_dock", "--fault", "corrupt:stub:3000") as emu:
        subprocess.run(["kflash", "-p", emu.port, "-B", "dan", "x.kfpkg"], env=emu.env())
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from k210tool.errors import K210ToolError


@dataclass
class EmulatorHandle:
    port: str
    pythonpath: str
    fs: str
    process: subprocess.Popen[bytes]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, env.get("PYTHONPATH", "")) if p)
        return env


@contextlib.contextmanager
def emulator_process(board: str = "maix_dock", *args: str, timeout: float = 30.0) -> Iterator[EmulatorHandle]:
    cmd = [sys.executable, "-m", "k210tool", "emulate", "--board", board, "--json", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        info = _first_line(proc, timeout)
        yield EmulatorHandle(info["port"], info["pythonpath"], info["fs"], proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr and proc.poll() is not None else ""
            raise K210ToolError(f"k210tool emulate did not start: {err.strip()[-300:] or 'timeout'}")
        if select.select([proc.stdout], [], [], min(left, 0.1))[0]:
            line += os.read(proc.stdout.fileno(), 4096)
    info = json.loads(line.decode())
    if "error" in info:  # --json reports a refused start as {"error": ..., "hint": ...}
        raise K210ToolError(f"k210tool emulate: {info['error']}", info.get("hint"))
    return info
