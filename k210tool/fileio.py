"""Atomic output files: write to a temporary file beside the target, fsync, then rename.

A crash, Ctrl-C or an exception never leaves a half-written kmodel, kfpkg or report behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from k210tool.errors import InputError


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early (before slow work) when ``path`` cannot be written: missing directory, a directory."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist", "create it or choose another -o path")
    if p.is_dir():
        raise InputError(f"output path {p} is a directory", "give a file name")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output directory {parent} is not writable")
    return p


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically."""
    target = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy scalars/arrays and paths -> plain JSON types."""
    return json.loads(json.dumps(obj, default=_json_default))
