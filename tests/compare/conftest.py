"""Fixtures of the compare tests: a small MobileFaceNet-shaped model converted by the real pipeline.

``workspace`` is built once per test session and shared by the xdist workers (tests/xdist_once.py): a
tiny paper-style model (PReLU, TF "same" stride-2 padding, 32x32 input), converted for the KD233 (kmodel v5) by ``k210tool.commands.convert`` with its KPU rewrite (so ``model.rewritten.h5`` is kept beside the
kmodel), the v4 transcoding of that kmodel, identity folders of synthetic faces and a verification ``.bin``
made from other synthetic identities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import helpers  # tests/helpers.py (tests/conftest.py puts tests/ on sys.path): the in-process CLI runner
import pytest
from xdist_once import build_once, session_root

SIZE = 32
TINY = ((2, 16, 2, 2), (2, 32, 1, 2), (2, 32, 1, 1))


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def original(self) -> Path:  # the model the user converts
        return self.root / "model.h5"

    @property
    def rewritten(self) -> Path:  # what convert compiled (kept beside the kmodel)
        return self.root / "model.rewritten.h5"

    @property
    def kmodel(self) -> Path:
        return self.root / "model.kmodel"

    @property
    def kmodel_v4(self) -> Path:
        return self.root / "model_v4.kmodel"

    @property
    def faces(self) -> Path:
        return self.root / "faces"

    @property
    def bin(self) -> Path:
        return self.root / "ver.bin"

    @property
    def other_size(self) -> Path:  # a float model with a 48x48 input
        return self.root / "other_size.h5"


def _build(root: Path) -> None:
    import numpy as np

    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
    from k210tool.compile.kmodel import transcode_to_v4
    from k210tool.compile.summary import read_summary, summary_path
    from k210tool.fileio import write_bytes, write_json
    from k210tool.preprocess import Preprocess
    from k210tool.tfutil import import_tf_keras
    from k210tool.train.data.synthetic import identity_images, write_identity_folders, write_verification_bin
    from k210tool.train.models.mobilefacenet import (
        MobileFaceNetConfig,
        build_mobilefacenet,
        randomize_affine,
        settle_batchnorm,
    )

    ws = Workspace(root)
    write_identity_folders(ws.faces, identities=8, per_identity=4, size=SIZE, first_seed=100)
    write_verification_bin(ws.bin, first_seed=300, identities=8, pairs=24, size=SIZE)
    k = import_tf_keras()
    for path, size in ((ws.original, SIZE), (ws.other_size, 48)):
        k.utils.set_random_seed(0)
        model = build_mobilefacenet(MobileFaceNetConfig(input_size=size, width=16, bottlenecks=TINY,
                                                        embedding_size=32, activation="prelu", stride2_padding="same"))
        randomize_affine(model, 0)
        pre = Preprocess(height=size, width=size)
        faces = np.stack([pre.prepare(img) for i in range(8) for img in identity_images(1000 + i, 2, size)])
        settle_batchnorm(model, pre.normalize(faces), batch_size=len(faces))
        model.save(str(path), save_format="h5")
    # the approximate rewrite (as a user asks with --prelu relu --approximate symmetric-stride2
    # --accept-float-loss): compare's three columns need a float model that differs from the original
    result = convert(ConvertOptions(model=ws.original, output=ws.kmodel, board="kd233",
                                    calibration=CalibrationOptions(str(ws.faces), count=8), prelu="relu",
                                    approximate=("symmetric-stride2",), accept_float_loss=True))
    assert result.summary.kmodel_version == 5 and ws.rewritten.exists(), result.summary
    # the v4 form of the same kmodel, with a summary that says so
    v4 = transcode_to_v4(ws.kmodel.read_bytes())
    write_bytes(ws.kmodel_v4, v4)
    summary = read_summary(ws.kmodel)
    summary.kmodel, summary.kmodel_version = str(ws.kmodel_v4), 4
    import hashlib

    summary.kmodel_sha256 = hashlib.sha256(v4).hexdigest()
    write_json(summary_path(ws.kmodel_v4), summary.to_dict())


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(build_once(session_root(tmp_path_factory), "compare-workspace", _build))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the real ``k210tool`` entry point in this process: ``run_cli(*args) -> CliRun(code, out, err)``."""
    return lambda *args: helpers.run_cli(capsys, *args)


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without --cache-dir must not write into the user's ~/.cache."""
    monkeypatch.setenv("K210TOOL_CACHE_DIR", str(tmp_path / "default-cache"))
