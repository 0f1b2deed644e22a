from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.preprocess import load_image, save_image
from k210tool.train import augment
from k210tool.train.data import prepare as prep
from k210tool.train.data.prepare import PrepareOptions, plan_identity, prepare_dataset


@pytest.mark.parametrize("n, action, written", [
    (1000, "sample", 350), (351, "sample", 350), (350, "keep", 350), (201, "keep", 201),
    (200, "open", 400), (91, "open", 182), (90, "open_noise", 360), (31, "open_noise", 124),
    (30, "drop", 0), (0, "drop", 0),
])
def test_balancing_table(n: int, action: str, written: int) -> None:
    plan = plan_identity(n)
    assert (plan.action, plan.written) == (action, written)


def _make_source(root: Path, counts: dict[str, int], size: int = 12) -> None:
    import cv2

    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i:04d}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _count(folder: Path) -> int:
    return len(list(folder.iterdir())) if folder.exists() else -1


def test_prepare_applies_the_table_with_worker_processes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    counts = {"big": 352, "keep": 201, "open": 91, "noise": 31, "few": 30}
    _make_source(src, counts)
    s = prepare_dataset(src, dst, PrepareOptions(workers=2, seed=1))
    assert {n: _count(dst / n) for n in counts} == {"big": 350, "keep": 201, "open": 182, "noise": 124, "few": -1}
    assert (s.identities, s.kept, s.dropped, s.images_in, s.images_out) == (5, 4, 1, 705, 857)
    assert s.actions == {"sample": 1, "keep": 1, "open": 1, "open_noise": 1, "drop": 1}
    assert json.loads((dst / "prepare.json").read_text())["images_out"] == 857
    # originals are copied byte for byte; augmented images are what augment.py makes of them
    orig = src / "noise" / "0003.png"
    assert (dst / "noise" / "0003.png").read_bytes() == orig.read_bytes()
    assert np.array_equal(load_image(dst / "noise" / "0003_open.png"), augment.opening(load_image(orig)))
    noisy = load_image(dst / "noise" / "0003_noise.png").astype(int) - load_image(orig)
    assert 3 < noisy.std() < 15
    sp = load_image(dst / "noise" / "0003_sp.png")
    changed = np.any(sp != load_image(orig), axis=2)
    assert np.all(np.isin(sp[changed], [0, 255]))


def test_sampling_is_seeded(tmp_path: Path) -> None:
    _make_source(tmp_path / "src", {"big": 360})
    a = prepare_dataset(tmp_path / "src", tmp_path / "a", PrepareOptions(workers=1, seed=4))
    prepare_dataset(tmp_path / "src", tmp_path / "b", PrepareOptions(workers=1, seed=4))
    prepare_dataset(tmp_path / "src", tmp_path / "c", PrepareOptions(workers=1, seed=5))
    names = [sorted(p.name for p in (tmp_path / d / "big").iterdir()) for d in "abc"]
    assert names[0] == names[1] != names[2] and a.images_out == 350


def test_rerun_skips_finished_identities_and_redoes_interrupted_ones(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_source(src, {"a": 35, "b": 35, "c": 35})
    prepare_dataset(src, dst, PrepareOptions(workers=1))
    (dst / "a" / "SENTINEL").write_text("finished identities are not touched again")
    (dst / prep.STATE_DIR / "b.json").unlink()  # b: renamed into place, but its marker was never written
    (dst / "b" / "junk.png").write_bytes(b"half")
    import shutil

    shutil.rmtree(dst / "c")
    (dst / prep.STATE_DIR / "c.json").unlink()
    stale = dst / prep.STATE_DIR / "tmp-c-99999"  # c: killed while writing its temporary folder
    stale.mkdir()
    (stale / "0000.png").write_bytes(b"partial")
    s = prepare_dataset(src, dst, PrepareOptions(workers=1))
    assert s.already_done == 1 and s.identities == 3
    assert (dst / "a" / "SENTINEL").exists()
    assert _count(dst / "b") == 140 and not (dst / "b" / "junk.png").exists()
    assert _count(dst / "c") == 140 and not stale.exists()


def test_an_identity_that_fails_midway_is_not_left_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_source(src, {"a": 40})
    calls = {"n": 0}
    real = augment.gaussian_noise

    def dying(*args: object, **kw: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # as Ctrl-C halfway through the identity
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(augment, "gaussian_noise", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(src, dst, PrepareOptions(workers=1))
    assert not (dst / "a").exists() and not (dst / prep.STATE_DIR / "a.json").exists()
    monkeypatch.setattr(augment, "gaussian_noise", real)
    s = prepare_dataset(src, dst, PrepareOptions(workers=1))
    assert _count(dst / "a") == 160 and s.already_done == 0


def test_unreadable_images_do_not_count(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_source(src, {"a": 31})
    (src / "a" / "0000.png").write_bytes(b"broken")  # 30 readable left: dropped
    s = prepare_dataset(src, tmp_path / "dst", PrepareOptions(workers=1))
    assert s.unreadable == 1 and s.dropped == 1 and s.images_out == 0


class _FakeDetector:
    """Finds a 'face' in images whose top-left pixel is odd; the real MTCNN is tested in test_align."""

    def align(self, image: np.ndarray, size: int) -> np.ndarray | None:
        return None if image[0, 0, 0] % 2 == 0 else np.full((size, size, 3), 77, np.uint8)


def test_align_counts_and_skips_images_without_a_face(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for i in range(40):
        save_image(src / "a" / f"{i}.png", np.full((20, 20, 3), i, np.uint8))  # 20 odd values: 20 faces
    for i in range(35):
        save_image(src / "b" / f"{i}.png", np.full((20, 20, 3), 1, np.uint8))
    monkeypatch.setattr(prep, "_DETECTOR", _FakeDetector())
    s = prepare_dataset(src, tmp_path / "dst", PrepareOptions(workers=1, align=True, size=16))
    assert s.no_face == 20 and s.actions == {"drop": 1, "open_noise": 1}
    out = tmp_path / "dst" / "b"
    assert _count(out) == 140 and load_image(out / "0.png").shape == (16, 16, 3)


def test_bad_folders_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        prepare_dataset(tmp_path / "nope", tmp_path / "dst")
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match="no identity folders"):
        prepare_dataset(tmp_path / "flat", tmp_path / "dst")
    _make_source(tmp_path / "src", {"a": 1})
    with pytest.raises(InputError, match="must not be inside"):
        prepare_dataset(tmp_path / "src", tmp_path / "src" / "out")


def test_salt_and_pepper_hits_about_the_requested_fraction() -> None:
    img = np.full((100, 100, 3), 128, np.uint8)
    out = augment.salt_and_pepper(img, np.random.default_rng(0), amount=0.05)
    hit = np.any(out != 128, axis=2)
    assert 0.04 < hit.mean() < 0.06 and set(np.unique(out[hit])) == {0, 255}


def test_opening_removes_small_bright_specks() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    img[5, 5] = 255  # a one-pixel speck
    img[10:16, 10:16] = 200  # a block larger than the kernel
    out = augment.opening(img)
    assert out[5, 5].max() == 0 and np.array_equal(out[10:16, 10:16], img[10:16, 10:16])
