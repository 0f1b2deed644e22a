from __future__ import annotations

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.eval.verification import best_threshold, tar_at_far, verify


def _pairs(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = rng.normal(size=(n, 32))
    same = np.arange(n) % 2 == 0
    other = rng.normal(size=(n, 32))
    a = ids + rng.normal(scale=noise, size=ids.shape)
    b = np.where(same[:, None], ids, other) + rng.normal(scale=noise, size=ids.shape)
    return a, b, same


def test_separable_pairs_score_perfectly() -> None:
    a, b, same = _pairs(np.random.default_rng(0), 2400, 0.05)
    r = verify(a, b, same)
    assert r.accuracy == 1.0 and r.best_accuracy == 1.0
    assert r.tar_at_far["0.001"] == 1.0 and r.auc > 0.999 and r.warnings == []


def test_random_embeddings_are_at_chance() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    same = rng.random(2000) < 0.5
    r = verify(a, b, same)
    assert 0.4 < r.accuracy < 0.6
    assert np.isnan(r.tar_at_far["0.001"]) and r.tar_at_far["0.01"] < 0.05  # ~1000 impostors: 1e-3 not measurable


def test_noise_lowers_accuracy_monotonically() -> None:
    rng = np.random.default_rng(2)
    accs = [verify(*_pairs(rng, 600, noise)).accuracy for noise in (0.3, 1.0, 3.0)]
    assert accs[0] > accs[1] > accs[2]


def test_best_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=300)
    same = scores + rng.normal(scale=1.0, size=300) > 0
    t, acc = best_threshold(scores, same)
    brute = max(np.mean((scores >= c) == same) for c in np.concatenate([scores, [scores.max() + 1]]))
    assert acc == pytest.approx(brute)
    assert np.mean((scores >= t) == same) == pytest.approx(acc)


def test_tar_at_far_counts_allowed_false_accepts() -> None:
    imp = np.linspace(0, 1, 1000)  # 1000 impostor scores
    gen = np.array([0.9992, 0.9995, 0.5])
    scores = np.concatenate([imp, gen])
    same = np.concatenate([np.zeros(1000, bool), np.ones(3, bool)])
    # FAR 1e-3 allows one impostor above the threshold: threshold is the 2nd highest impostor (0.998999)
    assert tar_at_far(scores, same, 1e-3) == pytest.approx(2 / 3)
    assert tar_at_far(scores, same, 0.0) == pytest.approx(0.0)


def test_rejects_pairs_without_both_kinds() -> None:
    a = np.ones((20, 4))
    with pytest.raises(InputError):
        verify(a, a, np.ones(20, bool))


# --- oracles: scikit-learn for the ROC figures, insightface's protocol for the 10-fold accuracy ----------
def _insightface_accuracy(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray) -> np.ndarray:
    """insightface eval/verification.py calculate_roc, written out from its description: normalised
    embeddings, squared L2 distance, KFold(10, shuffle=False), best threshold of np.arange(0, 4, 0.01) on the
    nine training folds (first best), accuracy of dist < threshold on the test fold."""
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import normalize

    dist = np.sum(np.square(normalize(emb1) - normalize(emb2)), 1)
    thresholds = np.arange(0, 4, 0.01)
    accuracy = np.zeros(10)
    for fold, (train, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.arange(len(dist)))):
        acc_train = [np.mean(np.less(dist[train], t) == issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(acc_train))]
        accuracy[fold] = np.mean(np.less(dist[test], best) == issame[test])
    return accuracy


@pytest.mark.parametrize(("seed", "n", "noise", "blocks"), [(4, 600, 1.0, False), (5, 1203, 2.0, True),
                                                            (6, 97, 0.7, True), (7, 3000, 3.0, False)])
def test_ten_fold_accuracy_equals_the_insightface_protocol(seed, n, noise, blocks) -> None:
    rng = np.random.default_rng(seed)
    a, b, same = _pairs(rng, n, noise)
    if blocks:  # genuine pairs first, then impostors, as LFW and .bin files list them
        order = np.argsort(~same, kind="stable")
        a, b, same = a[order], b[order], same[order]
    want = _insightface_accuracy(a, b, same)
    r = verify(a, b, same)
    assert r.accuracy == pytest.approx(float(np.mean(want)), abs=1e-12)
    assert r.accuracy_std == pytest.approx(float(np.std(want)), abs=1e-12)


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_roc_auc_and_tar_equal_scikit_learn_with_ties(seed) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    n = 4000
    same = rng.random(n) < 0.3
    scores = np.round(np.where(same, 0.3, 0.0) + rng.normal(scale=0.2, size=n), 1)  # many ties
    emb1 = np.stack([np.cos(np.arccos(np.clip(scores, -1, 1))), np.sin(np.arccos(np.clip(scores, -1, 1)))], 1)
    emb2 = np.tile([1.0, 0.0], (n, 1))
    r = verify(emb1, emb2, same)
    got = np.sum(emb1 * emb2, 1) / np.linalg.norm(emb1, axis=1)
    assert r.auc == pytest.approx(roc_auc_score(same, got), abs=1e-12)
    fpr, tpr, _ = roc_curve(same, got)
    for far in (1e-3, 1e-2):
        assert r.tar_at_far[f"{far:g}"] == pytest.approx(float(tpr[fpr <= far].max()), abs=1e-12)


def test_a_collapsed_model_is_at_chance_whatever_the_pair_order() -> None:
    """One constant embedding for every image: all scores tie. AUC 0.5, not 1.0 or 0.0 by pair order."""
    rng = np.random.default_rng(11)
    emb = np.ones((1200, 8))
    same = np.arange(1200) < 600
    for order in (np.arange(1200), np.arange(1200)[::-1], rng.permutation(1200)):
        r = verify(emb[order], emb[order], same[order])
        assert r.auc == 0.5
        assert r.tar_at_far["0.01"] == 0.0


def test_too_few_impostor_pairs_give_nan_and_a_warning() -> None:
    a, b, same = _pairs(np.random.default_rng(12), 240, 0.5)  # 120 impostor pairs
    r = verify(a, b, same)
    assert np.isnan(r.tar_at_far["0.001"]) and not np.isnan(r.tar_at_far["0.01"])
    assert len(r.warnings) == 1 and "1000 impostor pairs" in r.warnings[0] and "120" in r.warnings[0]
    import json

    assert json.loads(json.dumps(r.tar_at_far))["0.001"] != json.loads(json.dumps(r.tar_at_far))["0.001"]  # NaN
