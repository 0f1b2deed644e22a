"""Face verification figures: 10-fold accuracy (insightface protocol), TAR at FAR, ROC and AUC.

This is the one implementation: ``k210tool compare``, the training loop's validation callback and the
on-board tests all call :func:`verify`. The ROC, its AUC and TAR@FAR come from scikit-learn (tied scores
form one point of the curve, so no figure depends on the order the pairs are listed in). The 10-fold
accuracy follows insightface's ``eval/verification.py`` (``calculate_roc``): L2-normalised embeddings,
squared L2 distance, contiguous folds (``KFold(shuffle=False)``), the threshold of the best accuracy on
the other nine folds chosen from the grid 0, 0.01, ... 3.99 (the first best), accuracy on the tenth with
"same" when the distance is below it. ``tests/eval/test_verification.py`` checks both against oracles.

A figure that rests on too few pairs is NaN with a warning: TAR at FAR 1e-3 needs at least 1000
impostor pairs (with fewer, one false accept is already more than 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from k210tool.errors import InputError

THRESHOLDS = np.arange(0, 4, 0.01)  # insightface's grid of squared L2 distances


@dataclass
class VerificationResult:
    pairs: int
    genuine: int
    impostor: int
    accuracy: float  # mean 10-fold accuracy, threshold chosen on the other 9 folds (insightface)
    accuracy_std: float
    best_threshold: float  # cosine threshold (same when >=) with the best accuracy over all pairs
    best_accuracy: float
    tar_at_far: dict[str, float]  # {"0.001": TAR, "0.01": TAR}; NaN when there are too few impostor pairs
    auc: float
    fold_thresholds: list[float] = field(default_factory=list)  # as cosines: same when cosine > threshold
    warnings: list[str] = field(default_factory=list)


def l2_normalize(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def pair_scores(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``emb1`` with the same row of ``emb2``."""
    if len(emb1) != len(emb2):
        raise InputError(f"pair embeddings differ in count: {len(emb1)} vs {len(emb2)}")
    return np.sum(l2_normalize(emb1) * l2_normalize(emb2), axis=1)


def pair_distances(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """insightface's distance: squared L2 between the normalised embeddings (0..4)."""
    return np.sum(np.square(l2_normalize(emb1) - l2_normalize(emb2)), axis=1)


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate), one point per distinct score, from strict to lenient."""
    from sklearn.metrics import roc_curve as sk_roc

    fpr, tpr, _ = sk_roc(np.asarray(issame, bool), np.asarray(scores, np.float64), drop_intermediate=False)
    return fpr, tpr


def min_impostors(far: float) -> int:
    """Impostor pairs needed before a false accept rate of ``far`` can be measured at all (FAR 0: one)."""
    return math.ceil(1.0 / far - 1e-9) if far > 0 else 1


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    """True accept rate at the most lenient threshold whose false accept rate is at most ``far``;
    NaN when there are fewer than :func:`min_impostors` impostor pairs or no genuine ones."""
    same = np.asarray(issame, bool)
    if (~same).sum() < min_impostors(far) or same.sum() == 0:
        return float("nan")
    fpr, tpr = roc_curve(scores, same)
    return float(tpr[fpr <= far].max())


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """Cosine threshold t (same when score >= t) with the best accuracy over all pairs, and that accuracy."""
    from sklearn.metrics import roc_curve as sk_roc

    same = np.asarray(issame, bool)
    fpr, tpr, thresholds = sk_roc(same, scores, drop_intermediate=False)
    pos, neg = int(same.sum()), int((~same).sum())
    correct = tpr * pos + (1.0 - fpr) * neg
    k = int(np.argmax(correct))
    t = float(thresholds[k]) if np.isfinite(thresholds[k]) else float(np.max(scores)) + 1e-6
    return t, float(correct[k] / len(same))


def kfold_accuracy(dist: np.ndarray, issame: np.ndarray, nfolds: int = 10) -> tuple[list[float], list[float]]:
    """insightface's 10-fold protocol on squared-L2 distances: (accuracy per fold, distance threshold per fold)."""
    from sklearn.model_selection import KFold

    accs, chosen = [], []
    for train, test in KFold(n_splits=nfolds, shuffle=False).split(dist):
        predicted = dist[train][None, :] < THRESHOLDS[:, None]  # (thresholds, pairs)
        train_acc = np.mean(predicted == issame[train][None, :], axis=1)
        t = THRESHOLDS[int(np.argmax(train_acc))]
        accs.append(float(np.mean((dist[test] < t) == issame[test])))
        chosen.append(float(t))
    return accs, chosen


def verify(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray | list[bool], nfolds: int = 10,
           fars: tuple[float, ...] = (1e-3, 1e-2)) -> VerificationResult:
    """Verification figures of embedding pairs (see the module docstring for the protocol)."""
    from sklearn.metrics import roc_auc_score

    same = np.asarray(issame, bool)
    scores = pair_scores(emb1, emb2)
    n = len(scores)
    if n != len(same):
        raise InputError(f"{n} pairs but {len(same)} same/different labels")
    if n < nfolds or same.all() or (~same).all():
        raise InputError(
            f"verification needs at least {nfolds} pairs with both genuine and impostor pairs "
            f"(got {n}: {int(same.sum())} genuine)"
        )
    accs, dist_thresholds = kfold_accuracy(pair_distances(emb1, emb2), same, nfolds)
    best_t, best_acc = best_threshold(scores, same)
    impostors = int((~same).sum())
    warnings = [f"TAR at FAR {far:g} needs at least {min_impostors(far)} impostor pairs, there are {impostors}: "
                "reported as NaN" for far in fars if impostors < min_impostors(far)]
    return VerificationResult(
        pairs=n,
        genuine=int(same.sum()),
        impostor=impostors,
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        best_threshold=best_t,
        best_accuracy=best_acc,
        tar_at_far={f"{far:g}": tar_at_far(scores, same, far) for far in fars},
        auc=float(roc_auc_score(same, scores)),
        fold_thresholds=[1.0 - t / 2.0 for t in dist_thresholds],
        warnings=warnings,
    )
