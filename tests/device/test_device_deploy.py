"""`deploy`, `run`, `repl` against the emulator: verified copies, caught faults, bounded failures, any URL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import serial
from click.testing import CliRunner

from k210tool.cli.device import deploy as deploy_cmd
from k210tool.cli.device import run as run_cmd
from k210tool.device.deploy import deploy, plan_files, run_script
from k210tool.device.rawrepl import RawRepl
from k210tool.device.transport import open_transport
from k210tool.emulator.pytest_fixtures import serve_tcp, wait_until
from k210tool.errors import DeviceError, InputError


@pytest.fixture
def app(tmp_path):
    main = tmp_path / "main.py"
    main.write_text("open('/flash/ran.txt', 'w').write('app ran')\nprint('app started')\n")
    blob = tmp_path / "face.kmodel"
    blob.write_bytes(bytes(range(256)) * 24)
    return main, blob


def test_deploy_verifies_on_the_board_and_starts_the_app(make_emulator, app):
    emu = make_emulator()
    main, blob = app
    with open_transport(emu.port) as t:
        result = deploy(t, plan_files([str(main), f"{blob}:/sd/models/face.kmodel"]))
    assert [f.remote for f in result.files] == ["/flash/main.py", "/sd/models/face.kmodel"]
    assert (emu.fs_root / "sd" / "models" / "face.kmodel").read_bytes() == blob.read_bytes()
    assert result.files[1].checksum.startswith("sha256:") and all(f.attempts == 1 for f in result.files)
    # soft reset into the app: main.py ran on the board
    assert wait_until(lambda: (emu.fs_root / "flash" / "ran.txt").exists())
    assert not (emu.fs_root / "flash" / "_k210tmp").exists()


@pytest.mark.parametrize("fault", ["corrupt:repl:2500", "cut:repl:2500:1", "stall:repl:2500:0.5"])
def test_each_link_fault_is_caught_and_the_file_verified(make_emulator, app, fault):
    emu = make_emulator(faults=[fault])
    _main, blob = app
    with open_transport(emu.port) as t:
        result = deploy(t, plan_files([str(blob)]), reboot=False, prompt_timeout=1.5)
    assert any(fault.split(":")[0] in e for e in emu.events)  # the fault did fire
    assert (emu.fs_root / "flash" / "face.kmodel").read_bytes() == blob.read_bytes()
    expected_attempts = 1 if fault.startswith("stall") else 2
    assert result.files[0].attempts == expected_attempts


def test_a_link_that_stays_down_is_reported(make_emulator, app):
    emu = make_emulator(faults=["cut:repl:2500"])
    _main, blob = app
    start = time.monotonic()
    with open_transport(emu.port) as t, pytest.raises(DeviceError, match="no MicroPython raw REPL prompt"):
        deploy(t, plan_files([str(blob)]), reboot=False, prompt_timeout=0.5)
    assert time.monotonic() - start < 30  # bounded
    assert not (emu.fs_root / "flash" / "face.kmodel").exists()  # nothing half-written under the real name


def test_silent_repl_fails_in_bounded_time(make_emulator, app):
    emu = make_emulator(silent="repl")
    start = time.monotonic()
    with open_transport(emu.port) as t, pytest.raises(DeviceError, match="the board sent nothing"):
        deploy(t, plan_files([str(app[0])]), prompt_timeout=0.8)
    assert time.monotonic() - start < 15  # bounded: 3 attempts of 0.8 s


def test_deploy_uses_raw_paste_when_offered(make_emulator, app):
    emu = make_emulator(raw_paste=True)
    with open_transport(emu.port) as t:
        repl = RawRepl(t)
        repl.enter()
        assert repl.eval("1 + 1") == 2
        assert repl.raw_paste is True
    with open_transport(emu.port) as t:
        deploy(t, plan_files([str(app[1])]), reboot=False)
    assert (emu.fs_root / "flash" / "face.kmodel").read_bytes() == app[1].read_bytes()


def test_run_streams_output_and_returns_the_traceback(make_emulator):
    emu = make_emulator()
    chunks: list[bytes] = []
    with open_transport(emu.port) as t:
        res = run_script(t, "import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.05)\n1/0\n",
                         on_output=chunks.append)
    assert b"".join(chunks) == b"tick 0\r\ntick 1\r\ntick 2\r\n"
    assert res.traceback.replace("\r\n", "\n").endswith("ZeroDivisionError: division by zero\n")
    assert not res.ok


def test_cli_deploy_and_run(make_emulator, app, tmp_path):
    emu = make_emulator()
    runner = CliRunner()
    done = runner.invoke(deploy_cmd, ["-p", emu.port, str(app[1]), "--no-reboot", "--json", "-q"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["files"][0]["remote"] == "/flash/face.kmodel"
    script = tmp_path / "probe.py"
    script.write_text("import os\nprint(sorted(os.listdir('/flash')))\n")
    ran = runner.invoke(run_cmd, ["-p", emu.port, str(script)])
    assert ran.exit_code == 0 and "['face.kmodel']" in ran.output
    script.write_text("raise ValueError('bad input')\n")
    failed = runner.invoke(run_cmd, ["-p", emu.port, str(script)])
    assert failed.exit_code == 1


def test_cli_repl_with_piped_input(make_emulator):
    emu = make_emulator()
    run = subprocess.run([sys.executable, "-m", "k210tool", "repl", "-p", emu.port, "--linger", "0.5"],
                         input="x = 6 * 7\nprint(x)\n", capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "42" in run.stdout and ">>> " in run.stdout


def test_bad_ports_and_files():
    with pytest.raises(DeviceError, match="does not exist"):
        open_transport("/dev/ttyUSB_nope")
    with pytest.raises(InputError, match="cannot use"):
        open_transport("nosuch://x")
    with pytest.raises(DeviceError, match="nothing accepts connections"):
        open_transport(f"socket://127.0.0.1:{_free_port()}")
    with pytest.raises(InputError, match="does not exist"):
        plan_files(["/nonexistent/main.py"])
    with pytest.raises(InputError, match="is not a file"):
        plan_files(["/"])


def test_busy_port_is_reported(make_emulator):
    emu = make_emulator()
    holder = serial.Serial(emu.port, exclusive=True)
    try:
        with pytest.raises(DeviceError, match="busy"):
            open_transport(emu.port)
    finally:
        holder.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_socket_url_works_as_a_port(make_emulator, app):
    emu = make_emulator()
    url, stop = serve_tcp(emu.port)
    try:
        with open_transport(url) as t:
            result = deploy(t, plan_files([str(app[1])]), reboot=False)
    finally:
        stop.set()
    assert result.files[0].checksum.startswith("sha256:")
    assert (emu.fs_root / "flash" / "face.kmodel").read_bytes() == app[1].read_bytes()
