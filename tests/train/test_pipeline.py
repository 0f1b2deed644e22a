from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.preprocess import Preprocess
from k210tool.train.data.index import open_dataset
from k210tool.train.data.pipeline import DecodeStats, epoch_plan, load_sample, make_dataset, steps_per_epoch
from k210tool.train.data.tfrecord import scan, write_shards

PRE = Preprocess(height=8, width=8)


def _png(value: int, size: int = 8) -> bytes:
    import cv2

    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = value  # left half bright: flips are visible
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture()
def shards(tmp_path: Path) -> tuple[Path, list[Path]]:
    # sample n has class n % 5 and pixel value n: three shards, round-robin
    files = write_shards(tmp_path / "faces", ((_png(n), n % 5) for n in range(60)), shards=3)
    return tmp_path, files


def test_shards_are_indexed_with_labels(shards: tuple[Path, list[Path]]) -> None:
    root, files = shards
    assert [f.name for f in files] == [f"faces-0000{i}-of-00003.tfrecord" for i in range(3)]
    offsets, labels = scan(files[1])
    assert len(offsets) == 20 and labels.tolist() == [(3 * j + 1) % 5 for j in range(20)]
    for source in (root, files[0].parent / "faces-*.tfrecord"):
        index = open_dataset(source)
        assert index.kind == "tfrecord" and len(index) == 60 and index.num_classes == 5


def _values(ds: object) -> list[int]:
    out = []
    for images, _labels in ds:  # type: ignore[attr-defined]
        out += [int(round(v)) for v in PRE.denormalize(images.numpy())[:, 0, 0, 0]]
    return out


def test_epochs_shuffle_all_shards_globally(shards: tuple[Path, list[Path]]) -> None:
    index = open_dataset(shards[0])
    # pixel value n identifies the sample; its shard is n % 3
    e0 = _values(make_dataset(index, PRE, 10, seed=1, epoch=0, flip=False))
    e1 = _values(make_dataset(index, PRE, 10, seed=1, epoch=1, flip=False))
    assert sorted(e0) == sorted(e1) == sorted(set(range(60)))
    assert e0 != e1
    assert len({v % 3 for v in e0[:10]}) == 3  # the first batch already mixes all shards
    assert e0 != sorted(e0)
    assert _values(make_dataset(index, PRE, 10, seed=1, epoch=0, flip=False)) == e0  # deterministic


def test_starting_mid_epoch_gives_the_rest_of_the_same_epoch(shards: tuple[Path, list[Path]]) -> None:
    index = open_dataset(shards[0])
    full = _values(make_dataset(index, PRE, 10, seed=3, epoch=2))
    rest = _values(make_dataset(index, PRE, 10, seed=3, epoch=2, start=30))
    assert rest == full[30:]
    limited = _values(make_dataset(index, PRE, 10, seed=3, epoch=2, limit=25))
    assert limited == full[:20]  # whole batches only


def test_labels_travel_with_their_images(shards: tuple[Path, list[Path]]) -> None:
    index = open_dataset(shards[0])
    for images, labels in make_dataset(index, PRE, 12, seed=0, epoch=0, flip=False):
        values = PRE.denormalize(images.numpy())[:, 0, 0, 0].astype(int)
        assert labels.numpy().tolist() == (values % 5).tolist()


def test_flips_follow_the_epoch_plan(shards: tuple[Path, list[Path]]) -> None:
    index = open_dataset(shards[0])
    order, flips = epoch_plan(len(index), 5, 0)
    ds = make_dataset(index, PRE, 60, seed=5, epoch=0, flip=True)
    images = PRE.denormalize(next(iter(ds))[0].numpy())
    bright_right = images[:, 0, -1, 0] > images[:, 0, 0, 0]
    assert bright_right.tolist() == flips.tolist()  # a flip moves the bright half to the right
    assert 10 < flips.sum() < 50


def test_undecodable_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    for c in range(2):
        (tmp_path / f"id{c}").mkdir()
        for j in range(5):
            (tmp_path / f"id{c}" / f"{j}.png").write_bytes(_png(c * 10 + j))
    (tmp_path / "id1" / "9.png").write_bytes(b"not an image")
    index = open_dataset(tmp_path)
    stats = DecodeStats()
    got = sum(len(labels) for _images, labels in make_dataset(index, PRE, 1, seed=0, epoch=0, stats=stats))
    assert got == 10 and stats.failed == 1 and stats.examples[0].endswith("9.png")
    image, ok = load_sample(index, PRE, int(np.flatnonzero(index.labels == 1)[-1]), False)
    assert not ok and image.shape == (8, 8, 3)


def test_folder_layouts_that_are_not_identity_folders_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png(1))
    with pytest.raises(InputError, match="own sub-folder"):
        open_dataset(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(InputError, match="no files match"):
        open_dataset(str(tmp_path / "*.tfrecord"))


def test_gzip_tfrecords_are_refused(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "x.tfrecord"
    p.write_bytes(gzip.compress(b"\0" * 100))
    with pytest.raises(InputError, match="gzip"):
        open_dataset(p)


def test_too_little_data_for_one_batch() -> None:
    with pytest.raises(InputError, match="fewer than one batch"):
        steps_per_epoch(10, 16)


def test_a_failed_image_is_replaced_by_the_next_one_in_the_epoch(tmp_path: Path) -> None:
    # what lets an epoch of N steps finish although an image in it does not decode
    (tmp_path / "a").mkdir()
    for j in range(11):
        (tmp_path / "a" / f"{j:02d}.png").write_bytes(_png(j + 1) if j != 3 else b"broken")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(_png(99))
    index = open_dataset(tmp_path)
    stats = DecodeStats()
    values = _values(make_dataset(index, PRE, 5, seed=0, epoch=0, flip=False, stats=stats))
    assert len(values) == 10 and 0 not in values and stats.failed <= 1  # no stand-in for the broken one
