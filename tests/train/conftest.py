"""Fixtures of the training tests (helpers in support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import SIZE, Synthetic, shared_dir


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    def make(root: Path) -> None:
        from k210tool.train.data.synthetic import write_identity_folders, write_verification_bin

        write_identity_folders(root / "faces", 40, 16, size=SIZE)
        # identities with seeds far from the training ones: never trained on
        write_verification_bin(root / "val.bin", 1_000_000, 30, 200, size=SIZE)
        write_verification_bin(root / "val1000.bin", 1_000_000, 60, 1000, size=SIZE)

    root = shared_dir(tmp_path_factory, "synthetic", make)
    return Synthetic(root / "faces", root / "val.bin", root / "val1000.bin")
