from __future__ import annotations

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.eval.verification import _best_threshold, tar_at_far, verify


def _pairs(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = rng.normal(size=(n, 32))
    same = np.arange(n) % 2 == 0
    other = rng.normal(size=(n, 32))
    a = ids + rng.normal(scale=noise, size=ids.shape)
    b = np.where(same[:, None], ids, other) + rng.normal(scale=noise, size=ids.shape)
    return a, b, same


def test_separable_pairs_score_perfectly() -> None:
    a, b, same = _pairs(np.random.default_rng(0), 400, 0.05)
    r = verify(a, b, same)
    assert r.accuracy == 1.0 and r.best_accuracy == 1.0
    assert r.tar_at_far["0.001"] == 1.0 and r.auc > 0.999


def test_random_embeddings_are_at_chance() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    same = rng.random(2000) < 0.5
    r = verify(a, b, same)
    assert 0.4 < r.accuracy < 0.6
    assert r.tar_at_far["0.001"] < 0.05


def test_noise_lowers_accuracy_monotonically() -> None:
    rng = np.random.default_rng(2)
    accs = [verify(*_pairs(rng, 600, noise)).accuracy for noise in (0.3, 1.0, 3.0)]
    assert accs[0] > accs[1] > accs[2]


def test_best_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=300)
    same = scores + rng.normal(scale=1.0, size=300) > 0
    t, acc = _best_threshold(scores, same)
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
