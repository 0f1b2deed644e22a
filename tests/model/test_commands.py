"""`k210tool rewrite` and `k210tool check` as users run them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli
from model_factory import dense_tail, predict, save_h5, tiny_backbone, with_arcface

from k210tool.model.load import load_model


def test_rewrite_writes_a_loadable_h5_and_reports_each_rule(tmp_path: Path, capsys) -> None:
    src = save_h5(with_arcface(tiny_backbone(size=33)), tmp_path / "train.h5")
    out = tmp_path / "kpu.h5"
    run = run_cli(capsys, "rewrite", src, "-o", out, "--json", "--prelu", "relu", "--approximate", "symmetric-stride2")
    assert run.code == 0, run.err
    r = json.loads(run.out)
    rules = {x["rule"]: x for x in r["report"]["rules"]}
    assert set(rules) == {"prelu", "symmetric-stride2"}
    assert rules["symmetric-stride2"]["exact"]  # 33 is odd: TF "same" pads symmetrically there
    assert rules["symmetric-stride2"]["cosine_min"] >= 0.9999
    assert not rules["prelu"]["exact"] and r["report"]["next_steps"]
    loaded = load_model(out)
    assert loaded.head_cut is None
    assert not any(n.class_name == "PReLU" for n in loaded.graph)
    x = np.random.default_rng(0).random((2, 33, 33, 3), np.float32)
    assert predict(loaded.model, x).shape == (2, 16)


def test_rewrite_list_rules_and_bad_suffix(tmp_path: Path, capsys) -> None:
    run = run_cli(capsys, "rewrite", "x.h5", "-o", tmp_path / "y.h5", "--list-rules", "--json")
    assert [r["name"] for r in json.loads(run.out)][:2] == ["dropout", "prelu"]
    src = save_h5(tiny_backbone(size=16), tmp_path / "m.h5")
    run = run_cli(capsys, "rewrite", src, "-o", tmp_path / "y.onnx")
    assert_one_line_error(run, ".h5 or .keras")
    assert not (tmp_path / "y.onnx").exists()


def test_check_as_it_is_and_as_convert_compiles_it(tmp_path: Path, capsys) -> None:
    src = save_h5(tiny_backbone(size=32), tmp_path / "m.h5")
    run = run_cli(capsys, "check", src, "--json", "--all-layers", "--no-rewrite")
    assert run.code == 0, run.err
    before = json.loads(run.out)  # nncase's view of the paper form: PReLU on the CPU, a round trip each
    assert before["fits"] and before["cpu_ops"]["TableLookup1D"] == 4 and before["backend"].startswith("nncase")
    prelu = [p for p in before["layers"] if p["class_name"] == "PReLU"]
    assert prelu and all("PReLU" in p["reason"] for p in prelu)
    run = run_cli(capsys, "check", src, "--json")
    after = json.loads(run.out)  # what convert does: the exact lowering, the KPU backend, one upload
    assert after["backend"] == "k210tool" and after["kpu_uploads"] == 1 < before["kpu_uploads"]
    assert set(after["cpu_ops"]) == {"conv2d"} and after["fits"]
    # the figures are those of the kmodel convert writes (calibration images aside)
    faces = tmp_path / "faces"
    from k210tool.train.data.synthetic import write_identity_folders

    write_identity_folders(faces, identities=4, per_identity=4, size=32, first_seed=50)
    run = run_cli(capsys, "convert", src, "--calib", faces, "-o", tmp_path / "m.kmodel", "--json")
    assert run.code == 0, run.err
    conv = json.loads(run.out)
    assert conv["ops"]["kpu_uploads"] == after["kpu_uploads"]
    assert conv["memory"]["total"] == after["memory_estimate"] and conv["kmodel_size"] == after["kmodel_estimate"]


@pytest.mark.parametrize("firmware", ["maixpy", "canmv_v5"])
def test_check_gives_convert_s_figures_for_a_fully_connected_tail(tmp_path: Path, capsys, firmware: str) -> None:
    """A 2 MiB float dense layer: MaixPy (2 MiB for models) needs it on the KPU, CanMV v5 (3 MiB) takes it
    in float. check must choose what convert chooses and report the same kmodel's figures."""
    src = save_h5(dense_tail(), tmp_path / "tail.h5")
    run = run_cli(capsys, "check", src, "--firmware", firmware, "--json")
    assert run.code == 0, run.err
    checked = json.loads(run.out)
    faces = tmp_path / "faces"
    from k210tool.train.data.synthetic import write_identity_folders

    write_identity_folders(faces, identities=2, per_identity=2, size=32, first_seed=60)
    run = run_cli(capsys, "convert", src, "--calib", faces, "--firmware", firmware, "-o", tmp_path / "t.kmodel",
                  "--json")
    assert run.code == 0, run.err
    conv = json.loads(run.out)
    assert conv["kpu"]["dense"] == checked["kpu"]["dense"] == ("kpu" if firmware == "maixpy" else "cpu")
    assert conv["memory"]["total"] == checked["memory_estimate"] and conv["kmodel_size"] == checked["kmodel_estimate"]
    assert conv["ops"]["kpu_uploads"] == checked["kpu_uploads"] and conv["memory"]["fits"] == checked["fits"]
    assert conv["memory"]["reason"] == checked["fit"]["reason"]


