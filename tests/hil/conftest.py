"""Fixtures of the virtual-board tests: real kmodels compiled once per session, emulators with hardware."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hil_support import ModelCache  # noqa: E402
from xdist_once import session_root  # noqa: E402

from k210tool.emulator.maixpy import Hardware, maix_registry  # noqa: E402
from k210tool.emulator.server import Emulator  # noqa: E402


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(session_root(tmp_path_factory) / "hil-models")


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Callable[..., tuple[Emulator, Hardware]]]:
    """``board(firmware=None, board="maix_dock", **Hardware fields)`` -> a started emulator and its hardware."""
    started: list[Emulator] = []

    def make(firmware: str | None = None, board: str = "maix_dock", **hardware: object) -> tuple[Emulator, Hardware]:
        hw = Hardware(**hardware)  # type: ignore[arg-type]
        emu = Emulator(board, firmware, fs_root=tmp_path / f"fs{len(started)}", modules=maix_registry(hw))
        started.append(emu.start())
        return emu, hw

    yield make
    for emu in started:
        emu.stop()

