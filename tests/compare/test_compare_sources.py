"""Image sources of compare: identity folders, verification .bin, LFW pairs.txt + folder, random pixels."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.eval import datasets
from k210tool.eval.binfile import write_bin
from k210tool.eval.pairs import PairOptions
from k210tool.preprocess import Preprocess, save_image
from k210tool.report import Reporter
from k210tool.train.data.synthetic import identity_images, write_identity_folders

PRE = Preprocess(height=24, width=24)


def test_identity_folders_give_labels_pairs_and_a_count_of_broken_files(tmp_path) -> None:
    write_identity_folders(tmp_path, identities=4, per_identity=3, size=24)
    (tmp_path / "id_0001" / "broken.png").write_bytes(b"not a png")
    rep = Reporter()
    data = datasets.from_folders(tmp_path, PRE, PairOptions(repeat=2), reporter=rep)
    assert data.kind == "folders" and data.images.shape == (12, 24, 24, 3)
    assert data.skipped_images == 1 and any("skipped 1" in w for w in rep.warnings)
    assert data.identity_names == ["id_0000", "id_0001", "id_0002", "id_0003"]
    assert data.identities is not None
    for label, ident in zip(data.labels, data.identities, strict=True):
        assert f"id_{ident:04d}" in label
    assert data.pairs is not None and len(data.pairs) == 16
    assert np.array_equal(data.identities[data.pairs.left] == data.identities[data.pairs.right], data.pairs.issame)
    # the images are prepared by the one preprocessing path
    first = PRE.prepare(identity_images(0, 1, 24)[0])
    assert np.array_equal(data.images[0], first)


def test_a_flat_folder_is_fidelity_only(tmp_path) -> None:
    for i, img in enumerate(identity_images(5, 3, 24)):
        save_image(tmp_path / f"{i}.png", img)
    rep = Reporter()
    data = datasets.from_folders(tmp_path, PRE, reporter=rep)
    assert data.kind == "images" and data.pairs is None and data.identities is None
    assert any("no verification" in w for w in rep.warnings)


def test_empty_and_undecodable_folders_are_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="no images"):
        datasets.from_folders(tmp_path, PRE)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match="could be decoded"):
        datasets.from_folders(tmp_path, PRE)


def test_bin_pairs_drop_a_pair_with_a_bad_image(tmp_path) -> None:
    imgs = [identity_images(i // 2, 1, 24, image_seed=i)[0] for i in range(8)]
    path = write_bin(tmp_path / "v.bin", imgs, [True, False, True, False])
    bins, issame = pickle.loads(path.read_bytes())
    bins[5] = b"\x00broken"
    path.write_bytes(pickle.dumps((bins, issame), protocol=2))
    rep = Reporter()
    data = datasets.from_bin(path, PRE, rep)
    assert data.skipped_pairs == 1 and data.skipped_images == 1
    assert data.pairs is not None and list(data.pairs.issame) == [True, False, False]
    assert len(data.images) == 6
    assert np.array_equal(data.images[data.pairs.left[2]], PRE.prepare(imgs[6]))
    assert any("skipped 1 of 4 pairs" in w for w in rep.warnings)


def test_a_malicious_bin_runs_nothing(tmp_path, monkeypatch) -> None:
    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([Boom(), b"x"], [True]), protocol=2))
    with pytest.raises(InputError, match="not a safe verification .bin"):
        datasets.from_bin(evil, PRE)
    assert not (tmp_path / "PWNED").exists()


def _lfw(tmp_path):  # type: ignore[no-untyped-def]
    root = tmp_path / "lfw"
    for person, seed in (("Ann_A", 1), ("Bob_B", 2)):
        (root / person).mkdir(parents=True)
        for n, img in enumerate(identity_images(seed, 3, 24), start=1):
            save_image(root / person / f"{person}_{n:04d}.jpg", img)
    return root


def test_lfw_pairs_share_images_and_skip_missing_ones(tmp_path) -> None:
    root = _lfw(tmp_path)
    pairs = root / "pairs.txt"
    pairs.write_text("1 4\nAnn_A 1 2\nAnn_A 1 Bob_B 3\nBob_B 1 9\nBob_B 2 Ann_A 2\n")
    rep = Reporter()
    data = datasets.from_lfw(pairs, None, PRE, rep)  # images beside pairs.txt
    assert data.kind == "lfw" and data.skipped_pairs == 1
    assert data.pairs is not None and list(data.pairs.issame) == [True, False, False]
    assert len(data.images) == 4  # Ann 1 and Ann 2 are in two pairs each, but each runs once
    assert data.labels[data.pairs.left[0]].endswith("Ann_A_0001.jpg")
    assert data.pairs.left[0] == data.pairs.left[1]
    assert any("do not exist" in w for w in rep.warnings)


def test_lfw_with_the_wrong_folder_says_where_to_point(tmp_path) -> None:
    root = _lfw(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "pairs.txt").write_text("Ann_A 1 2\n")
    with pytest.raises(InputError, match="--data"):
        datasets.from_lfw(tmp_path / "elsewhere" / "pairs.txt", None, PRE)
    assert datasets.from_lfw(tmp_path / "elsewhere" / "pairs.txt", root, PRE).pairs is not None


def test_random_images_are_seeded() -> None:
    a, b = datasets.random_images(3, PRE, seed=1), datasets.random_images(3, PRE, seed=1)
    assert a.images.shape == (3, 24, 24, 3) and np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, datasets.random_images(3, PRE, seed=2).images)
    with pytest.raises(InputError):
        datasets.random_images(0, PRE)
