"""Fixtures of the kmodel tests: the sample files and models compiled here by nncase 1.9.

Compiled models are cached in a folder shared by all xdist workers of the session (one compile per model
per session, see tests/xdist_once.py), so the tests stay fast and xdist-safe.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from xdist_once import build_once, session_root

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
# Backbone tails nncase leaves on the CPU (onnx_models.tiny_pools): name -> (variant, input size)
POOLS = {"pool_gap7": ("gap7", 28), "pool_gmax4": ("gmax4", 16)}


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
        return self.folder(name) / f"{name}.kmodel"

    def folder(self, name: str) -> Path:
        return build_once(self.root, name, lambda folder: self._build(name, folder))

    def _build(self, name: str, folder: Path) -> None:
        if name in TINY or name in POOLS:
            self._build_tiny(name, folder)
            return
        proc = subprocess.run([sys.executable, str(BUILDER), str(folder), name], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
        if proc.returncode != 0 or not (folder / f"{name}.kmodel").exists():
            raise RuntimeError(f"building test model {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def _build_tiny(self, name: str, folder: Path) -> None:
        from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
        from k210tool.preprocess import Preprocess
        from k210tool.train.data.synthetic import identity_images

        sys.path.insert(0, str(Path(__file__).parent))
        from onnx_models import tiny_mobilefacenet, tiny_pools

        if name in POOLS:
            variant, size = POOLS[name]
            onnx = tiny_pools(size, variant)
        else:
            size = 32
            onnx = tiny_mobilefacenet(size, *TINY[name])
        pre = Preprocess(height=size, width=size)
        calib = np.stack([pre.prepare(img) for i in range(4) for img in identity_images(1000 + i, 1)])
        kmodel = compile_kmodel(onnx, NncaseSettings(pre, model_format="onnx", model_layout="NCHW"), calib).kmodel
        images = np.stack([pre.prepare(img) for i in range(6) for img in identity_images(2000 + i, 1)])
        np.save(folder / f"{name}.npy", images)
        (folder / f"{name}.kmodel").write_bytes(kmodel)

    def kmodel(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def images(self, name: str) -> np.ndarray:
        return np.load(self.folder(name) / f"{name}.npy")


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledModels:
    return CompiledModels(session_root(tmp_path_factory) / "kmodel-compiled")
