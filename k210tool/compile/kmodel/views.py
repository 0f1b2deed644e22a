"""Strided views for the v5 -> v4 transcoder: scratch memory, and strided writes that become a v4 concat.

v4 ops read and write dense buffers. nncase 1.9 lets ops read strided views (a slice of a bigger map)
and write them: a concatenation is done in place, each producer writing its part of the result as a
strided view of it (the 180-degree turn of the input, ``concat`` of two column ranges, writes rows of
W-1 and of 1 pixels). The transcoder gathers a strided input into scratch memory with a strided_slice
(:mod:`~k210tool.compile.kmodel.transcode`), and sends a strided write to scratch too, as one *piece*
of a pending concatenation; once the pieces tile the whole map along one axis, one v4 ``concat`` writes
the map. A map read while pieces of it are pending, or pieces that never complete a map, are errors.

Scratch memory is an arena after v5's own pools, reused once nothing in it is pending.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.compile.kmodel.errors import TranscodeError
from k210tool.compile.kmodel.model import V4_MAIN, MemoryRange, Op


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def is_dense(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether the elements are one contiguous run (dimensions of size 1 may have any stride)."""
    expected = 1
    for d, s in zip(reversed(shape), reversed(strides), strict=True):
        if d == 1:
            continue
        if s != expected:
            return False
        expected *= d
    return True


def parent_shape(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, ...] | None:
    """The dense shape whose leading corner ``shape`` with ``strides`` is (so a strided_slice reads it).

    nncase gives dimensions of size 1 any stride: they either say how big the map around the view is
    (the (0, 0) pixel of each channel of a 4x4 map: shape (1, C, 1, 1), strides (16C, 16, 4, 1)) or mean
    nothing (shape (1, 1, 1, 64), strides (1, 1, 64, 1)); both readings are tried, the smaller one wins."""
    found = [p for dims in (range(len(shape)), [i for i, d in enumerate(shape) if d != 1])
             if (p := _parent_along(shape, strides, list(dims))) is not None]
    return min(found, key=lambda p: int(np.prod(p, dtype=np.int64))) if found else None


def _parent_along(shape: tuple[int, ...], strides: tuple[int, ...], dims: list[int]) -> tuple[int, ...] | None:
    """The parent from the strides of ``dims`` only (the other dimensions have size 1 and stay 1)."""
    parent = list(shape)
    if not dims:
        return tuple(parent)
    if shape[dims[-1]] != 1 and strides[dims[-1]] != 1:
        return None
    inner = 1  # the parent's stride of dimension b (the innermost one's is 1)
    for a, b in zip(reversed(dims[:-1]), reversed(dims[1:]), strict=True):
        if strides[a] <= 0 or strides[a] % inner or strides[a] // inner < shape[b]:
            return None
        parent[b] = strides[a] // inner
        inner = strides[a]
    return tuple(parent)


@dataclass
class Piece:
    """A strided write sent to scratch: where its part of the map lies and how it will be copied back."""

    target: MemoryRange  # the view's first byte in v4 memory (size: its extent)
    scratch: MemoryRange
    parent: tuple[int, ...]  # the dense map it is part of (4-D)
    axis: int  # the axis along which it is a part
    dims: int  # its extent along that axis
    step: int  # bytes from one index to the next along the axis
    where: str


