"""`k210tool convert` as users run it: real TensorFlow, real nncase, and every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli  # noqa: E402
from model_factory import save_h5, tiny_backbone, with_arcface  # noqa: E402

from k210tool.train.data.synthetic import write_identity_folders  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("convert")
    save_h5(with_arcface(tiny_backbone(size=32)), d / "train_model.h5")
    write_identity_folders(d / "faces", 4, 3, size=48)
    return d


def _no_outputs(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.suffix in (".kmodel", ".tmp") or ".kmodel." in p.name]
    assert left == [], left


def test_convert_legacy_h5_with_arcface_head(work: Path, capsys) -> None:
    import nncase

    out = work / "face.kmodel"
    run = run_cli(capsys, "convert", work / "train_model.h5", "--calib", work / "faces", "-o", out,
                  "--firmware", "canmv_v5", "--json")
    assert run.code == 0, run.err
    s = json.loads(run.out)
    assert out.read_bytes()[:4] == b"LDMK" and s["kmodel_version"] == 5
    assert s["head_cut"]["output"] == "embedding" and "arcface" in s["head_cut"]["removed_layers"]
    # the exact lowering only: TF "same" stride 2 on 32 -> the network turned; PReLU stays (on the KPU)
    assert {c["rule"] for c in s["rewrite"]["changes"]} == {"rotate180"} and s["rewrite"]["exact"]
    assert s["input_rotation"] == 180 and s["backend"] == "k210tool" and s["ops"]["kpu_uploads"] == 1
    assert s["inputs"][0]["shape"] == [1, 3, 32, 32] and s["outputs"][0]["shape"] == [1, 16]
    assert s["ops"]["kpu_convs"] > 0 and s["memory"]["total"] > 0 and s["memory"]["fits"]
    assert "calibration data" in s["stage_seconds"] and "compile (k210tool KPU backend)" in s["stage_seconds"]
    assert json.loads((work / "face.kmodel.json").read_text())["kmodel_sha256"] == s["kmodel_sha256"]
    # the kmodel runs in nncase's Simulator on the upright image and agrees with the original float model
    from k210tool.compile.summary import read_summary
    from k210tool.model.load import load_model
    from k210tool.preprocess import Preprocess, find_images, load_image

    summary = read_summary(out)
    pre = summary.get_preprocess()
    assert isinstance(pre, Preprocess) and Path(summary.float_model).exists()
    img = pre.prepare(load_image(find_images(work / "faces")[0]))
    sim = nncase.Simulator()
    sim.load_model(out.read_bytes())
    sim.set_input_tensor(0, nncase.RuntimeTensor.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None])))
    sim.run()
    got = sim.get_output_tensor(0).to_numpy().ravel()
    want = np.asarray(load_model(summary.float_model).model(pre.normalize(img[None]), training=False)).ravel()
    cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    assert summary.float_model == str(work / "train_model.h5")  # exact: no other float model to keep
    assert cos > 0.99, cos


def test_nncase_compiles_the_turned_network_and_the_kmodel_turns_its_input(work: Path, capsys) -> None:
    """--backend nncase after the exact lowering: nncase gets the turned network, the kmodel one reversing
    slice in front of it; v5 runs the same in nncase's Simulator and the interpreter, v4 like v5, and both
    compute the original float model on upright images."""
    from k210tool.compile.summary import read_summary
    from k210tool.model.load import load_model
    from k210tool.preprocess import find_images, load_image
    from k210tool.sim.engine import NncaseEngine
    from k210tool.sim.interp import NumpyEngine

    files = {}
    for fw, name in (("canmv_v5", "nn5.kmodel"), ("canmv", "nn4.kmodel")):
        run = run_cli(capsys, "convert", work / "train_model.h5", "--calib", work / "faces", "-o", work / name,
                      "--firmware", fw, "--backend", "nncase", "--json")
        assert run.code == 0, run.err
        s = json.loads(run.out)
        assert s["backend"] == "nncase" and s["input_rotation"] == 180
        files[s["kmodel_version"]] = (work / name).read_bytes()
    summary = read_summary(work / "nn5.kmodel")
    pre = summary.get_preprocess()
    images = np.stack([pre.prepare(load_image(f)) for f in find_images(work / "faces")[:4]])
    ours = NumpyEngine(files[5]).run(images)[0]
    assert np.array_equal(NncaseEngine(files[5]).run(images)[0], ours)
    assert np.array_equal(NumpyEngine(files[4]).run(images)[0], ours)
    want = np.asarray(load_model(work / "train_model.h5").model(pre.normalize(images), training=False))
    got = ours.reshape(len(images), -1)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.98, cos


def test_default_board_gets_a_v4_kmodel_it_can_load(work: Path, capsys) -> None:
    out = work / "dock.kmodel"
    run = run_cli(capsys, "convert", work / "train_model.h5", "--calib", work / "faces", "-o", out, "--json",
                  "--no-rewrite", "--calib-count", "4")
    assert run.code == 0, run.err
    s = json.loads(run.out)
    assert s["board"] == "maix_dock" and s["kmodel_version"] == 4 and s["board_loads_it"]
    assert int.from_bytes(out.read_bytes()[4:8], "little") == 4
    assert s["rewrite"] is None and "canmv" in s["loads_on"]


def test_random_calibration_warns_and_no_calibration_refuses(work: Path, capsys) -> None:
    run = run_cli(capsys, "convert", work / "train_model.h5", "-o", work / "x.kmodel")
    assert_one_line_error(run, "calibration")
    run = run_cli(capsys, "convert", work / "train_model.h5", "-o", work / "r.kmodel", "--calib", "random",
                  "--no-rewrite", "--firmware", "canmv_v5")
    assert run.code == 0, run.err
    assert "not meaningful" in run.err


@pytest.mark.parametrize("case", ["missing", "truncated", "no_model", "random_bytes", "two_outputs", "not_image",
                                  "empty_calib", "undecodable_calib", "missing_outdir", "too_big_for_flash",
                                  "bad_board"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(work: Path, tmp_path: Path, capsys, monkeypatch,
                                                          case: str) -> None:
    from k210tool.tfutil import import_tf_keras

    model = work / "train_model.h5"
    calib: Path | str = work / "faces"
    out = tmp_path / "out.kmodel"
    extra: list[str] = []
    needle = ""
    if case == "missing":
        model, needle = tmp_path / "nope.h5", "does not exist"
    elif case == "truncated":
        data = (work / "train_model.h5").read_bytes()
        model = tmp_path / "t.h5"
        model.write_bytes(data[: len(data) // 2])
        needle = "truncated"
    elif case == "no_model":
        model = tmp_path / "w.h5"
        tiny_backbone().save_weights(str(model))
        needle = "without a model"
    elif case == "random_bytes":
        model = tmp_path / "r.h5"
        model.write_bytes(os.urandom(4096))
        needle = "not a model file"
    elif case == "two_outputs":
        k = import_tf_keras()
        inp = k.Input((16, 16, 3))
        model = save_h5(k.Model(inp, [k.layers.Conv2D(2, 3)(inp), k.layers.Conv2D(3, 3)(inp)]), tmp_path / "two.h5")
        needle = "--output-layer"
    elif case == "not_image":
        k = import_tf_keras()
        inp = k.Input((64,))
        model, needle = save_h5(k.Model(inp, k.layers.Dense(4)(inp)), tmp_path / "mlp.h5"), "image"
    elif case == "empty_calib":
        calib = tmp_path / "empty"
        calib.mkdir()
        needle = "no images"
    elif case == "undecodable_calib":
        calib = tmp_path / "broken"
        calib.mkdir()
        for i in range(3):
            (calib / f"{i}.jpg").write_bytes(b"not a jpeg")
        needle = "could be decoded"
    elif case == "missing_outdir":
        out, needle = tmp_path / "no" / "such" / "x.kmodel", "does not exist"
    elif case == "too_big_for_flash":
        boards = tmp_path / "boards"
        shutil.copytree(Path(__file__).resolve().parent.parent / "boards", boards)
        toml = (boards / "maix_dock.toml").read_text().replace("flash_size = 0x1000000", "flash_size = 0x301000")
        (boards / "maix_dock.toml").write_text(toml)
        monkeypatch.setenv("K210TOOL_BOARDS", str(boards))
        from k210tool import boards as mod

        mod.all_boards.cache_clear()
        mod.all_firmware.cache_clear()
        extra, needle = ["--no-rewrite", "--calib-count", "2"], "does not fit"
    elif case == "bad_board":
        extra, needle = ["--board", "raspberry_pi"], "unknown board"
    try:
        run = run_cli(capsys, "convert", model, "--calib", calib, "-o", out, *extra)
    finally:
        if case == "too_big_for_flash":
            from k210tool import boards as mod

            monkeypatch.delenv("K210TOOL_BOARDS")
            mod.all_boards.cache_clear()
            mod.all_firmware.cache_clear()
    assert_one_line_error(run, needle)
    if out.parent.exists():
        _no_outputs(out.parent)


def test_a_crash_during_compile_leaves_no_kmodel(work: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import k210tool.compile.pipeline as pipeline

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(pipeline, "compile_kmodel", boom)  # convert compiles through it
    run = run_cli(capsys, "convert", work / "train_model.h5", "--calib", work / "faces", "-o", tmp_path / "c.kmodel",
                  "--no-rewrite")
    assert run.code == 1 and "internal error" in run.err and "Traceback" not in run.err
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(work: Path, capsys) -> None:
    from k210tool.cli import main
    from k210tool.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        main(["convert", str(work / "nope.h5"), "--calib", "random", "--debug"])


@pytest.mark.parametrize("case", ["nncase_fallback", "dense_cpu"])
def test_a_float_dense_layer_that_breaks_the_fit_is_named_with_its_fix(work: Path, tmp_path: Path, capsys,
                                                                        case: str) -> None:
    """The refusal says when a fully connected layer kept in float on the CPU is what does not fit, and how
    it goes onto the KPU in uint8: --dense kpu for k210tool's backend; for a model only nncase compiles,
    why the backend could not take it (refused before nncase compiles: its weight floor)."""
    from model_factory import dense_tail

    from k210tool.tfutil import import_tf_keras

    if case == "dense_cpu":  # 2 MiB of float weights: more than MaixPy leaves; the backend moves it when asked
        model, extra, needle = dense_tail(), ["--firmware", "maixpy", "--dense", "cpu"], "convert with --dense kpu"
    else:  # a dense layer on a flattened map: k210tool's backend cannot express it, nncase keeps it in float
        k = import_tf_keras()
        k.utils.set_random_seed(0)
        inp = k.Input((32, 32, 3))
        x = k.layers.Flatten(name="flat")(k.layers.Conv2D(16, 3, 2, padding="same", activation="relu")(inp))
        model = k.Model(inp, k.layers.Dense(256, name="wide")(x))  # 4096 x 256 float: 4 MiB
        extra = ["--firmware", "canmv_v5"]
    src = save_h5(model, tmp_path / "m.h5")
    run = run_cli(capsys, "convert", src, "--calib", work / "faces", "--calib-count", "2", "-o",
                  tmp_path / "m.kmodel", *extra)
    if case == "dense_cpu":
        assert_one_line_error(run, "does not load on maix_dock", "dense layer runs in float on the CPU", needle)
    else:  # refused before nncase compiles, with why k210tool's backend could not take it
        assert_one_line_error(run, "does not fit maix_dock", "nncase keeping wide in float32", "largest layers are wide",
                              "k210tool's KPU backend cannot express this model (layer 'flat'")
    _no_outputs(tmp_path)
