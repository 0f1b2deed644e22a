"""How closely one model's outputs follow another's on the same images (kmodel vs float, rewritten vs original).

Per output: cosine similarity per image (mean, min, 1st percentile), relative L2 error, mean and maximum
absolute error, and, when the output is a classifier (rows of probabilities), how often both pick the same
class. The per-image cosines are returned too, for the histogram of the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.errors import InputError


@dataclass
class Fidelity:
    output: str  # which output ("output 0", or its name)
    reference: str  # column taken as the truth, e.g. "float"
    test: str  # column measured against it, e.g. "kmodel"
    images: int
    cosine_mean: float
    cosine_min: float
    cosine_p1: float  # 1st percentile of the per-image cosines
    rel_l2: float  # ||test - reference|| / ||reference|| over all images and elements
    mae: float
    max_abs: float
    top1_agreement: float | None = None  # classifier outputs only

    @property
    def label(self) -> str:
        return f"{self.test} vs {self.reference}"


def per_image_cosine(reference: np.ndarray, test: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Cosine of each image's flattened output. Two all-zero outputs agree (1); one all-zero output does not (0)."""
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    t = np.asarray(test, np.float64).reshape(len(test), -1)
    nr, nt = np.linalg.norm(r, axis=1), np.linalg.norm(t, axis=1)
    dot = np.sum(r * t, axis=1)
    cos = dot / np.maximum(nr * nt, eps)
    both_zero = (nr < eps) & (nt < eps)
    return np.clip(np.where(both_zero, 1.0, cos), -1.0, 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two outputs, flattened: :func:`per_image_cosine` of a batch of one."""
    return float(per_image_cosine(np.ravel(a)[None], np.ravel(b)[None])[0])


def looks_like_classifier(x: np.ndarray, tol: float = 1e-3) -> bool:
    """Rows of non-negative numbers summing to 1 over more than one class: softmax probabilities."""
    a = np.asarray(x, np.float64)
    if a.ndim < 2 or len(a) == 0:
        return False
    a = a.reshape(len(a), -1)
    return a.shape[1] > 1 and bool(np.all(a >= -tol)) and bool(np.allclose(a.sum(axis=1), 1.0, atol=tol * a.shape[1]))


def compare_outputs(reference: np.ndarray, test: np.ndarray, *, output: str = "output 0",
                    reference_name: str = "float", test_name: str = "kmodel",
                    classifier: bool | None = None) -> tuple[Fidelity, np.ndarray]:
    """Fidelity of ``test`` against ``reference`` (same images, batch first), and the per-image cosines.

    ``classifier=None`` decides from the reference (softmax-like rows get a top-1 agreement).
    """
    r = np.asarray(reference, np.float64)
    t = np.asarray(test, np.float64)
    if len(r) != len(t):
        raise InputError(f"{output}: {len(r)} reference outputs but {len(t)} to compare")
    if len(r) == 0:
        raise InputError(f"{output}: no images to compare")
    r, t = r.reshape(len(r), -1), t.reshape(len(t), -1)
    if r.shape != t.shape:
        raise InputError(f"{output}: {test_name} gives {t.shape[1]} values per image, {reference_name} "
                         f"{r.shape[1]}", "compare the kmodel with the model it was converted from")
    cos = per_image_cosine(r, t)
    diff = np.abs(t - r)
    ref_norm = float(np.linalg.norm(r))
    is_classifier = looks_like_classifier(r) if classifier is None else classifier
    top1 = float(np.mean(np.argmax(r, axis=1) == np.argmax(t, axis=1))) if is_classifier else None
    fid = Fidelity(
        output=output,
        reference=reference_name,
        test=test_name,
        images=len(r),
        cosine_mean=float(np.mean(cos)),
        cosine_min=float(np.min(cos)),
        cosine_p1=float(np.percentile(cos, 1)),
        rel_l2=float(np.linalg.norm(t - r) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(t - r)),
        mae=float(np.mean(diff)),
        max_abs=float(np.max(diff)),
        top1_agreement=top1,
    )
    return fid, cos
