"""Issue 15's model matrix, small: every model users bring converts for maix_dock as kmodel v4, or is refused
in seconds with the layer and the fix named - and `check` says what `convert` then does.

The models are the small forms of ``matrix_models.py`` (random seeded weights, settled batch norms);
``benchmarks/model_matrix.py`` runs the full-size ones (the README's table).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli
from matrix_models import save

from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
from k210tool.errors import DoesNotFitError
from k210tool.report import Reporter

REAL_TFLITE = Path("/tmp/k210-realdata/models/mobilefacenet.tflite")
pytestmark = pytest.mark.xdist_group("model_matrix")


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from k210tool.train.data.synthetic import identity_images

    path = tmp_path_factory.mktemp("matrix") / "faces.npy"
    np.save(path, np.stack([img for i in range(8) for img in identity_images(600 + i, 1, size=32)]))
    return path


def _convert(model: Path, faces: Path, out: Path, reporter: Reporter | None = None):  # noqa: ANN202
    return convert(ConvertOptions(model=model, output=out, calibration=CalibrationOptions(str(faces), count=8)),
                   reporter or Reporter())


def _cosine_to_float(model: Path, kmodel: bytes, faces: Path) -> float:
    """Mean cosine of the v4 kmodel's embeddings (NumPy interpreter, v4 runtime semantics) to the float model's."""
    from k210tool.model.load import load_model
    from k210tool.preprocess import Preprocess
    from k210tool.sim.interp import NumpyEngine

    images = np.load(faces)
    loaded = load_model(model)
    want = np.asarray(loaded.model(Preprocess(height=32, width=32).normalize(images), training=False))
    got = NumpyEngine(kmodel).run(images)[0].reshape(len(images), -1)
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    return float(cos.mean())


# the ops nncase leaves on the CPU for each backbone, which kmodel v4 must hold (None: k210tool's own backend)
MATRIX = {
    "mobilefacenet_e6": (None, 256),
    "mobilenetv2": (None, 64),  # ReLU6 on the KPU, GAP in the CPU tail; the softmax classifier is cut
    "efficientnet_lite": ({"reduce", "conv2d", "table_lookup1d"}, 128),  # GAP, 5x5 depthwise, swish
    "resnet": (None, 128),  # 1x1 stride-2 shortcuts
}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "mobilenetv2" else k
                                  for k in sorted(MATRIX)])  # MobileNetV2's 150 layers take 30 s
def test_small_model_converts_to_kmodel_v4_for_maix_dock(kind: str, faces: Path, tmp_path: Path) -> None:
    from k210tool.commands.check import CheckOptions, check
    from k210tool.compile.kmodel import read_kmodel

    cpu_ops, width = MATRIX[kind]
    model = save(kind, full=False, folder=tmp_path)
    result = _convert(model, faces, tmp_path / "m.kmodel")
    s = result.summary
    assert s.board == "maix_dock" and s.kmodel_version == 4 and s.memory.fits and s.fits_flash
    assert s.outputs[0].shape == [1, width]  # the Dense embedding is the output, whatever its width
    data = result.kmodel.read_bytes()
    km = read_kmodel(data)
    assert km.version == 4
    if cpu_ops is None:
        assert s.backend == "k210tool"
    else:
        assert s.backend == "nncase" and s.fallback
        assert cpu_ops <= {layer.op for layer in km.layers}
        # check compiles it the same way: the figures it reports are the kmodel's (calibration images aside)
        checked = check(CheckOptions(model), Reporter())
        assert checked.fits and checked.backend == "nncase (compiled)" and checked.fallback
        assert abs(checked.kmodel_estimate - s.kmodel_size) <= 0.02 * s.kmodel_size
        assert abs(checked.memory_estimate - s.memory.total) <= 0.02 * s.memory.total
    assert _cosine_to_float(model, data, faces) > 0.95


def test_check_says_convert_would_refuse_an_op_without_a_v4_form(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    inp = k.Input((16, 16, 3))
    x = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp))
    model = tmp_path / "probs.h5"
    k.Model(inp, k.layers.Dense(10, activation="softmax", name="probs")(x)).save(str(model), save_format="h5")
    run = run_cli(capsys, "check", model, "--keep-head")  # kept on purpose: softmax has no kmodel v4 form here
    assert_one_line_error(run, "convert would refuse", "softmax", "drop the softmax")
    assert "convert would refuse it" in run.out
    run = run_cli(capsys, "convert", model, "--keep-head", "--calib", "random", "-o", tmp_path / "p.kmodel")
    assert_one_line_error(run, "softmax", "drop the softmax")


def test_a_model_too_big_for_any_board_is_refused_before_calibration(faces: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = save("too_big", full=False, folder=tmp_path)  # 3.7 M weights: over the 3 MiB CanMV leaves
    rep = Reporter()
    start = time.perf_counter()
    with pytest.raises(DoesNotFitError) as info:
        _convert(model, faces, tmp_path / "m.kmodel", rep)
    assert time.perf_counter() - start < 60
    msg = str(info.value) + " " + (info.value.hint or "")
    assert "3.00 MiB" in msg and "at least 3.5" in msg and "conv1 (3.52 MiB)" in msg and "fewer filters" in msg
    assert set(rep.stage_seconds) == {"load"}  # no calibration, rewrite or compile ran
    assert not (tmp_path / "m.kmodel").exists()
    for cmd in ("check", "convert"):
        args = [cmd, model] + (["--calib", faces, "-o", tmp_path / "m.kmodel"] if cmd == "convert" else [])
        assert_one_line_error(run_cli(capsys, *args), "conv1", "3.00 MiB it leaves for a model")


def test_a_model_whose_linear_dense_chain_merges_is_not_refused_early(faces: Path, tmp_path: Path) -> None:
    """4.3 M weights, but GAP -> Dense(4000) -> Dense(16) (both linear) become one 1024x16 layer in k210tool's
    backend: the kmodel is 0.3 MB. The early refusal must not count the unmerged weights."""
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    k.utils.set_random_seed(0)
    L = k.layers
    inp = k.Input((16, 16, 3))
    x = L.Conv2D(1024, 3, 2, padding="same", activation="relu")(L.Conv2D(16, 3, 2, padding="same",
                                                                           activation="relu")(inp))
    x = L.Dense(16, name="embedding")(L.Dense(4000, name="wide")(L.GlobalAveragePooling2D()(x)))
    model = tmp_path / "chain.h5"
    k.Model(inp, x).save(str(model), save_format="h5")
    s = _convert(model, faces, tmp_path / "m.kmodel").summary
    assert s.kmodel_version == 4 and s.memory.fits and s.kmodel_size < 1 << 20


@pytest.mark.slow
@pytest.mark.skipif(not REAL_TFLITE.exists(), reason=f"{REAL_TFLITE} is not here (scripts/realdata.py fetches it)")
def test_the_real_tflite_mobilefacenet_converts_for_maix_dock(tmp_path: Path) -> None:
    from k210tool.train.data.synthetic import identity_images

    faces = tmp_path / "faces.npy"
    np.save(faces, np.stack([img for i in range(8) for img in identity_images(600 + i, 1)]))
    s = _convert(REAL_TFLITE, faces, tmp_path / "m.kmodel").summary
    assert s.source_format == "tflite" and s.kmodel_version == 4 and s.memory.fits and s.outputs[0].shape == [1, 192]
