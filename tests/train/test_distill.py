"""`k210tool distill` recovers what the KPU rewrite (PReLU -> ReLU, symmetric padding) costs a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from .support import SIZE, SMALL_MODEL, Synthetic, kpu_student_of, shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(synthetic: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    def make(folder: Path) -> None:
        from k210tool.tfutil import import_tf_keras
        from k210tool.train.config import load_config
        from k210tool.train.export import save_model_atomic
        from k210tool.train.loop import train

        cfg = load_config(None, [f'data.train="{synthetic.faces}"', f'run.out="{folder / "teacher_run"}"',
                                 'model.backbone="mobilefacenet"', 'head.kind="softmax"', "data.batch_size=32",
                                 "run.epochs=2", *SMALL_MODEL])
        teacher = import_tf_keras().models.load_model(train(cfg).model, compile=False)
        save_model_atomic(teacher, folder / "teacher.h5")
        save_model_atomic(kpu_student_of(teacher), folder / "student.h5")

    return shared_dir(tmp_path_factory, "distill_models", make)


def test_distillation_raises_cosine_and_recovers_accuracy(models: Path, synthetic: Synthetic, tmp_path: Path) -> None:
    from k210tool.cli import cli
    from k210tool.tfutil import import_tf_keras

    out = tmp_path / "student_distilled.h5"
    args = ["distill", "--teacher", str(models / "teacher.h5"), "--student", str(models / "student.h5"),
            "--data", str(synthetic.faces), "--val", str(synthetic.val_large), "--epochs", "3", "--held-out", "0.2",
            "-o", str(out), "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(result.output[result.output.index("{"):])
    assert r["cosine_after"] > max(0.8, r["cosine_before"] + 0.2), r
    # 1000 pairs: an accuracy's standard error is ~0.8 points, so each margin below is several of them. (On the
    # 200-pair set this test used, the teacher's figure alone moved by ~2 points between machines, whose CPU
    # kernels train along slightly different paths: 0.905 vs 0.97 - 0.05 failed while 1000 pairs gave 0.927
    # vs 0.951 for the same models.) Measured here: teacher 0.951, student 0.831 -> 0.927.
    val = next(v for v in r["verification"] if v["name"] == "val1000")
    assert val["pairs"] == 1000
    assert val["student_before"] <= val["teacher"] - 0.03  # the rewrite cost accuracy...
    assert val["student_after"] >= val["student_before"] + 0.04  # ...distillation won it back...
    assert val["student_after"] >= val["teacher"] - 0.05  # ...nearly all of it
    assert any(v["name"] == "held-out" for v in r["verification"])  # pairs from identity sub-folders
    k = import_tf_keras()
    student, distilled = (k.models.load_model(p, compile=False) for p in (models / "student.h5", out))
    assert [layer.name for layer in distilled.layers] == [layer.name for layer in student.layers]
    assert "PReLU" not in {type(layer).__name__ for layer in distilled.layers}
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    assert not np.allclose(distilled(x).numpy(), student(x).numpy())


def test_mismatched_models_are_refused_in_one_line(models: Path, synthetic: Synthetic, tmp_path: Path) -> None:
    from k210tool.cli import main
    from k210tool.train.export import save_model_atomic
    from k210tool.train.models.mobilefacenet import build_mobilefacenet

    other = save_model_atomic(build_mobilefacenet(input_size=64, width=16, embedding_size=64,
                                               bottlenecks=((2, 16, 1, 2),)), tmp_path / "other.h5")
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--teacher", str(models / "teacher.h5"), "--student", str(other), "--data",
              str(synthetic.faces), "-o", str(tmp_path / "x.h5")])
    assert exit_info.value.code == 2 and not (tmp_path / "x.h5").exists()
