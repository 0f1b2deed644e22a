"""pytest fixtures for tests that need a virtual board (import them into a ``conftest.py``)::

    from k210tool.emulator.pytest_fixtures import kmodel_bytes, make_emulator  # noqa: F401

``make_emulator(board="maix_dock", **Emulator keywords)`` starts an emulator with its own pty,
filesystem (under the test's ``tmp_path``) and shim dir, and stops it after the test.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k210tool.emulator.server import Emulator


@pytest.fixture
def make_emulator(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(board: str = "maix_dock", **kwargs: object) -> Emulator:
        emu = Emulator(board, fs_root=tmp_path / f"board-fs-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(emu.start())
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def kmodel_bytes() -> Callable[..., bytes]:
    """``make(version=4, size=20000)``: a kmodel-shaped file (LDMK header, or a leading u32 3 for v3)."""

    def make(version: int = 4, size: int = 20_000) -> bytes:
        head = struct.pack("<I", 3) if version == 3 else b"LDMK" + struct.pack("<I", version)
        return head + os.urandom(size - len(head))

    return make


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``condition`` (the board works on its own threads); its last value after ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)
    return condition()
