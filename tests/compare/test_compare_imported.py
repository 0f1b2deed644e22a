"""`k210tool compare` with a .tflite or .onnx float model as the reference column (run by its own runtime)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from k210tool.compile.tflite import export_tflite
from k210tool.tfutil import import_tf_keras


def _fidelity(report: dict, test: str, reference: str) -> dict:
    return next(f for f in report["fidelity"] if f["test"] == test and f["reference"] == reference)


def test_tflite_float_model_is_the_reference_column(workspace, tmp_path, run_cli) -> None:
    """The .tflite export of the model convert was given, against the kmodel: the same figures as the .h5."""
    model = import_tf_keras().models.load_model(workspace.original, compile=False)
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(export_tflite(model, (32, 32, 3)))
    common = [workspace.kmodel, "--data", workspace.faces, "--workers", "1"]
    h5 = run_cli("compare", workspace.original, *common, "--cache-dir", tmp_path / "c1", "--json")
    assert h5.code == 0, h5.err[-3000:]
    run = run_cli("compare", tflite, *common, "--cache-dir", tmp_path / "c2", "--report", tmp_path / "report")
    assert run.code == 0, run.err[-3000:]
    assert "float reference computed by the TFLite interpreter" in run.err
    a, b = json.loads(h5.out), json.loads((tmp_path / "report" / "report.json").read_text())
    assert b["columns"] == ["float", "kmodel"]
    want, got = _fidelity(a, "kmodel", "original float"), _fidelity(b, "kmodel", "float")
    assert got["images"] == want["images"] == 32
    assert got["cosine_mean"] == pytest.approx(want["cosine_mean"], abs=1e-5)
    assert got["max_abs"] == pytest.approx(want["max_abs"], rel=1e-3)
    assert b["verification"]["float"]["accuracy"] == pytest.approx(a["verification"]["original float"]["accuracy"])


@pytest.fixture(scope="module")
def onnx_converted(workspace, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A tiny MobileFaceNet-shaped ONNX model (PRelu, TF 'same' stride 2) converted by the real pipeline, with
    the approximate PReLU -> ReLU rewrite asked for (so a rewritten float model exists to compare)."""
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmodel"))
    from onnx_models import tiny_mobilefacenet

    root = tmp_path_factory.mktemp("onnx")
    onnx = root / "face.onnx"
    onnx.write_bytes(tiny_mobilefacenet(32, "prelu", True))
    result = convert(ConvertOptions(model=onnx, output=root / "face.kmodel", board="kd233",
                                    calibration=CalibrationOptions(str(workspace.faces), count=32),
                                    prelu="relu", accept_float_loss=True))
    assert result.summary.source_format == "onnx" and (root / "face.rewritten.h5").is_file()
    return onnx, root / "face.kmodel", result.summary


def test_onnx_float_model_is_the_reference_column(onnx_converted, workspace, tmp_path, run_cli) -> None:
    onnx, kmodel, summary = onnx_converted
    run = run_cli("compare", onnx, kmodel, "--data", workspace.faces, "--workers", "1", "--cache-dir",
                  tmp_path / "cache", "--report", tmp_path / "report")
    assert run.code == 0, run.err[-3000:]
    assert "float reference computed by onnxruntime" in run.err
    r = json.loads((tmp_path / "report" / "report.json").read_text())
    assert r["columns"] == ["original float", "rewritten float", "kmodel"]  # convert's rewritten model joined
    quantized = _fidelity(r, "kmodel", "rewritten float")
    assert quantized["cosine_mean"] > 0.99  # a wrong NCHW feed or weight layout would be far below
    # the rewrite's cost, measured by onnxruntime here, is what convert measured on the imported Keras model
    rewrite = _fidelity(r, "rewritten float", "original float")
    assert rewrite["cosine_mean"] == pytest.approx(summary.rewrite["cosine"], abs=1e-4)  # same 32 faces
    assert rewrite["cosine_mean"] < 0.99  # PReLU -> ReLU really moved the model
