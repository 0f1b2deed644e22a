"""Child process that runs kflash's Python API and reports on stdout as JSON lines.

kflash (``KFlash().process(...)``) is the real K210 ISP loader, so k210tool does not re-implement it,
but it keeps global state (a class-level print callback), retries some reads forever, and cannot be
interrupted from another thread. Running it in a child process lets :mod:`k210tool.device.isp` bound
its time and kill it; its log lines and progress come back as ``{"event": "log"|"progress"|"done"|
"error", ...}``. Usage: ``python -m k210tool.device.kflash_runner PORT BAUD BOARD FILE``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    port, baud, board, path = argv
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # anything kflash prints itself must not corrupt the JSON stream

    def emit(event: str, **fields: Any) -> None:
        out.write(json.dumps({"event": event, **fields}) + "\n")

    from kflash import KFlash

    def log(*args: Any, **_kwargs: Any) -> None:
        text = " ".join(str(a) for a in args).strip()
        if text and not text.startswith("\r") and "|" not in text:  # skip kflash's text progress bars
            emit("log", text=text)

    def progress(what: str, done: int, total: int, _speed: str) -> None:
        emit("progress", what=what, done=done, total=total)

    KFlash.print_callback = log
    try:
        KFlash().process(terminal=False, dev=port, baudrate=int(baud), board=board or None, file=path,
                         callback=progress, noansi=True)
    except Exception as exc:  # kflash reports every failure as a bare Exception with a message
        emit("error", text=str(exc).strip() or type(exc).__name__)
        return 1
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
