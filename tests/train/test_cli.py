from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, run_cli

from k210tool.cli import cli, main


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def _fail(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # progress lines may come first; the error is one line
    assert last.startswith("k210tool: error: ")
    return last


def test_data_synthetic_pack_and_prepare(tmp_path: Path) -> None:
    from k210tool.eval.binfile import load_bin
    from k210tool.train.data.index import open_dataset

    r = _run(["data", "synthetic", "-o", str(tmp_path / "s"), "--identities", "3", "--per-identity", "4",
              "--size", "32", "--val-identities", "4", "--val-pairs", "10"])
    assert r["images"] == 12 and load_bin(r["val"]).pairs == 10
    packed = _run(["data", "pack", r["train"], str(tmp_path / "p" / "train.rec"), "--format", "recordio"])
    assert packed["images"] == 12 and packed["classes"] == 3
    index = open_dataset(tmp_path / "p")
    assert index.kind == "recordio" and index.class_counts().tolist() == [4, 4, 4]
    shards = _run(["data", "pack", r["train"], str(tmp_path / "t" / "faces"), "--shards", "2"])
    assert len(shards["files"]) == 2 and len(open_dataset(tmp_path / "t")) == 12


def test_data_prepare_that_writes_no_image_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue 17: `data prepare` exited 0 after writing 0 images; now one line says why and what to do."""
    from k210tool.preprocess import save_image
    src = tmp_path / "src"
    for ident in ("a", "b"):
        (src / ident).mkdir(parents=True)
        for i in range(4):  # 4 images each: too few to keep
            save_image(src / ident / f"{i}.png", np.full((16, 16, 3), i, np.uint8))
    run = run_cli(capsys, "data", "prepare", src, tmp_path / "out", "-j", "1")
    assert_one_line_error(run, "30 usable images or fewer", "0 images written", "at least 31 images")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    run = run_cli(capsys, "data", "prepare", tmp_path / "empty", tmp_path / "out2", "-j", "1")
    assert_one_line_error(run, "no images in the identity folders", "SRC/<identity>/")


def test_train_show_config_applies_shortcuts(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--data", "faces dir", "--val", "a.bin", "-o", str(tmp_path / "r"),
                                      "--epochs", "3", "--no-resume", "--set", "optim.lr=0.01", "--show-config"])
    assert result.exit_code == 0, result.output
    import tomli

    from k210tool.train.config import config_from_dict

    cfg = config_from_dict(tomli.loads(result.output))
    assert (cfg.data.train, cfg.data.val, cfg.run.epochs, cfg.run.resume, cfg.optim.lr) == (
        "faces dir", ("a.bin",), 3, False, 0.01)


def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "unknown key optim.lrr" in _fail(capsys, ["train", "--set", "optim.lrr=1"])
    assert "does not exist" in _fail(capsys, ["train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start
    assert "does not exist" in _fail(capsys, ["data", "prepare", str(tmp_path / "none"), str(tmp_path / "o")])
    (tmp_path / "faces" / "a").mkdir(parents=True)
    assert "does not exist" in _fail(capsys, ["distill", "--teacher", str(tmp_path / "t.h5"), "--student",
                                              str(tmp_path / "s.h5"), "--data", str(tmp_path / "faces")])
    assert "--held-out" in _fail(capsys, ["distill", "--teacher", "t.h5", "--student", "s.h5", "--data",
                                          str(tmp_path), "--held-out", "1.5"])
