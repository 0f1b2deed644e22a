"""`flash` (library and CLI) against the emulator: verified writes, caught faults, bounded failures."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from k210tool.boards import get_board
from k210tool.device.isp import flash, isp_connect, readback_digests
from k210tool.device.kfpkg import plan_flash
from k210tool.device.transport import open_transport
from k210tool.emulator.pytest_fixtures import serve_tcp
from k210tool.errors import DeviceError

K210TOOL = [sys.executable, "-m", "k210tool"]


@pytest.fixture
def model(tmp_path, kmodel_bytes):
    path = tmp_path / "face.kmodel"
    path.write_bytes(kmodel_bytes(4, 90_000))
    return path


def test_flash_writes_and_the_board_reads_it_back(make_emulator, model):
    emu = make_emulator()
    emu.attach_in_process()
    plan = plan_flash(get_board("maix_dock"), kmodels=[(model, None)])
    result = flash(emu.port, plan)
    assert emu.flash.read(0x300000, model.stat().st_size) == model.read_bytes()
    assert result.attempts == 1 and result.kflash_board == "dan"
    assert [r.verified for r in result.regions] == ["read back by the board (SHA-256)"]


def test_a_chunk_kflash_did_not_resend_fails_the_attempt_and_is_retried(make_emulator, model):
    emu = make_emulator(faults=["corrupt:stub:30000"])
    emu.attach_in_process()
    result = flash(emu.port, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]))
    assert result.attempts == 2
    assert "rejected 1 chunk" in result.warnings[0]
    assert emu.flash.read(0x300000, model.stat().st_size) == model.read_bytes()
    assert [w.status for w in emu.board.isp.writes].count("bad-crc") == 1


def test_a_cut_link_is_reported_within_the_idle_timeout(make_emulator, model):
    emu = make_emulator(faults=["cut:stub:30000"])
    emu.attach_in_process()
    start = time.monotonic()
    with pytest.raises(DeviceError, match="no progress for 3 s"):
        flash(emu.port, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]), attempts=1, idle_timeout=3)
    assert time.monotonic() - start < 30  # bounded (kflash alone would wait 90 s per retry, forever)


def test_read_back_catches_flash_that_differs(make_emulator, model):
    emu = make_emulator()
    emu.attach_in_process()
    plan = plan_flash(get_board("maix_dock"), kmodels=[(model, None)])
    flash(emu.port, plan, readback=False)
    emu.flash.write(0x300000 + 5000, b"\x00")  # a bit flip in the chip
    with open_transport(emu.port) as t:
        digest = readback_digests(t, plan.regions)[0]
    assert digest != plan.regions[0].sha256


def test_silent_board_fails_at_the_greeting_in_bounded_time(make_emulator, model):
    emu = make_emulator(silent="isp")
    emu.attach_in_process()
    start = time.monotonic()
    with pytest.raises(DeviceError, match="never answered the K210 ISP greeting"):
        flash(emu.port, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]))
    assert time.monotonic() - start < 15  # bounded: 3 attempts of reset + 0.5 s greeting


def test_wrong_reset_wiring_is_explained(make_emulator):
    emu = make_emulator("maix_go")  # wired like the KD233 (goE): the Dock's sequence leaves it in reset
    emu.attach_in_process()
    with open_transport(emu.port) as t:
        with pytest.raises(DeviceError, match="after the isp-dan reset") as err:
            isp_connect(t, "dan", attempts=1)
        assert "reset wiring" in str(err.value)
        assert isp_connect(t, "goE", attempts=1).wiring.name == "kd233"


def test_a_pty_without_the_shim_cannot_be_reset(make_emulator, model):
    emu = make_emulator()  # not attached: this process's pyserial gets ENOTTY
    with pytest.raises(DeviceError, match="has no DTR/RTS lines"):
        flash(emu.port, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]))


def test_missing_and_busy_ports(make_emulator, tmp_path, model):
    plan = plan_flash(get_board("maix_dock"), kmodels=[(model, None)])
    with pytest.raises(DeviceError, match="does not exist"):
        flash(str(tmp_path / "ttyUSB9"), plan)
    emu = make_emulator()
    holder = serial.Serial(emu.port, exclusive=True)
    try:
        with pytest.raises(DeviceError, match="is busy"):
            flash(emu.port, plan)
    finally:
        holder.close()


def test_cli_flash_and_build_only_kfpkg_for_the_kflash_cli(make_emulator, model, tmp_path):
    emu = make_emulator()
    run = subprocess.run([*K210TOOL, "flash", "-p", emu.port, "--board", "maix_dock", "--kmodel", f"{model}@0x400000",
                          "--json", "-q"], capture_output=True, text=True, timeout=120, env=emu.client_env())
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["regions"][0]["address"] == 0x400000 and out["regions"][0]["verified"].startswith("read back")
    assert emu.flash.read(0x400000, model.stat().st_size) == model.read_bytes()

    kfpkg = tmp_path / "face.kfpkg"
    built = subprocess.run([*K210TOOL, "flash", "--board", "maix_dock", "--kmodel", str(model), "--kfpkg-out",
                            str(kfpkg)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kflash = subprocess.run([str(__import__("pathlib").Path(sys.executable).parent / "kflash"), "-p", emu.port,
                             "-B", "dan", "-n", str(kfpkg)], capture_output=True, text=True, timeout=60,
                            env=emu.client_env())
    assert kflash.returncode == 0, kflash.stdout[-500:]
    assert emu.flash.read(0x300000, model.stat().st_size) == model.read_bytes()


def test_cli_errors_are_one_line(tmp_path, kmodel_bytes):
    v5 = tmp_path / "v5.kmodel"
    v5.write_bytes(kmodel_bytes(5, 2000))
    run = subprocess.run([*K210TOOL, "flash", "-p", str(tmp_path / "nope"), "--kmodel", str(v5)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot load a kmodel v5" in lines[0]


def test_flash_through_an_rfc2217_url(make_emulator, model):
    """DTR/RTS travel over RFC 2217; kflash gets a local pty bridged to the URL."""
    emu = make_emulator()
    emu.attach_in_process()  # the port manager's pyserial drives the emulated lines
    url, stop = serve_tcp(emu.port, rfc2217=True)
    try:
        result = flash(url, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]))
    finally:
        stop.set()
    assert result.regions[0].verified.startswith("read back")
    assert emu.flash.read(0x300000, model.stat().st_size) == model.read_bytes()
    assert emu.board.isp.baudrates == [1500000]  # kflash's baud change reached the board through the bridge


@pytest.mark.parametrize("fault", [{"silent": "repl"}, {"faults": ["cut:repl:40"]}, {"faults": ["corrupt:repl:60"]}])
def test_flash_fails_when_the_read_back_cannot_run(make_emulator, model, fault):
    """The chunk CRCs alone do not prove what is in the flash: a read-back that cannot run fails the flash
    (before, it was a warning and exit code 0)."""
    emu = make_emulator(**fault)
    emu.attach_in_process()
    with pytest.raises(DeviceError, match="could not read the flash back|no SHA-256|reads back as"):
        flash(emu.port, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]), attempts=1)


def test_no_readback_accepts_the_chunk_crcs_and_says_so(make_emulator, model):
    emu = make_emulator(silent="repl")
    emu.attach_in_process()
    result = flash(emu.port, plan_flash(get_board("maix_dock"), kmodels=[(model, None)]), readback=False)
    assert [r.verified for r in result.regions] == ["chunk CRC32s acknowledged by the ISP program"]


def test_zero_attempts_is_a_one_line_input_error(tmp_path, kmodel_bytes):
    model = tmp_path / "m.kmodel"
    model.write_bytes(kmodel_bytes(4, 2000))
    run = subprocess.run([*K210TOOL, "flash", "-p", str(tmp_path / "nope"), "--kmodel", str(model), "--attempts", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "at least one attempt" in run.stderr, run.stderr


def test_kflash_log_lines_are_not_progress(monkeypatch, tmp_path):
    """After a cut link kflash keeps logging its retries (the flaky case: it read a garbage byte and retried):
    only bytes written reset the idle timer, so the cut is still reported within the idle timeout."""
    import k210tool.device.isp as isp
    from k210tool.report import Reporter

    fake = ("import json, time\n"
            "print(json.dumps({'event': 'progress', 'what': 'face.kmodel', 'done': 4096, 'total': 90000}), flush=True)\n"
            "while True:\n"
            "    print(json.dumps({'event': 'log', 'text': 'Greeting fail, retry'}), flush=True)\n"
            "    time.sleep(0.3)\n")
    real_popen = subprocess.Popen
    monkeypatch.setattr(isp.subprocess, "Popen", lambda cmd, **kw: real_popen([sys.executable, "-c", fake], **kw))
    start = time.monotonic()
    run = isp.run_kflash("/dev/null", 115200, "dan", tmp_path / "x.kfpkg", idle_timeout=2, overall_timeout=60,
                         reporter=Reporter())
    assert "no progress for 2 s" in run.error and not run.ok
    assert time.monotonic() - start < 10


def test_flash_firmware_is_the_family_as_in_every_command_and_the_image_has_its_own_option(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue 17: `--firmware` was a family in five commands and an image file in `flash`. The refusal's own
    hint (`--firmware canmv_v5`) now works in flash; the image is `--firmware-image`, and the old spelling
    (an existing file) still works, with a warning."""
    from helpers import assert_one_line_error, run_cli

    v5 = Path(__file__).parent.parent / "kmodel" / "data" / "yolox_nano_224_v5.kmodel"
    out = tmp_path / "a.kfpkg"
    refused = run_cli(capsys, "flash", "--board", "maix_dock", "--kmodel", v5, "--kfpkg-out", out)
    assert_one_line_error(refused, "cannot load a kmodel v5", "--firmware canmv_v5")
    ok = run_cli(capsys, "flash", "--board", "maix_dock", "--firmware", "canmv_v5", "--kmodel", v5,
                 "--kfpkg-out", out, "--json", "-q")
    assert ok.code == 0, ok.err
    assert [r["kind"] for r in json.loads(ok.out)["regions"]] == ["kmodel"]
    image = tmp_path / "fw.bin"
    image.write_bytes(bytes(range(256)) * 8)
    for spelling in ("--firmware-image", "--firmware"):
        run = run_cli(capsys, "flash", "--board", "maix_dock", spelling, image, "--kfpkg-out", out, "--json")
        assert run.code == 0, run.err
        assert json.loads(run.out)["regions"][0]["kind"] == "firmware"
        assert ("read as --firmware-image" in run.err) == (spelling == "--firmware")
    assert_one_line_error(run_cli(capsys, "flash", "--board", "maix_dock", "--firmware", "canmv5", "--kfpkg-out",
                                  out), "did you mean 'canmv' or 'canmv_v5'")
