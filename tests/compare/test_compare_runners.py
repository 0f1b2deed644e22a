"""The float runner (TensorFlow, cache) and the simulator pool (nncase / NumPy engines), on the test kmodel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.eval.fidelity import per_image_cosine
from k210tool.model.load import LoadOptions
from k210tool.preprocess import Preprocess, load_folder
from k210tool.report import Progress, Reporter
from k210tool.sim.floatrun import FloatRunner
from k210tool.sim.kmodelrun import read_kmodel_file, resolve_engine, run_kmodel
from k210tool.sim.pool import simulate


class CountingReporter(Reporter):
    """Records every progress bar's total and what was advanced."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[Progress] = []

    def _make_progress(self, description: str, total: int | None) -> Progress:
        self.bars.append(Progress(total))
        return self.bars[-1]


@pytest.fixture(scope="module")
def faces(workspace):  # type: ignore[no-untyped-def]
    return load_folder(workspace.faces, Preprocess(height=32, width=32)).images


def test_float_runner_feeds_normalized_pixels_and_caches_by_image(workspace, faces, cache_dir) -> None:
    pre = Preprocess(height=32, width=32)
    first = FloatRunner(workspace.rewritten, LoadOptions(), pre, cache_dir=cache_dir)
    run = first.run(faces[:6])
    assert (run.cached, run.computed, run.input_shape) == (0, 6, (32, 32, 3))
    direct = np.asarray(first.loaded().model(pre.normalize(faces[:6]), training=False))
    np.testing.assert_allclose(run.outputs[0], direct, rtol=1e-5, atol=1e-5)

    second = FloatRunner(workspace.rewritten, LoadOptions(), pre, cache_dir=cache_dir)
    assert second.input_shape() == (32, 32, 3)
    again = second.run(faces[:6])
    assert (again.cached, again.computed) == (6, 0)
    assert second._loaded is None  # nothing was loaded: every image came from the cache
    assert np.array_equal(again.outputs[0], run.outputs[0])

    more = second.run(faces[4:10])  # 2 known, 4 new
    assert (more.cached, more.computed) == (2, 4)
    assert np.array_equal(more.outputs[0][:2], run.outputs[0][4:6])
    assert len(FloatRunner(workspace.rewritten, LoadOptions(), pre, cache_dir=cache_dir).run(faces[:10]).outputs[0]) == 10

    other_pre = replace(pre, mean=(127.0, 127.0, 127.0))  # other preprocessing: another cache key
    missed = FloatRunner(workspace.rewritten, LoadOptions(), other_pre, cache_dir=cache_dir).run(faces[:6])
    assert missed.computed == 6
    assert not np.array_equal(missed.outputs[0], run.outputs[0])


def test_pool_results_equal_single_process_results(workspace, faces) -> None:
    kmodel = workspace.kmodel.read_bytes()
    images = faces[:12]
    single = simulate(kmodel, images, "nncase", workers=1)
    rep = CountingReporter()
    pooled = simulate(kmodel, images, "nncase", workers=2, chunk=1, reporter=rep)
    assert pooled.workers == 2 and single.workers == 1
    assert len(pooled.outputs) == len(single.outputs) == 1
    assert pooled.outputs[0].tobytes() == single.outputs[0].tobytes()
    assert rep.bars[-1].total == 12 and rep.bars[-1].done == 12
    # order: each image alone gives the same row
    for i in (0, 5, 11):
        assert simulate(kmodel, images[i:i + 1], "nncase", workers=1).outputs[0].tobytes() == \
            pooled.outputs[0][i:i + 1].tobytes()


def test_numpy_pool_equals_the_threaded_single_process(workspace, faces) -> None:
    kmodel = workspace.kmodel.read_bytes()
    default = simulate(kmodel, faces[:12], "numpy", chunk=4)
    assert default.workers == 1  # the interpreter threads itself; a pool only when asked
    pooled = simulate(kmodel, faces[:12], "numpy", workers=2, chunk=4)
    assert pooled.workers == 2 and pooled.outputs[0].tobytes() == default.outputs[0].tobytes()


def test_worker_errors_keep_their_hint(workspace, faces) -> None:
    v4 = workspace.kmodel_v4.read_bytes()
    with pytest.raises(InputError) as in_process:
        simulate(v4, faces[:2], "nncase", workers=1)
    with pytest.raises(InputError) as from_worker:
        simulate(v4, faces[:8], "nncase", workers=2, chunk=2)
    assert from_worker.value.message == in_process.value.message and "v5" in from_worker.value.message
    assert from_worker.value.hint == in_process.value.hint and from_worker.value.hint


def test_engine_choice_by_kmodel_version() -> None:
    assert resolve_engine("auto", 4)[0] == "numpy"
    assert resolve_engine("auto", 5)[0] == "auto"
    assert resolve_engine("nncase", 5)[0] == "nncase"
    with pytest.raises(InputError, match="v5 only") as err:
        resolve_engine("nncase", 4)
    assert "--engine numpy" in (err.value.hint or "")
    with pytest.raises(InputError, match="v3"):
        resolve_engine("auto", 3)


def test_auto_engine_is_checked_against_nncase(workspace, faces) -> None:
    info = read_kmodel_file(workspace.kmodel)
    images = faces[:10]
    rep = Reporter()
    run = run_kmodel(info, images, "auto", workers=1, reporter=rep)
    reference = simulate(info.data, images, "nncase", workers=1).outputs
    if run.engine == "numpy":
        assert "bit-exact" in run.note
    else:  # the interpreter differed: auto fell back to the reference and said so
        assert any("differs from nncase" in w or "unavailable" in w for w in rep.warnings)
    assert run.outputs[0].tobytes() == reference[0].tobytes()


def test_v4_kmodel_runs_on_the_numpy_interpreter(workspace, faces) -> None:
    v4, v5 = read_kmodel_file(workspace.kmodel_v4), read_kmodel_file(workspace.kmodel)
    assert (v4.version, v4.input_hwc, v4.input_layout) == (4, (32, 32, 3), "NCHW")
    run = run_kmodel(v4, faces[:6], "auto", workers=1)
    assert run.engine == "numpy" and "v4" in run.note
    reference = simulate(v5.data, faces[:6], "nncase", workers=1).outputs[0]
    assert np.min(per_image_cosine(reference, run.outputs[0])) > 0.99
