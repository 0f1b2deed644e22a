"""Build an expensive test artefact once per test session, even when xdist runs several workers.

The artefact lives in the session's shared temporary root; an ``flock`` makes the other workers wait for
(and then reuse) the first one's result. The kernel drops the lock when a worker dies, so a crash never
leaves a stale lock, and a ``.done`` marker makes a half-built folder get rebuilt.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def session_root(factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(root: Path, name: str, make: Callable[[Path], None]) -> Path:
    """``make(folder)`` once for ``root/shared-<name>``; returns the folder."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".done").write_text("")
    return folder