def test_check_says_when_its_figures_are_a_prediction(tmp_path: Path, capsys) -> None:
    """Without k210tool's backend no kmodel is made: the figures are nncase's compile predicted, and say so."""
    src = save_h5(tiny_backbone(size=32), tmp_path / "m.h5")
    run = run_cli(capsys, "check", src, "--no-rewrite")
    assert run.code == 0, run.err
    assert "a prediction of nncase's compile, not a kmodel's figure" in run.out and "--compile measures" in run.out
    run = run_cli(capsys, "check", src, "--json")
    assert json.loads(run.out)["fit"]["fits"] is True  # the backend made one: board_fit's verdict on it


def test_check_exit_code_when_the_model_does_not_fit(tmp_path: Path, capsys) -> None:
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    inp = k.Input((64, 64, 3))
    x = k.layers.Conv2D(64, 3, padding="same")(inp)
    x = k.layers.Conv2D(1024, 3, padding="same", name="wide")(x)  # 2.4 M parameters and 16 MB float maps on the CPU
    x = k.layers.Flatten()(k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(2000, 1)(x)))
    src = save_h5(k.Model(inp, x), tmp_path / "big.h5")
    run = run_cli(capsys, "check", src)
    # the 1024-channel conv's maps cannot share the KPU's 2 MiB with its input (and cannot run in channel groups:
    # its output leaves the KPU whole): refused with the layer and the fix, as convert refuses it
    assert_one_line_error(run, "does not fit", "KPU", "'wide'", "channels")


@pytest.mark.slow  # two nncase compiles
def test_check_compile_measures_what_convert_with_nncase_writes(tmp_path: Path, capsys) -> None:
    """--compile: nncase's kmodel judged by board_fit as convert judges it (random calibration images do not
    change the file nor its pools)."""
    src = save_h5(tiny_backbone(size=32), tmp_path / "m.h5")
    args = ["--firmware", "canmv_v5", "--backend", "nncase", "--json"]
    run = run_cli(capsys, "check", src, "--compile", *args)
    assert run.code == 0, run.err
    measured = json.loads(run.out)["measured"]
    faces = tmp_path / "faces"
    from k210tool.train.data.synthetic import write_identity_folders

    write_identity_folders(faces, identities=2, per_identity=2, size=32, first_seed=80)
    run = run_cli(capsys, "convert", src, "--calib", faces, "-o", tmp_path / "m.kmodel", *args)
    assert run.code == 0, run.err
    conv = json.loads(run.out)
    assert (measured["memory_total"], measured["kmodel_size"]) == (conv["memory"]["total"], conv["kmodel_size"])
    assert measured["fit"]["reason"] == conv["memory"]["reason"] and measured["kpu_uploads"] == conv["ops"]["kpu_uploads"]


@pytest.mark.slow  # nncase compiles
@pytest.mark.parametrize("rewrite", [[], ["--no-rewrite"]])
def test_check_compile_takes_a_one_channel_model(tmp_path: Path, capsys, rewrite: list[str]) -> None:
    """Issue 17: check prepared a 1-channel model's input without convert's grey pixels and (x-127.5)/128
    (`--compile` failed with an error about --mean the user never passed): one preprocessing, convert's."""
    src = save_h5(tiny_backbone(size=32, channels=1), tmp_path / "grey.h5")
    run = run_cli(capsys, "check", src, "--compile", "--backend", "nncase", "--firmware", "canmv_v5", "--json", *rewrite)
    assert run.code == 0, run.err


def test_rewrite_measures_a_one_channel_model_on_one_channel_images(tmp_path: Path, capsys) -> None:
    from k210tool.commands.rewrite import measurement_images
    from k210tool.preprocess import Preprocess
    from k210tool.report import Reporter

    pre = Preprocess.for_input((32, 32, 1))
    images, _ = measurement_images(None, pre, 4, Reporter())
    assert images.shape == (4, 32, 32, 1) and pre.color == "GRAY"
    src = save_h5(tiny_backbone(size=32, channels=1), tmp_path / "grey.h5")
    run = run_cli(capsys, "rewrite", src, "-o", tmp_path / "kpu.h5", "--prelu", "relu", "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["report"]["rules"]
