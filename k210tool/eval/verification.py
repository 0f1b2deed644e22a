"""Face verification figures: 10-fold accuracy (insightface protocol), TAR at FAR, ROC.

This is the one implementation: ``k210tool compare``, the training loop's validation callback and the
on-board tests all call :func:`verify`. Scores are cosine similarities of L2-normalised embeddings
(monotone in insightface's squared L2 distance, ``d = 2 - 2 cos``, so accuracies are identical).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from k210tool.errors import InputError


@dataclass
class VerificationResult:
    pairs: int
    genuine: int
    impostor: int
    accuracy: float  # mean 10-fold accuracy, threshold chosen on the other 9 folds
    accuracy_std: float
    best_threshold: float  # cosine threshold with the best accuracy over all pairs
    best_accuracy: float
    tar_at_far: dict[str, float]  # {"1e-3": TAR, "1e-2": TAR}
    auc: float
    fold_thresholds: list[float] = field(default_factory=list)


def l2_normalize(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def pair_scores(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``emb1`` with the same row of ``emb2``."""
    if len(emb1) != len(emb2):
        raise InputError(f"pair embeddings differ in count: {len(emb1)} vs {len(emb2)}")
    return np.sum(l2_normalize(emb1) * l2_normalize(emb2), axis=1)


def _best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """Threshold t (predict same when score >= t) maximising accuracy, and that accuracy."""
    order = np.argsort(-scores, kind="stable")
    s, same = scores[order], issame[order]
    # accepting the first k pairs: correct = genuine among first k + impostors after k
    tp = np.concatenate([[0], np.cumsum(same)])
    fp = np.concatenate([[0], np.cumsum(~same)])
    total_neg = fp[-1]
    correct = tp + (total_neg - fp)
    # only cut between distinct scores
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s[:-1] != s[1:]
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        t = float(s[0]) + 1e-6
    elif k == len(s):
        t = float(s[-1]) - 1e-6
    else:
        t = float((s[k - 1] + s[k]) / 2)
    return t, float(correct[k] / len(s))


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    """True accept rate at the threshold whose false accept rate is at most ``far``."""
    imp = np.sort(scores[~issame])[::-1]
    gen = scores[issame]
    if len(imp) == 0 or len(gen) == 0:
        return float("nan")
    allowed = int(np.floor(far * len(imp)))  # number of impostors we may accept
    threshold = imp[allowed] if allowed < len(imp) else -np.inf  # accept scores strictly above it
    return float(np.mean(gen > threshold))


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over all thresholds, from strict to lenient."""
    order = np.argsort(-scores, kind="stable")
    same = issame[order]
    tpr = np.concatenate([[0.0], np.cumsum(same) / max(1, same.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(~same) / max(1, (~same).sum())])
    return fpr, tpr


def verify(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray | list[bool], nfolds: int = 10,
           fars: tuple[float, ...] = (1e-3, 1e-2)) -> VerificationResult:
    """Verification accuracy of embedding pairs, insightface style (contiguous folds, no shuffle)."""
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
    folds = np.array_split(np.arange(n), nfolds)
    accs, thresholds = [], []
    for i, test in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        t, _ = _best_threshold(scores[train], same[train])
        pred = scores[test] >= t
        accs.append(float(np.mean(pred == same[test])))
        thresholds.append(t)
    best_t, best_acc = _best_threshold(scores, same)
    fpr, tpr = roc_curve(scores, same)
    return VerificationResult(
        pairs=n,
        genuine=int(same.sum()),
        impostor=int((~same).sum()),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        best_threshold=best_t,
        best_accuracy=best_acc,
        tar_at_far={f"{far:g}": tar_at_far(scores, same, far) for far in fars},
        auc=float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr)),
        fold_thresholds=thresholds,
    )
