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
# Small MobileFaceNet-shaped ONNX models (onnx_models.py): name -> (activation, TF "same" stride-2 padding, softmax)
TINY = {
    "tiny_relu": ("relu", False, False),
    "tiny_prelu": ("prelu", True, False),
    "tiny_leaky": ("leaky", False, False),
    "tiny_relu6": ("relu6", True, False),
    "tiny_softmax": ("relu", False, True),
}


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
        lock = self.root / f"{name}.lock"
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
                    self._build(name)
            finally:
                os.close(fd)
                lock.unlink(missing_ok=True)
            return target

    def _build(self, name: str) -> None:
        if name in TINY:
            self._build_tiny(name)
            return
        proc = subprocess.run([sys.executable, str(BUILDER), str(self.root), name], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
        if proc.returncode != 0 or not (self.root / f"{name}.kmodel").exists():
            raise RuntimeError(f"building test model {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def _build_tiny(self, name: str) -> None:
        from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
        from k210tool.preprocess import Preprocess
        from k210tool.train.data.synthetic import identity_images

        sys.path.insert(0, str(Path(__file__).parent))
        from onnx_models import tiny_mobilefacenet

        activation, same_padding, softmax = TINY[name]
        pre = Preprocess(height=32, width=32)
        calib = np.stack([pre.prepare(img) for i in range(4) for img in identity_images(1000 + i, 1)])
        onnx = tiny_mobilefacenet(32, activation, same_padding, softmax)
        kmodel = compile_kmodel(onnx, NncaseSettings(pre, model_format="onnx", model_layout="NCHW"), calib).kmodel
        images = np.stack([pre.prepare(img) for i in range(6) for img in identity_images(2000 + i, 1)])
        np.save(self.root / f"{name}.npy", images)
        tmp = self.root / f".{name}.kmodel.tmp"
        tmp.write_bytes(kmodel)
        os.replace(tmp, self.root / f"{name}.kmodel")

    def kmodel(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def images(self, name: str) -> np.ndarray:
        self.path(name)
        return np.load(self.root / f"{name}.npy")


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledModels:
    # getbasetemp().parent is shared by the xdist workers of one session.
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "kmodel-compiled"
    return CompiledModels(root)
