"""A NumPy interpreter of kmodels: the KPU's functional model plus the CPU ops, batched over N images.

:class:`NumpyEngine` implements :class:`k210tool.sim.engine.Engine`. On kmodel v5 from nncase 1.9 its
outputs equal ``nncase.Simulator``'s bit for bit; kmodel v4 files (nncase 0.2, or made by
``transcode_to_v4``) run with the v4 runtime's semantics (``program4``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from k210tool.errors import InputError
from k210tool.sim.engine import to_layout
from k210tool.sim.interp.workers import blas_limited, inline, threads

DEFAULT_CHUNK = 16


def _per_image(shape: tuple[int, ...]) -> tuple[int, ...]:
    """An output's shape without its batch of one (v5 ``(1, 128)``) or as stored (v4 ``(128,)``)."""
    return tuple(shape[1:]) if len(shape) > 1 and shape[0] == 1 else tuple(shape)


class NumpyEngine:
    """Run a kmodel (v4 or v5 bytes) on uint8 NHWC batches; returns the outputs as float32 (N, ...)."""

    name = "numpy"

    def __init__(self, kmodel: bytes, input_layout: str = "NCHW", chunk: int = DEFAULT_CHUNK) -> None:
        from k210tool.compile.kmodel import read_kmodel

        self.model = read_kmodel(kmodel)
        if self.model.version == 5:
            from k210tool.sim.interp.program5 import V5Program

            self.program = V5Program(self.model)
        elif self.model.version == 4:
            from k210tool.sim.interp.program4 import V4Program

            self.program = V4Program(self.model)
        else:
            raise InputError(f"the NumPy interpreter runs kmodel v4 and v5, this file is v{self.model.version}",
                             "run v3 files on the board")
        if len(self.model.inputs) != 1:
            raise InputError(f"the engine feeds one image input; this kmodel has {len(self.model.inputs)} inputs")
        self.input_layout = input_layout
        self.chunk = max(1, int(chunk))
        self.outputs = len(self.model.outputs)
        self._free: dict[int, list[object]] = {}  # memory pools of finished batches, by batch size, for reuse
        self._lock = threading.Lock()
        self._batches: ThreadPoolExecutor | None = None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = to_layout(np.asarray(batch, np.uint8), self.input_layout)
        desc = self.model.inputs[0]
        per_image = int(np.prod(desc.shape[1:])) if desc.shape else 0
        if x.ndim != 4 or int(np.prod(x.shape[1:])) != per_image or tuple(x.shape[1:]) != tuple(desc.shape[1:]):
            raise InputError(f"input batch {tuple(batch.shape)} does not match the kmodel input "
                             f"{list(desc.shape)} ({self.input_layout})", "prepare images with the model's Preprocess")
        if not len(x):
            return [np.empty((0,) + _per_image(t.shape), np.float32) for t in self.model.outputs]
        parts = _split(len(x), self.chunk, threads())
        outs: list[list[np.ndarray]] = [[] for _ in parts]

        def run_part(k: int) -> None:
            s, e = parts[k]
            memory = self._take_pools(e - s)
            try:
                outs[k] = self.program.run_images(x[s:e].reshape(e - s, -1), memory)
            finally:
                self._give_back(e - s, memory)
        with blas_limited():
            if len(parts) >= 2 and threads() >= 2:
                # a batch per thread, each run whole on its thread: no per-layer hand-offs, and one batch's
                # Python-level steps overlap the other's compiled kernels
                def run_inline(k: int) -> None:
                    with inline():
                        run_part(k)
                for _ in self._batch_pool().map(run_inline, range(len(parts))):
                    pass
            else:
                for k in range(len(parts)):
                    run_part(k)
        return [np.concatenate([o[j] for o in outs]).reshape((len(x),) + _per_image(t.shape)).astype(np.float32)
                for j, t in enumerate(self.model.outputs)]

    def _take_pools(self, n: int) -> object:
        with self._lock:
            free = self._free.get(n)
            if free:
                return free.pop()
        return self.program.new_pools(n)

    def _give_back(self, n: int, memory: object) -> None:
        """Keep a batch's memory for the next run: one set per thread, for the two latest batch sizes."""
        with self._lock:
            free = self._free.pop(n, [])  # re-inserted last: the sizes stay in order of use
            if len(free) < threads():
                free.append(memory)
            self._free[n] = free
            while len(self._free) > 2:
                self._free.pop(next(iter(self._free)))

    def _batch_pool(self) -> ThreadPoolExecutor:
        if self._batches is None or self._batches._max_workers != threads():  # noqa: SLF001
            self._batches = ThreadPoolExecutor(threads(), thread_name_prefix="k210tool-batch")
        return self._batches


def _split(n: int, chunk: int, workers: int) -> list[tuple[int, int]]:
    """Batches of at most ``chunk`` images, as many as the threads or a multiple of it when that evens
    the work out (64 images, chunk 16, 2 threads: four batches of 16; 10 images: two of 5)."""
    if n == 0:
        return []
    count = -(-n // chunk)
    if workers > 1 and n > 1:
        count = -(-count // workers) * workers
    size = -(-n // count)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


class OutputDiff:
    """How one output tensor of two runs differs (bit-for-bit comparison, then magnitude)."""

    def __init__(self, name: str, a: np.ndarray, b: np.ndarray) -> None:
        self.name = name
        self.shape = tuple(a.shape)
        same_shape = a.shape == b.shape
        bits_a = np.ascontiguousarray(a, np.float32).view(np.uint32)
        bits_b = np.ascontiguousarray(b, np.float32).view(np.uint32) if same_shape else None
        self.identical = bool(same_shape and np.array_equal(bits_a, bits_b))
        self.differing = int((bits_a != bits_b).sum()) if same_shape else int(a.size)
        self.max_abs = float(np.abs(a - b).max()) if same_shape and a.size else float("inf")

    def __repr__(self) -> str:
        if self.identical:
            return f"{self.name} {list(self.shape)}: identical"
        return f"{self.name} {list(self.shape)}: {self.differing} values differ, max |diff| {self.max_abs:.6g}"


def compare_outputs(reference: list[np.ndarray], candidate: list[np.ndarray],
                    names: list[str] | None = None) -> list[OutputDiff]:
    """Per-tensor comparison of two engines' outputs (what a v4/v5 or interpreter/Simulator check reports)."""
    names = names or [f"output{i}" for i in range(len(reference))]
    return [OutputDiff(n, a, b) for n, a, b in zip(names, reference, candidate, strict=True)]
