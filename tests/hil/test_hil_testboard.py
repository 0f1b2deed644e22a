"""`k210tool test-board` against the virtual board: exact parity on every firmware flavour, the upload
paths, the CLI (and its exit codes), a board that goes silent, a board that computes something else."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from k210tool.commands.testboard import BoardTestOptions, VectorResult, gate_failures, run_board_test
from k210tool.emulator.process import emulator_process
from k210tool.errors import DeviceError
from k210tool.eval.fidelity import cosine
from k210tool.preprocess import save_image
from k210tool.train.data.synthetic import identity_images


@pytest.mark.parametrize("firmware, version, mode, reference", [
    ("canmv_v5", 5, "rgb565", "nncase Simulator"),
    ("canmv", 4, "exact", "NumPy interpreter"),
    ("maixpy", 4, "rgb565", "NumPy interpreter"),
])
def test_board_outputs_equal_the_reference_exactly(board, models, firmware, version, mode, reference):
    emu, hw = board(firmware)
    opts = BoardTestOptions(port=emu.port, kmodel=models.path("face", version), firmware=firmware, vectors=3,
                            exact=True)
    res = run_board_test(opts)
    assert res.passed, res.failures
    assert res.identical == 3 and res.input_mode == mode and reference in res.reference
    assert all(v.cosine == pytest.approx(1.0) and v.max_abs == 0.0 for v in res.vectors)
    assert all(v.latency_ms is not None and v.latency_ms > 0 for v in res.vectors)
    assert res.uploaded[0].endswith("/face.kmodel" if version == 5 else "/face_v4.kmodel")
    again = run_board_test(opts)  # the board holds the same kmodel (its SHA-256 says so): not copied again
    assert again.passed and not any(p.endswith(".kmodel") for p in again.uploaded)
    assert hw.loader.loads == 2


def test_images_of_a_folder_and_the_flash_upload(board, models, tmp_path):
    data = tmp_path / "faces"
    data.mkdir()
    for i, img in enumerate(identity_images(300, 3, size=48)):
        save_image(data / f"face{i}.png", img)
    emu, _hw = board("canmv")
    emu.attach_in_process()  # kflash (in a child) and the read-back reach the emulated reset lines
    res = run_board_test(BoardTestOptions(port=emu.port, kmodel=models.path("face", 4), data=data, exact=True,
                                          upload="flash", model_at="0x310000"))
    assert res.passed and [v.source for v in res.vectors] == ["face0.png", "face1.png", "face2.png"]
    assert res.uploaded[0] == "flash 0x310000"
    assert emu.flash.read(0x310000, 8) == models.path("face", 4).read_bytes()[:8]


def test_skip_runs_the_kmodel_the_board_holds_only_when_it_is_this_one(board, models):
    emu, _hw = board("canmv")
    kmodel = models.path("face", 4)
    emu.flash.write(0x300000, kmodel.read_bytes())
    opts = BoardTestOptions(port=emu.port, kmodel=kmodel, vectors=1, exact=True, upload="skip", model_at="0x300000")
    res = run_board_test(opts)
    assert res.passed and res.uploaded == ["/sd/k210tool_parity/0000.bin"]
    emu.flash.write(0x300000 + 100, bytes([kmodel.read_bytes()[100] ^ 1]))  # one bit differs
    with pytest.raises(DeviceError, match="the kmodel on the board at flash 0x300000 is not this one"):
        run_board_test(opts)


def test_cli_against_k210tool_emulate(models):
    kmodel = models.path("face", 5)
    with emulator_process("maix_dock", "--firmware", "canmv_v5") as emu:
        cmd = [sys.executable, "-m", "k210tool", "test-board", "-p", emu.port, str(kmodel), "--firmware", "canmv_v5",
               "--vectors", "2", "--exact", "--json"]
        ok = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert ok.returncode == 0, ok.stderr
        data = json.loads(ok.stdout)
        assert [v["identical"] for v in data["vectors"]] == [True, True] and data["kmodel_version"] == 5
        # the same v5 kmodel on a board that runs the CanMV release: refused before anything is sent
        bad = subprocess.run(cmd[:7] + ["--vectors", "2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("k210tool: error: board maix_dock runs CanMV K210 release")


def test_a_board_with_less_ram_than_expected_fails_on_the_board_with_its_error(models, tmp_path):
    import dataclasses

    from k210tool.boards import get_board
    from k210tool.emulator.maixpy import Hardware, maix_registry
    from k210tool.emulator.server import Emulator

    # the host checks against the CanMV release's 3 MiB; this board leaves 8 KB: the file (6.5 KB) fits,
    # nncase's TOTAL (about 10 KB) does not
    base = get_board("maix_dock")
    small = dataclasses.replace(base, firmware=dataclasses.replace(base.firmware, model_memory=8192))
    with Emulator(small, fs_root=tmp_path / "fs", modules=maix_registry(Hardware())) as emu:
        with pytest.raises(DeviceError, match="^the board could not run the kmodel: OSError: Failed to init model \\(see"):
            run_board_test(BoardTestOptions(port=emu.port, kmodel=models.path("face", 4), vectors=2))


def test_a_script_for_another_firmware_fails_as_on_the_board(board, models):
    from hil_support import run_on

    emu, _hw = board("canmv")  # the release has load_kmodel, not feat/kpu's load
    _out, tb = run_on(emu, "from maix import KPU\nKPU().load('/sd/x.kmodel')\n")
    assert tb.strip().splitlines()[-1] == "AttributeError: 'KPU' object has no attribute 'load'"


class _Wrapped:
    """An engine of the virtual board that goes silent or computes something else after some runs."""

    def __init__(self, inner, hang_after=None, noise=0.0, stop=None):
        self.inner, self.hang_after, self.noise, self.stop, self.runs = inner, hang_after, noise, stop, 0

    def run(self, batch):
        self.runs += 1
        if self.hang_after is not None and self.runs > self.hang_after:
            while not self.stop.is_set():  # short sleeps: a reset can still interrupt the script
                time.sleep(0.05)
        outs = self.inner.run(batch)
        rng = np.random.default_rng(self.runs)
        return [o + self.noise * rng.standard_normal(o.shape).astype(np.float32) for o in outs]


def _wrap_engines(monkeypatch, hw, **kw):
    original = hw.loader._engine
    monkeypatch.setattr(hw.loader, "_engine", lambda data, version: _Wrapped(original(data, version), **kw))


def test_a_board_that_stops_answering_mid_run_is_one_device_error(board, models, monkeypatch):
    stop = threading.Event()
    emu, hw = board("canmv")
    _wrap_engines(monkeypatch, hw, hang_after=1, stop=stop)
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as err:
            run_board_test(BoardTestOptions(port=emu.port, kmodel=models.path("face", 4), vectors=3, timeout=2))
        assert time.monotonic() - t0 < 60
    finally:
        stop.set()
    assert str(err.value).startswith("the board stopped answering after 1 of 3 vectors:")
    assert "\n" not in str(err.value)


def test_outputs_off_the_simulator_fail_the_gate_with_exit_code_4(board, models, monkeypatch, capsys):
    from k210tool.cli import main

    emu, hw = board("canmv")
    _wrap_engines(monkeypatch, hw, noise=0.5)
    with pytest.raises(SystemExit) as exc:
        main(["test-board", "-p", emu.port, str(models.path("face", 4)), "--vectors", "2", "-q"])
    out = capsys.readouterr()
    assert exc.value.code == 4
    assert "FAIL" in out.out and "0/2 vectors bit-identical" in out.out
    assert out.err.strip().splitlines()[-1].startswith("k210tool: error: board outputs outside the tolerance: vector 0")
    with pytest.raises(SystemExit) as exc:  # --json: the result is the one JSON document, the error one line
        main(["test-board", "-p", emu.port, str(models.path("face", 4)), "--vectors", "2", "--json"])
    out = capsys.readouterr()
    assert exc.value.code == 4 and json.loads(out.out)["failures"]
    assert out.err.strip().splitlines()[-1].startswith("k210tool: error: board outputs outside the tolerance")


def test_gate_failures_name_each_violated_tolerance():
    rows = [VectorResult(0, "a", 1.0, 0.9995, 0.01, False, 0.95, 0.2),
            VectorResult(1, "b", 1.0, float("nan"), float("nan"), False, None, None)]
    opts = BoardTestOptions(port="x", kmodel=Path("m.kmodel"), min_cosine=0.999, max_abs=0.001, exact=True,
                            float_min_cosine=0.97)
    fails = gate_failures(rows, opts)
    assert [f.split(":")[0] for f in fails] == ["vector 0 (a)"] * 3 + ["vector 1 (b)"] * 3
    assert any("--max-abs" in f for f in fails) and any("--float-min-cosine" in f for f in fails)
    assert any("cosine nan" in f for f in fails)  # NaN never passes
    assert gate_failures(rows[:1], BoardTestOptions(port="x", kmodel=Path("m"), min_cosine=0.999)) == []


def test_cosine_edge_cases():
    assert cosine(np.zeros(4), np.zeros(4)) == 1.0
    assert cosine(np.zeros(4), np.ones(4)) == 0.0
    assert cosine(np.array([1.0, 0]), np.array([-1.0, 0])) == pytest.approx(-1.0)
