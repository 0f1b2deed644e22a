"""The interpreter's threads: one shared pool, the per-thread ``inline`` switch, and BLAS limits."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from k210tool.sim.interp import jit

__all__ = ["blas_limited", "inline", "parallel", "threads"]

_pool: ThreadPoolExecutor | None = None
_local = threading.local()
try:  # the cores this process may run on (a container or taskset may allow fewer than the machine has)
    _CPUS = max(1, len(os.sched_getaffinity(0)))
except AttributeError:  # not Linux
    _CPUS = max(1, os.cpu_count() or 1)


def threads() -> int:
    """How many threads the interpreter uses (``K210TOOL_INTERP_THREADS``, default every core it may use)."""
    return int(os.environ.get("K210TOOL_INTERP_THREADS", "0")) or _CPUS


@contextlib.contextmanager
def inline() -> Iterator[None]:
    """Within this block, on this thread, :func:`parallel` runs its items itself (the caller already runs
    one batch per core, so splitting each layer again would only add overhead)."""
    before = getattr(_local, "inline", False)
    _local.inline = True
    try:
        yield
    finally:
        _local.inline = before


def parallel(fn: Callable[[int], None], items: range) -> None:
    """Run ``fn`` on every item, on as many threads as cores (NumPy releases the GIL inside its loops).

    Every item writes its own slice of the output, so the result does not depend on the scheduling.
    ``K210TOOL_INTERP_THREADS=1`` keeps everything on the calling thread (e.g. under a process pool).
    """
    global _pool
    count = threads()
    if count <= 1 or len(items) < 2 or getattr(_local, "inline", False):
        for item in items:
            fn(item)
        return
    if _pool is None or _pool._max_workers != count:  # noqa: SLF001 - resize when the setting changes
        _pool = ThreadPoolExecutor(count, thread_name_prefix="k210tool-interp")
    for _ in _pool.map(fn, items):
        pass


def blas_limited() -> contextlib.AbstractContextManager:
    """While the interpreter runs: BLAS on the calling thread only, as the compiled path parallelizes itself.

    The compiled path runs each block's matrix product and its levels in one task on :func:`parallel`'s
    threads. OpenBLAS's own threads would sit spinning between products and take the cores those tasks
    need (measured: the tasks ran no faster on two threads than on one). Without threadpoolctl, or on the
    NumPy path (which relies on BLAS threads for its big products), nothing changes.
    """
    if not jit.enabled():
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - depends on the environment
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")
