"""Fidelity metrics, pair generation, LFW pairs.txt parsing and identification, on constructed numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.eval.fidelity import compare_outputs, looks_like_classifier, per_image_cosine
from k210tool.eval.identification import identify, split_gallery
from k210tool.eval.pairs import PairOptions, generate_pairs, lfw_image_path, parse_lfw_pairs


# -- fidelity ----------------------------------------------------------------------------------------
def test_fidelity_of_a_known_perturbation() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 16))
    test = ref * 1.1  # same direction, 10 % longer
    test[7] = -ref[7]  # one image flipped
    fid, cos = compare_outputs(ref, test)
    assert cos[7] == pytest.approx(-1.0) and np.allclose(np.delete(cos, 7), 1.0)
    assert fid.cosine_min == pytest.approx(-1.0)
    assert fid.cosine_mean == pytest.approx((49 - 1) / 50)
    assert fid.max_abs == pytest.approx(np.max(np.abs(test - ref)))
    assert fid.mae == pytest.approx(np.mean(np.abs(test - ref)))
    assert fid.rel_l2 == pytest.approx(np.linalg.norm(test - ref) / np.linalg.norm(ref))
    assert fid.top1_agreement is None  # embeddings, not probabilities
    assert fid.label == "kmodel vs float" and fid.images == 50


def test_first_percentile_tracks_the_worst_images() -> None:
    ref = np.tile([1.0, 0.0], (200, 1))
    angles = np.linspace(0, 0.5, 200)  # cosines from 1 down to cos(0.5)
    test = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    fid, _ = compare_outputs(ref, test)
    assert fid.cosine_min == pytest.approx(np.cos(0.5))
    assert np.cos(0.5) < fid.cosine_p1 < np.cos(0.48)


def test_zero_outputs_have_defined_cosines() -> None:
    z = np.zeros((2, 4))
    assert per_image_cosine(z, z).tolist() == [1.0, 1.0]
    assert per_image_cosine(z, np.ones((2, 4))).tolist() == [0.0, 0.0]


def test_classifier_outputs_get_top1_agreement() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert looks_like_classifier(probs) and not looks_like_classifier(logits)
    other = probs.copy()
    other[:10] = other[:10, ::-1]  # reversed class order for 10 images
    changed = np.sum(np.argmax(probs[:10], axis=1) != np.argmax(other[:10], axis=1))
    fid, _ = compare_outputs(probs, other)
    assert fid.top1_agreement == pytest.approx(1 - changed / 40)


def test_fidelity_refuses_mismatched_sizes() -> None:
    with pytest.raises(InputError, match="values per image"):
        compare_outputs(np.zeros((3, 8)), np.zeros((3, 9)))
    with pytest.raises(InputError, match="no images"):
        compare_outputs(np.zeros((0, 8)), np.zeros((0, 8)))


# -- generated pairs ---------------------------------------------------------------------------------
def _ids(per_identity: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, i) for i, n in enumerate(per_identity)])


def test_balanced_pairs_are_labelled_right_and_alternate() -> None:
    ids = _ids([4, 5, 3, 1, 6])
    pairs = generate_pairs(ids, PairOptions(repeat=3, seed=1))
    same = ids[pairs.left] == ids[pairs.right]
    assert np.array_equal(same, pairs.issame)
    assert pairs.genuine == len(pairs) - pairs.genuine  # balanced
    assert pairs.genuine == 3 + 3 + 3 + 0 + 3  # repeat per identity with 2+ images
    assert not np.any(pairs.left == pairs.right)
    assert list(pairs.issame[:6]) == [True, False] * 3
    for fold in np.array_split(np.arange(len(pairs)), 10):
        assert pairs.issame[fold].any() and (~pairs.issame[fold]).any()


def test_balanced_pairs_never_repeat_a_genuine_pair_when_there_are_enough() -> None:
    ids = _ids([3, 3])  # 3 genuine combinations each
    pairs = generate_pairs(ids, PairOptions(repeat=10))
    genuine = {tuple(sorted((int(a), int(b)))) for a, b in zip(pairs.left[pairs.issame], pairs.right[pairs.issame], strict=True)}
    assert pairs.genuine == 6 == len(genuine)


def test_persons_pairs_take_every_genuine_pair_of_the_chosen_persons() -> None:
    ids = _ids([5, 5, 5, 5, 2])
    pairs = generate_pairs(ids, PairOptions(persons=3, per_person=4, seed=2))
    assert pairs.genuine == 3 * 6  # C(4, 2) per person
    assert len(pairs) == 2 * pairs.genuine
    used = set(pairs.left.tolist()) | set(pairs.right.tolist())
    assert len({int(ids[i]) for i in used}) == 3 and len(used) == 12
    assert 4 not in {int(ids[i]) for i in used}  # identity 4 has too few images
    assert np.array_equal(ids[pairs.left] == ids[pairs.right], pairs.issame)
    with pytest.raises(InputError, match="only 4 identities"):
        generate_pairs(ids, PairOptions(persons=5, per_person=3))


def test_pairs_need_two_identities_and_a_genuine_pair() -> None:
    with pytest.raises(InputError, match="at least 2 identities"):
        generate_pairs(_ids([6]), PairOptions())
    with pytest.raises(InputError, match="at least 2 images"):
        generate_pairs(_ids([1, 1, 1]), PairOptions())


# -- LFW pairs.txt -----------------------------------------------------------------------------------
def test_lfw_pairs_file(tmp_path) -> None:
    f = tmp_path / "pairs.txt"
    f.write_text("10\t300\nAbel_Pacheco\t1\t4\nAbel_Pacheco\t2\tAkhmed_Zakayev\t3\n\n")
    pairs = parse_lfw_pairs(f)
    assert [(p.first, p.second, p.same) for p in pairs] == [
        (("Abel_Pacheco", 1), ("Abel_Pacheco", 4), True),
        (("Abel_Pacheco", 2), ("Akhmed_Zakayev", 3), False),
    ]
    f.write_text("10 300\nAbel_Pacheco 1 4\nAbel_Pacheco one\n")
    with pytest.raises(InputError, match="line 3"):
        parse_lfw_pairs(f)
    f.write_text("10 300\n")
    with pytest.raises(InputError, match="no pairs"):
        parse_lfw_pairs(f)


def test_lfw_names_stay_inside_the_image_folder(tmp_path) -> None:
    (tmp_path / "lfw" / "A").mkdir(parents=True)
    (tmp_path / "lfw" / "A" / "A_0001.png").write_bytes(b"x")
    (tmp_path / "B_0001.jpg").write_bytes(b"x")
    root = tmp_path / "lfw"
    assert lfw_image_path(root, "A", 1) == root / "A" / "A_0001.png"
    assert lfw_image_path(root, "A", 2) is None
    assert lfw_image_path(root, "../B", 1) is None and lfw_image_path(root, "..", 1) is None


# -- identification ----------------------------------------------------------------------------------
def _clusters(n_ids: int, per_id: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, 32))
    ids = np.repeat(np.arange(n_ids), per_id)
    return centres[ids] + noise * rng.normal(size=(len(ids), 32)), ids


def test_identification_of_separated_clusters_is_perfect() -> None:
    emb, ids = _clusters(6, 5, 0.05)
    split = split_gallery(ids)
    assert split.per_identity == 2 and len(split.gallery) == 12 and len(split.probes) == 18
    assert not set(split.gallery.tolist()) & set(split.probes.tolist())
    r = identify(emb, split)
    assert (r.identities, r.top1, r.correct) == (6, 1.0, 18)


def test_identification_counts_a_probe_of_another_person_as_wrong() -> None:
    emb, ids = _clusters(4, 4, 0.05)
    split = split_gallery(ids, per_identity=1)
    probe = split.probes[0]
    emb = emb.copy()
    emb[probe] = emb[split.gallery[ids[split.gallery] == (ids[probe] + 1) % 4][0]]  # looks like someone else
    r = identify(emb, split)
    assert r.correct == len(split.probes) - 1


def test_identification_needs_two_identities_with_two_images() -> None:
    with pytest.raises(InputError, match="at least 2 identities"):
        split_gallery(np.array([0, 0, 1, 2, -1]))
    split = split_gallery(np.array([0, 0, 0, 1, 1, 2, -1]), per_identity=5)  # clamps: one probe stays
    assert sorted(split.probes.tolist()) == [2, 4]
    assert list(itertools.chain(split.gallery.tolist())) == [0, 1, 3]
