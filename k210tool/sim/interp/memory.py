"""Byte memory pools for N images at once, and typed strided views into them.

Each pool is a ``(N, size)`` uint8 array (one row per image); constant pools (``.rdata``) are ``(1, size)``
and are viewed with a zero batch stride. A view is a NumPy array over the pool's bytes, so ops read and
write the same memory the kmodel's addresses name, including aliased buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from k210tool.compile.kmodel.model import V5_DATATYPES

DTYPES = {name: np.dtype(name) for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                             "uint64", "float16", "float32", "float64")}


class MemoryError_(Exception):
    """An address range outside its pool (the model and its memory plan disagree)."""


def v5_dtype(datatype: int) -> np.dtype:
    name = V5_DATATYPES.get(datatype, "")
    if name not in DTYPES:
        raise MemoryError_(f"datatype {name or datatype} is not supported by the interpreter")
    return DTYPES[name]


def view(pool: np.ndarray, start: int, shape: Sequence[int], strides: Sequence[int] | None,
         dtype: np.dtype) -> np.ndarray:
    """``(N, *shape)`` view of ``dtype`` elements at byte ``start``; ``strides`` in elements (None: dense)."""
    shape = tuple(int(d) for d in shape)
    item = dtype.itemsize
    if strides is None:
        strides = _dense(shape)
    estrides = tuple(int(s) * item for s in strides)
    if any(d <= 0 for d in shape):
        return np.empty((pool.shape[0],) + shape, dtype)
    extent = sum((d - 1) * s for d, s in zip(shape, estrides, strict=True)) + item
    if start < 0 or start + extent > pool.shape[1] or any(s < 0 for s in estrides):
        raise MemoryError_(f"buffer {start}+{extent} lies outside its {pool.shape[1]}-byte pool")
    batch_stride = pool.strides[0] if pool.shape[0] > 1 else 0
    return np.ndarray((pool.shape[0],) + shape, dtype, buffer=pool, offset=start,
                      strides=(batch_stride,) + estrides)


def _dense(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))
