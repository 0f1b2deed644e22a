"""Helpers of the training tests: a small MobileFaceNet, synthetic identities at 48x48, shared results."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SIZE = 48
# a reduced MobileFaceNet (same layer kinds as the paper's, fewer and narrower blocks) that trains on 2 CPU cores
SMALL_MODEL = [f"model.input_size={SIZE}", "model.width=32", "model.embedding_size=64",
               "model.bottlenecks=[[2, 32, 2, 2], [2, 64, 1, 2], [2, 64, 2, 1], [2, 64, 1, 2]]"]


@dataclass(frozen=True)
class Synthetic:
    faces: Path  # faces/<identity>/*.png, 40 identities x 16 images
    val: Path  # verification pairs of 30 other identities


def shared_dir(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(folder)`` once per test session, even when xdist spreads its users over several workers.

    The folder lives in the session's shared temporary root; a file lock makes the other workers wait for
    (and then reuse) the first one's result instead of training the same model twice.
    """
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".done").write_text("")
    return folder


def kpu_student_of(teacher: object) -> object:
    """The teacher rewritten for the KPU the way `k210tool rewrite` does it (PReLU -> ReLU, symmetric
    stride-2 padding), weights copied layer by layer - until the rewrite command lands."""
    from k210tool.train.models.mobilefacenet import build_mobilefacenet

    size = int(teacher.input_shape[1])  # type: ignore[attr-defined]
    student = build_mobilefacenet(input_size=size, width=32, embedding_size=64, activation="relu",
                                  stride2_padding="symmetric",
                                  bottlenecks=((2, 32, 2, 2), (2, 64, 1, 2), (2, 64, 2, 1), (2, 64, 1, 2)))
    src = [layer for layer in teacher.layers if layer.weights and type(layer).__name__ != "PReLU"]  # type: ignore[attr-defined]
    dst = [layer for layer in student.layers if layer.weights]
    for a, b in zip(src, dst, strict=True):
        b.set_weights(a.get_weights())
    return student
