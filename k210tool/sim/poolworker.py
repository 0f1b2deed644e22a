"""The worker side of :mod:`k210tool.sim.pool`, kept free of NumPy at import time.

A spawned worker imports this module to unpickle its initializer; the thread limits below must be in the
environment before NumPy (OpenBLAS) is first imported, or they have no effect.
"""

from __future__ import annotations

import os
from typing import Any

_ENGINE: Any = None


def worker_init(engine: str, kmodel: bytes, layout: str) -> None:
    global _ENGINE
    # one thread per worker: the pool is the parallelism; BLAS threads and the NumPy interpreter's own
    # thread pool (K210TOOL_INTERP_THREADS) would only fight over the cores
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "K210TOOL_INTERP_THREADS"):
        os.environ.setdefault(var, "1")
    from k210tool.errors import K210ToolError
    from k210tool.sim.engine import make_engine

    try:
        _ENGINE = make_engine(engine, kmodel, layout)
    except K210ToolError as exc:
        _ENGINE = exc  # reported with the first task, as our one-line error


def worker_run(start: int, batch: Any) -> tuple[int, list[Any] | None, tuple[type, str, str | None] | None]:
    """(start, outputs, None), or (start, None, (error class, message, hint)) for a K210ToolError."""
    from k210tool.errors import K210ToolError

    try:
        if isinstance(_ENGINE, K210ToolError):
            raise _ENGINE
        return start, _ENGINE.run(batch), None
    except K210ToolError as exc:
        # sent as parts: a pickled exception keeps only its message, and the hint is half the point
        return start, None, (type(exc), exc.message, exc.hint)
