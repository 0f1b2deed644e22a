"""Turn decoded op arguments into small, JSON-friendly summaries (what ``inspect`` shows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from k210tool.compile.kmodel.model import KpuConv, MemoryRange, Op

_MAX_LIST = 16


def describe_value(value: Any, version: int) -> Any:
    if isinstance(value, MemoryRange):
        return value.describe(version)
    if isinstance(value, np.ndarray):
        return {"array": str(value.dtype), "length": int(value.size)}
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    if isinstance(value, dict):
        return {k: describe_value(v, version) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_LIST:
            return {"items": len(value)}
        return [describe_value(v, version) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def describe_op(op: Op | KpuConv, version: int) -> dict[str, Any]:
    if isinstance(op, KpuConv):
        out: dict[str, Any] = dict(op.layer.summary())
        out["batches"] = op.batches
        out["weights"] = int(op.weights.size)
        if op.main_mem_output is not None and op.main_mem_output.size:
            out["main_mem_output"] = op.main_mem_output.describe(version)
        return out
    return {k: describe_value(v, version) for k, v in op.args.items()}
