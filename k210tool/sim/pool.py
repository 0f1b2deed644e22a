"""Run a kmodel engine over many images on every core: a process pool, one engine per worker.

nncase's ``Simulator`` is single-threaded (~0.5 s per 112x112 MobileFaceNet image), so a pool of N workers
gives close to N times the images per second. Each worker builds its own engine once (its initializer gets
the kmodel bytes); tasks are contiguous chunks of images and results are put back in input order.
Workers are spawned, not forked: the parent may hold TensorFlow's threads, which do not survive a fork.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from k210tool.errors import InputError, K210ToolError
from k210tool.report import Reporter
from k210tool.sim.engine import make_engine

# images per task: small for the slow Simulator (fine-grained progress, balanced workers), larger for NumPy
CHUNK = {"nncase": 4, "numpy": 32}
# engines that only ever run in a worker process: nncase's Simulator segfaults or spins on a corrupt kmodel,
# which must end in a one-line error, not take this process down
CHILD_ONLY = ("nncase",)
STALL_SECONDS = 600.0  # no task finished for this long: the engine hangs (a task takes seconds)


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class SimulationRun:
    outputs: list[np.ndarray]
    engine: str
    workers: int  # processes that ran the engine (1: in this process)
    seconds: float

    @property
    def images_per_second(self) -> float:
        n = len(self.outputs[0]) if self.outputs else 0
        return n / self.seconds if self.seconds > 0 else float("inf")


def simulate(kmodel: bytes, images: np.ndarray, engine: str = "nncase", *, workers: int | None = None,
             input_layout: str = "NCHW", chunk: int | None = None, reporter: Reporter | None = None,
             description: str | None = None) -> SimulationRun:
    """Outputs of the kmodel for uint8 NHWC ``images`` (batch first, input order), using ``workers`` processes.

    ``workers=None``: nncase on every available core; NumPy in this process, where the interpreter already
    spreads its work over the cores with threads (``benchmarks/simulate.py`` measured the threaded single
    process faster than a pool of single-threaded workers). A run smaller than two chunks stays in this process.
    """
    import time

    rep = reporter or Reporter()
    images = np.ascontiguousarray(images, np.uint8)
    size = max(1, int(chunk or CHUNK.get(engine, 8)))
    starts = list(range(0, len(images), size))
    wanted = (1 if engine == "numpy" else available_cpus()) if workers is None else int(workers)
    if wanted < 1:
        raise InputError("--workers must be at least 1")
    n_workers = max(1, min(wanted, len(starts)))
    desc = description or f"simulating the kmodel ({engine}, {n_workers} worker{'s' * (n_workers > 1)})"
    begin = time.perf_counter()
    with rep.progress(desc, total=len(images)) as bar:
        if n_workers == 1 and engine not in CHILD_ONLY:
            eng = make_engine(engine, kmodel, input_layout)
            parts = []
            for s in starts:
                parts.append(eng.run(images[s:s + size]))
                bar.advance(len(parts[-1][0]) if parts[-1] else 0)
        else:
            parts = _run_pool(kmodel, images, engine, input_layout, starts, size, n_workers, bar.advance)
    outputs = [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))] if parts else []
    return SimulationRun(outputs, engine, n_workers, time.perf_counter() - begin)


def _run_pool(kmodel: bytes, images: np.ndarray, engine: str, layout: str, starts: list[int], size: int,
              n_workers: int, advance: Callable[[int], None]) -> list[list[np.ndarray]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from k210tool.sim.poolworker import worker_init, worker_run

    results: dict[int, list[np.ndarray]] = {}
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=worker_init, initargs=(engine, kmodel, layout))
    finished = False
    try:
        pending = {pool.submit(worker_run, s, images[s:s + size]) for s in starts}
        while pending:
            done, pending = wait(pending, timeout=STALL_SECONDS, return_when=FIRST_COMPLETED)
            if not done:
                raise K210ToolError(f"the {engine} simulator made no progress for {STALL_SECONDS:.0f} s (it hangs "
                                    "on this kmodel)", "check the file with `k210tool inspect KMODEL`")
            for fut in done:
                start, outs, error = fut.result()
                if error is not None:
                    cls, message, hint = error
                    raise cls(message, hint)
                results[start] = outs
                advance(len(outs[0]) if outs else 0)
        finished = True
    except BrokenProcessPool:
        raise K210ToolError(f"the {engine} simulator crashed on this kmodel (or ran out of memory)",
                            "is the kmodel corrupt? `k210tool inspect KMODEL` reads it; convert it again") from None
    finally:
        if not finished:  # a hung or crashed worker: kill them all, or shutdown would wait for it forever
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[s] for s in starts]
