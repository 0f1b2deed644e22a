"""End to end: `k210tool train` trains the KPU form of MobileFaceNet on synthetic identities, softmax
then ArcFace, and exports an inference model that loads as a plain image -> embedding .h5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from .support import SIZE, SMALL_MODEL, Synthetic, shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(synthetic: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = shared_dir(tmp_path_factory, "kpu_run", lambda folder: _train(synthetic, folder))
    return {"summary": json.loads((out / "cli.json").read_text()), "out": out / "run",
            "untrained": json.loads((out / "untrained.json").read_text())}


def _train(synthetic: Synthetic, out: Path) -> None:
    from k210tool.cli import cli

    config = out / "train.toml"
    config.write_text(
        '[model]\nbackbone = "mobilefacenet_kpu"\n'
        '[head]\nkind = "arcface"\nscale = 32.0\nswitch = "epoch"\nswitch_epoch = 2\n'
        '[data]\nbatch_size = 32\n'
        '[optim]\nlr = 0.1\nwarmup_epochs = 0.5\n'
        '[run]\nepochs = 4\n')
    args = ["train", "-c", str(config), "--data", str(synthetic.faces), "--val", str(synthetic.val),
            "-o", str(out / "run"), "--json"] + [a for s in SMALL_MODEL for a in ("--set", s)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (out / "cli.json").write_text(result.output[result.output.index("{"):])
    (out / "untrained.json").write_text(json.dumps(_untrained_accuracy(synthetic)))


def _untrained_accuracy(synthetic: Synthetic) -> float:
    from k210tool.preprocess import Preprocess
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.config import load_config
    from k210tool.train.models.backbones import build_backbone
    from k210tool.train.validation import evaluate, load_verification_set

    import_tf_keras().utils.set_random_seed(0)
    model = build_backbone(load_config(None, SMALL_MODEL).model)  # the run's initial weights (seed 0)
    pre = Preprocess(SIZE, SIZE)
    return evaluate(model, [load_verification_set(synthetic.val, pre)], pre)[0].accuracy


def test_verification_accuracy_on_held_out_identities_is_far_above_chance(run: dict) -> None:
    s = run["summary"]
    final = s["history"][-1]["validation"][0]["accuracy"]
    before = run["untrained"]
    assert final >= 0.85, s["history"]
    assert final >= before + 0.1, (before, final)  # learnt, not just the colours an untrained net sees


def test_softmax_pretraining_then_arcface(run: dict) -> None:
    s = run["summary"]
    assert [h["head"] for h in s["history"]] == ["softmax", "softmax", "arcface", "arcface"]
    assert s["switched_at_epoch"] == 2 and s["head"] == "arcface"
    assert s["history"][1]["loss"] < s["history"][0]["loss"]  # softmax phase learns
    assert s["steps"] == 4 * s["steps_per_epoch"] == 4 * (640 // 32)


def test_exported_model_is_a_plain_image_to_embedding_h5(run: dict) -> None:
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    model = k.models.load_model(run["out"] / "model.h5", compile=False)  # no custom objects needed
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 64)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "PReLU" not in kinds and "ZeroPadding2D" in kinds and "MarginHead" not in kinds
    x = np.random.default_rng(0).normal(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    emb = model(x, training=False).numpy()
    assert np.all(np.isfinite(emb)) and np.linalg.matrix_rank(emb) == 3


def test_training_model_keeps_the_head_and_the_loader_cuts_it(run: dict) -> None:
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.heads import custom_objects

    k = import_tf_keras()
    training = k.models.load_model(run["out"] / "training_model.h5", compile=False, custom_objects=custom_objects())
    assert [t.name for t in training.inputs] == ["image", "label"]
    assert training.get_layer("margin_head").kind == "arcface"
    inference = k.models.load_model(run["out"] / "model.h5", compile=False)
    x = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    cut = k.Model(training.inputs[0], training.get_layer("embedding").output)
    np.testing.assert_allclose(cut(x, training=False).numpy(), inference(x, training=False).numpy(), atol=1e-5)
    try:
        from k210tool.model.load import load_model
    except ImportError:
        return
    loaded = load_model(run["out"] / "training_model.h5")  # what `k210tool convert` reads
    assert loaded.head_cut is not None and "label" in loaded.head_cut.removed_inputs
    np.testing.assert_allclose(loaded.model(x, training=False).numpy(), inference(x, training=False).numpy(),
                               atol=1e-5)


def test_run_directory_records_logs_config_and_summary(run: dict) -> None:
    from k210tool.train.config import load_config
    from k210tool.train.tblog import read_scalars

    out: Path = run["out"]
    s = run["summary"]
    scalars = read_scalars(out / "logs")
    assert len(scalars["train/loss"]) == s["steps"]
    assert [v for _, v in scalars["val/val/accuracy"]] == pytest.approx(
        [h["validation"][0]["accuracy"] for h in s["history"]])
    assert [v for _, v in scalars["epoch/head_phase"]] == [0.0, 1.0, 1.0, 1.0]
    assert load_config(out / "config.toml").model.backbone == "mobilefacenet_kpu"
    assert json.loads((out / "summary.json").read_text())["steps"] == s["steps"]
    assert json.loads((out / "model.json").read_text())["preprocess"]["height"] == SIZE
    assert (out / "checkpoints" / "checkpoint").exists()


def test_convert_accepts_the_exported_model(run: dict, synthetic: Synthetic, tmp_path: Path) -> None:
    from k210tool.cli import cli

    # kmodel v5 (nncase's own format): this 48x48 test network ends in a 3x3 map, which the v4 transcoder
    # cannot take (KPU outputs are padded to 4x4); 112x112 networks end in 7x7 (see docs/training.md)
    out = tmp_path / "face.kmodel"
    result = CliRunner().invoke(cli, ["convert", str(run["out"] / "model.h5"), "--calib", str(synthetic.faces),
                                      "--calib-count", "16", "--firmware", "canmv_v5", "-o", str(out), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_name(out.name + ".json").read_text())
    assert out.read_bytes()[:4] == b"LDMK" and summary["kmodel_version"] == 5
    assert summary["inputs"][0]["shape"] == [1, 3, SIZE, SIZE] and summary["outputs"][0]["shape"][-1] == 64
