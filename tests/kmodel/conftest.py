"""Fixtures of the kmodel tests: the sample files and models compiled here by nncase 1.9.

Compiled models are cached in a folder shared by all xdist workers of the session (one compile per model
per session, guarded by a lock file), so the tests stay fast and xdist-safe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
BUILDER = Path(__file__).parent / "build_models.py"


@pytest.fixture(scope="session")
def samples() -> dict[int, bytes]:
    return {3: (DATA / "yolo_v3.kmodel").read_bytes(), 4: (DATA / "slim320_v4.kmodel").read_bytes(),
            5: (DATA / "yolox_nano_224_v5.kmodel").read_bytes()}


class CompiledModels:
    """Compile-once access to the test models of ``build_models.py``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        target = self.root / f"{name}.kmodel"
        if target.exists():
            return target
        group = _group_of(name)
        lock = self.root / f"{group[0]}.lock"
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if target.exists():
                    return target
                if time.time() - lock.stat().st_mtime > 900:  # a crashed worker's stale lock
                    lock.unlink(missing_ok=True)
                time.sleep(0.5)
                continue
            try:
                if not target.exists():
                    self._build(group)
            finally:
                os.close(fd)
                lock.unlink(missing_ok=True)
            return target

    def _build(self, names: list[str]) -> None:
        proc = subprocess.run([sys.executable, str(BUILDER), str(self.root), *names], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
        if proc.returncode != 0 or not all((self.root / f"{n}.kmodel").exists() for n in names):
            raise RuntimeError(f"building test models {names} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def kmodel(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def images(self, name: str) -> np.ndarray:
        self.path(name)
        return np.load(self.root / f"{name}.npy")


def _group_of(name: str) -> list[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kmodel_build_models", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.group_of(name)


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledModels:
    # getbasetemp().parent is shared by the xdist workers of one session.
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kmodel-compiled"
    return CompiledModels(root)
