"""Helpers of the training tests: a small MobileFaceNet, synthetic identities at 48x48, shared results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from xdist_once import build_once, session_root

SIZE = 48
# a reduced MobileFaceNet (same layer kinds as the paper's, fewer and narrower blocks) that trains on 2 CPU cores
SMALL_MODEL = [f"model.input_size={SIZE}", "model.width=32", "model.embedding_size=64",
               "model.bottlenecks=[[2, 32, 2, 2], [2, 64, 1, 2], [2, 64, 2, 1], [2, 64, 1, 2]]"]


@dataclass(frozen=True)
class Synthetic:
    faces: Path  # faces/<identity>/*.png, 40 identities x 16 images
    val: Path  # verification pairs of 30 other identities
    val_large: Path  # 1000 pairs of 60 other identities: differences of a few points stand out of the noise


def shared_dir(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(folder)`` once per test session, shared by the xdist workers (see tests/xdist_once.py)."""
    return build_once(session_root(factory), name, make)


def kpu_student_of(teacher: object) -> object:
    """The teacher rewritten for the KPU by k210tool's rewrite (PReLU -> ReLU, symmetric stride-2 padding)."""
    from k210tool.model.graph import annotate_shapes, graph_from_model
    from k210tool.model.rewrite import RewriteOptions, rewrite

    graph = graph_from_model(teacher)
    annotate_shapes(graph, teacher)
    return rewrite(graph, teacher, None, RewriteOptions(prelu="relu", approximate=("symmetric-stride2",))).model
