"""Hostile and clumsy inputs to the model commands: each is one line on stderr, exit code 2, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli
from model_factory import save_h5, tiny_backbone


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_h5(tiny_backbone(size=16), tmp_path_factory.mktemp("hostile") / "m.h5")


def test_convert_never_writes_its_rewritten_model_over_its_input(model: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "face.rewritten.h5"
    source.write_bytes(model.read_bytes())
    run = run_cli(capsys, "convert", source, "--calib", "random", "-o", tmp_path / "face.kmodel")
    assert_one_line_error(run, "would overwrite the input")
    assert source.read_bytes() == model.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.rewritten.h5"]


def test_convert_never_writes_its_summary_over_the_calibration_file(model: Path, tmp_path: Path, capsys) -> None:
    calib = tmp_path / "face.kmodel.json"
    calib.write_text("my notes")
    run = run_cli(capsys, "convert", model, "--calib", calib, "-o", tmp_path / "face.kmodel")
    assert_one_line_error(run, "would overwrite the input")
    assert calib.read_text() == "my notes"


def test_rewrite_onto_its_own_input_is_refused(model: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "alias.h5").symlink_to(model)
    before = model.read_bytes()
    for out in (model, tmp_path / "alias.h5"):
        assert_one_line_error(run_cli(capsys, "rewrite", model, "-o", out), "would overwrite the input")
    assert model.read_bytes() == before


def test_a_fifo_as_model_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    for cmd in (["check", str(fifo)], ["convert", str(fifo), "--calib", "random", "-o", str(tmp_path / "x.kmodel")]):
        run = subprocess.run([sys.executable, "-m", "k210tool", *cmd], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "not a regular file" in run.stderr, run.stderr


def _with_config(model: Path, path: Path, config: str) -> Path:
    import h5py

    path.write_bytes(model.read_bytes())
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = config
    return path


@pytest.mark.parametrize(("config", "needle"), [
    ('{"class_name": "Functional", "config": {"layers": [', "not valid JSON"),
    ("[1, 2, 3]", "not a Keras model description"),
    ('{"class_name": "Functional", "config": {"layers": "all of them"}}', "not a Keras model description"),
    ('{"class_name": "Functional", "config": {"layers": [{"class_name": ["Conv2D"], "config": {"name": "c"}}]}}',
     "malformed"),
    ('{"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda", "config": 7, "name": "l"}]}}',
     "malformed"),
])
def test_malformed_model_config_is_one_line(model: Path, tmp_path: Path, capsys, config: str, needle: str) -> None:
    bad = _with_config(model, tmp_path / "bad.h5", config)
    assert_one_line_error(run_cli(capsys, "check", bad), needle)


def test_a_keras_zip_with_traversal_names_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Functional", "config": {"layers": []}}))
        z.writestr("../../evil.txt", b"x")
    assert_one_line_error(run_cli(capsys, "check", path), "outside the archive")
    assert not (tmp_path.parent.parent / "evil.txt").exists()


def test_a_symlink_loop_is_one_line(model: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert_one_line_error(run_cli(capsys, "check", tmp_path / "a"), "does not exist")
    assert_one_line_error(run_cli(capsys, "flash", "--kfpkg", tmp_path / "a", "--kfpkg-out", tmp_path / "o.kfpkg"),
                          "cannot read")


@pytest.mark.parametrize("case", ["npz", "nan", "inf", "huge_header"])
def test_bad_calibration_arrays_are_refused(model: Path, tmp_path: Path, capsys, case: str) -> None:
    calib = tmp_path / "calib.npy"
    images = np.full((4, 16, 16, 3), 100.0, np.float32)
    if case == "npz":
        with calib.open("wb") as fh:
            np.savez(fh, images=images)
        needle = "npz"
    elif case in ("nan", "inf"):
        images[1, 2, 3, 0] = np.nan if case == "nan" else np.inf
        np.save(calib, images)
        needle = "NaN or infinite"
    else:  # a header declaring 10^12 images over a few bytes of data
        np.save(calib, images)
        data = calib.read_bytes().replace(b"(4, 16, 16, 3)", b"(1000000000000, 16, 16, 3)")
        calib.write_bytes(data)
        needle = "cannot read"
    run = run_cli(capsys, "convert", model, "--calib", calib, "-o", tmp_path / "x.kmodel", "--no-rewrite")
    assert_one_line_error(run, needle)
    assert not (tmp_path / "x.kmodel").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--mean", "nan"], "finite"),
    (["--std", "inf"], "finite"),
    (["--input-range", "nan", "1"], "finite"),
    (["--input-size", "0", "0"], "not an image size"),
])
def test_bad_numbers_are_refused_before_nncase_sees_them(model: Path, tmp_path: Path, capsys, args, needle) -> None:
    run = run_cli(capsys, "convert", model, "--calib", "random", "-o", tmp_path / "x.kmodel", *args)
    assert_one_line_error(run, needle)


@pytest.mark.parametrize(("size", "extra"), [(1200, []), (2048, ["--allow-overflow"])])
def test_a_huge_input_is_refused_before_calibration(tmp_path: Path, capsys, size: int, extra: list[str]) -> None:
    """A 4096x4096 input took 10.9 GB and segfaulted convert while `check` refused it: refuse it up front."""
    import resource

    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    inp = k.Input((size, size, 3))
    big = save_h5(k.Model(inp, k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3, strides=2)(inp))),
                  tmp_path / "big.h5")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = run_cli(capsys, "convert", big, "--calib", "random", "-o", tmp_path / "big.kmodel", *extra)
    assert_one_line_error(run, "input alone needs")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: no calibration batch
