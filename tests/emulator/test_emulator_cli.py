"""`k210tool emulate` as users run it: the two printed lines are all a client needs."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import as_from_a_terminal

from k210tool.emulator.process import emulator_process
from k210tool.errors import K210ToolError

BIN = Path(sys.executable).parent


def test_printed_port_and_pythonpath_lines_are_enough_for_kflash_and_mpremote(tmp_path, kmodel_bytes):
    proc = subprocess.Popen([sys.executable, "-m", "k210tool", "emulate", "--board", "maix_go", "--fs",
                             str(tmp_path / "fs"), "--flash-image", str(tmp_path / "flash.img")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assignment = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/") and assignment.startswith("PYTHONPATH=")
        model = tmp_path / "m.kmodel"
        model.write_bytes(kmodel_bytes(4, 9000))
        env = dict(os.environ, PYTHONPATH=assignment.split("=", 1)[1])
        flashed = subprocess.run([*_k210tool(), "flash", "-p", port, "--board", "maix_go", "--kmodel", str(model),
                                  "-q"], capture_output=True, text=True, timeout=120, env=env)
        assert flashed.returncode == 0, flashed.stderr
        script = tmp_path / "main.py"
        script.write_text("print('deployed')\n")
        copied = subprocess.run([str(BIN / "mpremote"), "connect", port, "fs", "cp", str(script), ":main.py"],
                                capture_output=True, text=True, timeout=60)
        assert copied.returncode == 0, copied.stderr
        assert (tmp_path / "fs" / "flash" / "main.py").read_text() == "print('deployed')\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    # the flash image outlives the emulator
    image = (tmp_path / "flash.img").read_bytes()
    assert model.read_bytes()[:64] in image


def test_emulator_process_context_manager_with_a_fault(tmp_path, kmodel_bytes):
    model = tmp_path / "m.kmodel"
    model.write_bytes(kmodel_bytes(4, 9000))
    with emulator_process("maix_dock", "--fault", "corrupt:stub:100", "--log") as emu:
        run = subprocess.run([*_k210tool(), "flash", "-p", emu.port, "--kmodel", str(model), "--json", "-q"],
                             capture_output=True, text=True, timeout=120, env=emu.env())
        assert run.returncode == 0, run.stderr
        assert '"attempts": 2' in run.stdout


def test_bad_options_fail_before_serving():
    with pytest.raises(K210ToolError, match="bad fault"), emulator_process("maix_dock", "--fault", "melt:repl:1"):
        pass
    with pytest.raises(K210ToolError, match="unknown board"), emulator_process("no_such_board"):
        pass


def test_ctrl_c_stops_it_cleanly():
    proc = subprocess.Popen([*_k210tool(), "emulate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=as_from_a_terminal)
    try:
        assert select.select([proc.stdout], [], [], 30)[0]
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _k210tool() -> list[str]:
    return [sys.executable, "-m", "k210tool"]
