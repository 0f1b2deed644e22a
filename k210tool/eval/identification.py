"""Closed-set identification: a gallery of enrolled identities (one centroid each) and probe images.

This is what the board's face-recognition script does: enroll a few images per person, keep the mean of
their L2-normalised embeddings, and name a new face after the nearest centroid (cosine). The split is
computed once from the identity labels and shared by every column, so columns differ only by embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.errors import InputError
from k210tool.eval.verification import l2_normalize


@dataclass(frozen=True)
class GallerySplit:
    gallery: np.ndarray  # image indices enrolled
    probes: np.ndarray  # image indices to identify
    identities: np.ndarray  # identity of every image (as given)
    per_identity: int


@dataclass
class IdentificationResult:
    identities: int
    gallery_images: int
    probes: int
    top1: float  # fraction of probes whose nearest centroid is their own identity
    correct: int


def split_gallery(identities: np.ndarray, per_identity: int | None = None) -> GallerySplit:
    """The first ``per_identity`` images of each identity (default: half, at least one) are the gallery.

    Identities with a single image, and unlabelled images (-1), take no part: they could not be probed.
    """
    ids = np.asarray(identities)
    gallery: list[int] = []
    probes: list[int] = []
    used = 0
    for ident in np.unique(ids[ids >= 0]):
        members = np.flatnonzero(ids == ident)
        if len(members) < 2:
            continue
        k = per_identity if per_identity is not None else max(1, len(members) // 2)
        if k < 1:
            raise InputError("--gallery must be at least 1")
        k = min(k, len(members) - 1)  # keep at least one probe
        gallery += members[:k].tolist()
        probes += members[k:].tolist()
        used = max(used, k)
    if len(set(ids[gallery].tolist())) < 2:
        raise InputError("identification needs at least 2 identities with 2 or more images each")
    return GallerySplit(np.array(gallery, np.int64), np.array(probes, np.int64), ids, used)


def identify(embeddings: np.ndarray, split: GallerySplit) -> IdentificationResult:
    """Top-1 accuracy of the probes against the gallery centroids."""
    emb = l2_normalize(embeddings)
    gallery_ids = split.identities[split.gallery]
    names = np.unique(gallery_ids)
    centroids = l2_normalize(np.stack([emb[split.gallery[gallery_ids == n]].mean(axis=0) for n in names]))
    scores = emb[split.probes] @ centroids.T
    predicted = names[np.argmax(scores, axis=1)]
    correct = int(np.sum(predicted == split.identities[split.probes]))
    return IdentificationResult(len(names), len(split.gallery), len(split.probes),
                                correct / max(1, len(split.probes)), correct)