class Views:
    """Scratch memory and pending concatenations of one transcode."""

    def __init__(self, arena_start: int) -> None:
        self.arena_start = align(arena_start, 8)
        self.used = 0
        self.peak = 0
        self.pending: list[Piece] = []

    @property
    def end(self) -> int:
        """The end of main memory including the arena."""
        return align(self.arena_start + self.peak, 8)

    def scratch(self, datatype: int, size: int) -> MemoryRange:
        rng = MemoryRange(V4_MAIN, datatype, self.arena_start + self.used, size)
        self.used = align(self.used + size, 8)
        self.peak = max(self.peak, self.used)
        return rng

    def release(self) -> None:
        """After an op: its gathered inputs are consumed; the arena is free again when no piece waits."""
        if not self.pending:
            self.used = 0

    def write(self, target: MemoryRange, shape: tuple[int, ...], strides: tuple[int, ...], item: int,
              where: str) -> MemoryRange:
        """Scratch for an op that writes the strided view ``shape``/``strides`` (elements) at ``target``."""
        shape4 = (1,) * (4 - len(shape)) + tuple(shape)
        strides4 = (0,) * (4 - len(strides)) + tuple(strides)
        parent = parent_shape(shape4, strides4) if len(shape) <= 4 else None
        axes = [i for i in range(4) if parent is not None and shape4[i] != parent[i]]
        if parent is None or len(axes) != 1:
            raise TranscodeError(f"{where}: it writes a strided view {list(strides)} of shape {list(shape)} that is "
                                 "not part of a concatenation, which v4 ops cannot do",
                                 "run `k210tool rewrite` on the model or replace this layer with KPU-friendly ops")
        axis = axes[0]
        step = int(np.prod(parent[axis + 1:])) * item
        size = int(np.prod(shape4)) * item
        scratch = self.scratch(target.datatype, size)
        self.pending.append(Piece(MemoryRange(target.location, target.datatype, target.start, size), scratch,
                                  parent, axis, shape4[axis], step, where))
        return scratch

    def check_read(self, rng: MemoryRange, where: str) -> None:
        """Refuse to read memory a pending concatenation has not written yet."""
        for p in self.pending:
            span = _span(p)
            if p.target.location == rng.location and rng.start < span[1] and span[0] < rng.start + max(rng.size, 1):
                raise TranscodeError(f"{where}: it reads a map whose parts written by {p.where} were not all "
                                     "written (kmodel v4 cannot write strided views)",
                                     "run `k210tool rewrite` on the model or replace this layer with KPU-friendly ops")

    def complete(self) -> list[Op]:
        """v4 concat ops for every map whose pieces now tile it along one axis (those pieces leave the list)."""
        ops = []
        changed = True
        while changed:
            changed = False
            for run in _runs(self.pending):
                first = run[0]
                parent, axis = first.parent, first.axis
                out = MemoryRange(first.target.location, first.target.datatype, first.target.start,
                                  int(np.prod(parent)) * _elem(first))
                ops.append(Op("concat", {"output": out, "inner_size": first.step,
                                         "outer_size": int(np.prod(parent[:axis])), "inputs_count": len(run),
                                         "inputs": [p.scratch for p in run], "dims": [p.dims for p in run]}))
                self.pending = [p for p in self.pending if all(p is not q for q in run)]
                changed = True
                break
        return ops

    def leftover(self) -> None:
        if self.pending:
            p = self.pending[0]
            raise TranscodeError(f"{p.where}: it writes a strided view that no other op completes into a whole "
                                 "map (kmodel v4 cannot write strided views)",
                                 "run `k210tool rewrite` on the model or replace this layer with KPU-friendly ops")


def _elem(p: Piece) -> int:
    """Bytes per element of a piece."""
    inner = int(np.prod(p.parent[p.axis + 1:]))
    return p.step // inner if inner else 1


def _span(p: Piece) -> tuple[int, int]:
    """Bytes of the parent map a piece writes into (from its first byte to its last, conservatively)."""
    outer = int(np.prod(p.parent[: p.axis]))
    row = p.parent[p.axis] * p.step
    return p.target.start, p.target.start + (outer - 1) * row + p.dims * p.step


def _runs(pending: list[Piece]) -> list[list[Piece]]:
    """Chains of pieces that are consecutive along their axis and together cover the whole map."""
    found = []
    for first in pending:
        chain = [first]
        covered, at = first.dims, first.target.start + first.dims * first.step
        while covered < first.parent[first.axis]:
            nxt = next((p for p in pending if p.target.location == first.target.location and p.target.start == at
                        and p.parent == first.parent and p.axis == first.axis and p.step == first.step), None)
            if nxt is None:
                break
            chain.append(nxt)
            covered += nxt.dims
            at += nxt.dims * nxt.step
        if covered == first.parent[first.axis]:
            found.append(chain)
    return found
