"""Declarative field layouts shared by the v3/v4 codecs: read and write a list of named fields.

A layout is a tuple of ``(name, kind)`` or ``(name, kind, count)`` where ``count`` is a function of the
fields read so far (array lengths stored elsewhere in the body). Kinds mirror the C structs of the
runtimes: ``range`` is v4's 16-byte ``memory_range``, ``shape`` four int32, ``padding`` {before, after}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from k210tool.compile.kmodel.binary import Reader, Writer
from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.model import MemoryRange

Count = Callable[[dict[str, Any]], int]
Layout = tuple[tuple[Any, ...], ...]

_ARRAYS = {"f32[]": "<f4", "i32[]": "<i4", "u8[]": "u1", "range[]": None}
_SCALARS = {"u32": "I", "i32": "i", "f32": "f"}


def _read_one(r: Reader, name: str, kind: str) -> Any:
    if kind in _SCALARS:
        return r.unpack(_SCALARS[kind], name)[0]
    if kind == "range":
        t, dt, start, size = r.unpack("4I", name)
        return MemoryRange(t, dt, start, size)
    if kind == "shape":
        return tuple(r.unpack("4i", name))
    if kind == "padding":
        return tuple(r.unpack("2i", name))
    if kind == "paddings":
        v = r.unpack("8i", name)
        return tuple((v[2 * i], v[2 * i + 1]) for i in range(4))
    if kind == "vrange":
        return tuple(r.unpack("2f", name))
    if kind == "quant":
        zp, scale = r.unpack("if", name)
        return {"zero_point": zp, "scale": scale}
    if kind == "scalar":
        dt = r.u32(name)
        return {"datatype": dt, "storage": r.bytes(4, name)}
    raise AssertionError(kind)


def _write_one(w: Writer, kind: str, value: Any) -> None:
    if kind in _SCALARS:
        w.pack(_SCALARS[kind], value)
    elif kind == "range":
        w.pack("4I", value.location, value.datatype, value.start, value.size)
    elif kind in ("shape",):
        w.pack("4i", *value)
    elif kind == "padding":
        w.pack("2i", *value)
    elif kind == "paddings":
        w.pack("8i", *[x for p in value for x in p])
    elif kind == "vrange":
        w.pack("2f", *value)
    elif kind == "quant":
        w.pack("if", value["zero_point"], value["scale"])
    elif kind == "scalar":
        w.u32(value["datatype"])
        w.raw(bytes(value["storage"]))
    else:
        raise AssertionError(kind)


def read_fields(r: Reader, layout: Layout) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in layout:
        name, kind = spec[0], spec[1]
        if kind == "rest":
            out[name] = r.bytes(r.remaining(), name)
        elif kind in _ARRAYS:
            count = _count(spec[2], out, name)
            if kind == "range[]":
                if count * 16 > r.remaining():
                    raise KmodelError(f"{r.what}: {name} count {count} overruns the body")
                out[name] = [_read_one(r, name, "range") for _ in range(count)]
            else:
                out[name] = r.array(_ARRAYS[kind], count, name)
        else:
            out[name] = _read_one(r, name, kind)
    return out


def write_fields(w: Writer, layout: Layout, values: dict[str, Any]) -> None:
    for spec in layout:
        name, kind = spec[0], spec[1]
        value = values[name]
        if kind == "rest":
            w.raw(bytes(value))
        elif kind == "range[]":
            for item in value:
                _write_one(w, "range", item)
        elif kind in _ARRAYS:
            w.raw(np.asarray(value, dtype=_ARRAYS[kind]))
        else:
            _write_one(w, kind, value)


def _count(fn: Count, fields: dict[str, Any], name: str) -> int:
    try:
        n = int(fn(fields))
    except (ZeroDivisionError, IndexError, KeyError, TypeError) as exc:
        raise KmodelError(f"cannot size {name}: {type(exc).__name__} in its dimensions") from None
    if n < 0:
        raise KmodelError(f"negative length {n} for {name}")
    return n
