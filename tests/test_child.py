"""nncase runs in a child that a deadline, Ctrl-C or the parent's death always stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import as_from_a_terminal

from k210tool.child import Deadline, run_streaming

SILENT_CHILD = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"


def _gone(pid: int, within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_deadline_holds_when_the_child_prints_nothing() -> None:
    pids: list[int] = []
    start = time.monotonic()
    with pytest.raises(Deadline):
        run_streaming([sys.executable, "-c", SILENT_CHILD], 2, lambda line: pids.append(int(line)))
    assert time.monotonic() - start < 6
    assert _gone(pids[0])


def _parent_script(tmp_path: Path) -> str:
    return textwrap.dedent(f"""
        import sys
        from k210tool.child import run_streaming
        child = "from k210tool.child import die_with_parent; die_with_parent(); " + {SILENT_CHILD!r}
        def seen(line):
            open({str(tmp_path / "pid")!r}, "w").write(line)
        run_streaming([sys.executable, "-c", child], 120, seen)
    """)


def _child_pid(tmp_path: Path) -> int:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip():
            return int((tmp_path / "pid").read_text())
        time.sleep(0.05)
    raise AssertionError("the child never started")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_the_child_dies_with_its_parent(tmp_path: Path, sig: int) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _parent_script(tmp_path)], preexec_fn=as_from_a_terminal)
    try:
        child = _child_pid(tmp_path)
        parent.send_signal(sig)
        parent.wait(20)
        assert _gone(child), f"the child outlived its parent after signal {sig}"
    finally:
        parent.kill()
        parent.wait()


def test_nncase_spinning_on_a_nan_is_stopped_at_the_deadline(monkeypatch) -> None:
    """nncase spins forever on a NaN input range (what --mean nan used to reach): the deadline stops it."""
    from model_factory import tiny_backbone

    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.compile.tflite import export_tflite
    from k210tool.errors import CompileError
    from k210tool.preprocess import Preprocess

    model = tiny_backbone(size=16, prelu=False)
    tfl = export_tflite(model, (16, 16, 3))
    real = NncaseSettings.compile_options
    monkeypatch.setattr(NncaseSettings, "compile_options",
                        lambda self: {**real(self), "input_range": [float("nan"), float("nan")]})
    calib = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    start = time.monotonic()
    with pytest.raises(CompileError, match="did not finish within 8 s"):
        compile_kmodel(tfl, NncaseSettings(Preprocess(16, 16), timeout=8), calib)
    assert time.monotonic() - start < 30


def test_a_kmodel_that_crashes_nncase_is_a_one_line_error_not_a_crash(tmp_path: Path) -> None:
    """Two changed bytes in the header make nncase's Simulator segfault: the worker dies, this process reports it."""
    sys.path.insert(0, str(Path(__file__).parent / "maixpy"))
    from maixpy_factory import tiny_real_kmodel

    from k210tool.errors import K210ToolError
    from k210tool.sim.kmodelrun import KmodelInfo, run_kmodel
    from k210tool.sim.pool import simulate

    path = tiny_real_kmodel(tmp_path)
    data = bytearray(path.read_bytes())
    data[19:21] = b"\x00\x00"
    path.write_bytes(bytes(data))
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(K210ToolError, match="simulator crashed on this kmodel") as err:
        simulate(bytes(data), images, "nncase", workers=1)
    assert "workers 1" not in str(err.value)
    # compare's engine check ("auto" on v5) ran nncase in this process; a corruption the kmodel reader
    # does not catch took compare down with it
    info = KmodelInfo(path, bytes(data), 5, (1, 3, 8, 8), "NCHW", None)
    with pytest.raises(K210ToolError, match="crashed"):
        run_kmodel(info, images, "auto")
