"""The real clients from PyPI against the emulator: the kflash CLI flashes it, mpremote copies and runs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from k210tool.boards import get_board
from k210tool.device.kfpkg import Region, write_kfpkg
from k210tool.emulator.pytest_fixtures import wait_until

BIN = Path(sys.executable).parent
KFLASH = str(BIN / "kflash")
MPREMOTE = str(BIN / "mpremote")


def _kflash(emu, kfpkg: Path, board_flag: str | None, shim: bool = True, baud: int = 1500000):
    cmd = [KFLASH, "-p", emu.port, "-b", str(baud), "-n", str(kfpkg)]
    if board_flag:
        cmd[1:1] = ["-B", board_flag]
    env = emu.client_env() if shim else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(("board", "flag"), [("maix_dock", "dan"), ("maix_bit", "bit"), ("maix_go", "goE"),
                                             ("kd233", "kd233"), ("maixduino", "goE")])
def test_kflash_cli_flashes_kfpkg_at_the_right_addresses(make_emulator, kmodel_bytes, tmp_path, board, flag):
    emu = make_emulator(board)
    model, data = kmodel_bytes(4, 70_000), bytes(range(256)) * 20
    kfpkg = write_kfpkg([Region(0x300000, model, "m.kmodel", "kmodel"), Region(0x600000, data, "d.bin")],
                        tmp_path / "x.kfpkg")
    run = _kflash(emu, kfpkg, flag)
    assert run.returncode == 0, run.stdout[-800:]
    assert emu.flash.read(0x300000, len(model)) == model
    assert emu.flash.read(0x600000, len(data)) == data
    assert emu.flash.read(0x300000 + len(model), 16) == b"\xff" * 16  # nothing written past the region
    assert {w.status for w in emu.board.isp.writes} == {"ok"}
    # the board's own reset wiring got it into ISP mode, and the ISP reboot brought the firmware back
    assert any("ISP mode" in e for e in emu.events)
    assert wait_until(lambda: emu.events[-1] == "boot: firmware started")


@pytest.mark.parametrize("board", ["maix_dock", "maix_go"])
def test_kflash_cli_auto_detects_either_wiring(make_emulator, kmodel_bytes, tmp_path, board):
    emu = make_emulator(board)
    model = kmodel_bytes(4, 5000)
    kfpkg = write_kfpkg([Region(0x300000, model, "m.kmodel", "kmodel")], tmp_path / "x.kfpkg")
    run = _kflash(emu, kfpkg, None, baud=115200)
    assert run.returncode == 0, run.stdout[-800:]
    assert emu.flash.read(0x300000, len(model)) == model


def test_kflash_cli_without_the_shim_cannot_reset_a_pty(make_emulator, kmodel_bytes, tmp_path):
    """Why the shim exists: pyserial's DTR/RTS ioctls fail on a pseudo-terminal (ENOTTY)."""
    emu = make_emulator()
    kfpkg = write_kfpkg([Region(0x300000, kmodel_bytes(), "m.kmodel", "kmodel")], tmp_path / "x.kfpkg")
    run = _kflash(emu, kfpkg, "dan", shim=False)
    assert run.returncode == 1
    assert "Inappropriate ioctl" in run.stdout
    assert emu.board.isp.writes == []


def test_kflash_cli_firmware_image_boots_only_when_its_sha256_matches(make_emulator, tmp_path):
    emu = make_emulator()
    firmware = bytes(range(256)) * 300
    kfpkg = write_kfpkg([Region(0, firmware, "fw.bin", "firmware", sha256_prefix=True)], tmp_path / "fw.kfpkg")
    run = _kflash(emu, kfpkg, "dan")
    assert run.returncode == 0, run.stdout[-800:]
    stored = emu.flash.read(0, 5 + len(firmware) + 32)
    assert stored[5:-32] == firmware and hashlib.sha256(stored[:-32]).digest() == stored[-32:]
    assert wait_until(lambda: emu.board.mode == "firmware")


def test_kflash_cli_misses_a_rejected_chunk_the_emulator_catches_it(make_emulator, tmp_path):
    """kflash 1.1.6 logs 'Data checksum error, retrying...' and moves on without re-sending: exit 0.

    The emulator's CRC check keeps the corrupted chunk out of flash, and the firmware whose image is
    then incomplete does not boot - what `k210tool flash` turns into a failed, retried attempt.
    """
    emu = make_emulator(faults=["corrupt:stub:2000"])
    firmware = bytes(range(256)) * 300
    kfpkg = write_kfpkg([Region(0, firmware, "fw.bin", "firmware", sha256_prefix=True)], tmp_path / "fw.kfpkg")
    run = _kflash(emu, kfpkg, "dan")
    assert run.returncode == 0
    assert "Data checksum error" in run.stdout
    statuses = [w.status for w in emu.board.isp.writes]
    assert statuses[0] == "bad-crc" and statuses.count("bad-crc") == 1  # never re-sent
    assert emu.flash.read(5, 16) == b"\xff" * 16
    assert wait_until(lambda: emu.board.mode == "dead")


def test_corrupted_flash_program_upload_hangs_the_board(make_emulator, kmodel_bytes, tmp_path):
    """A corrupt chunk of the ISP program: kflash re-sends it at the next address (a hole), the board hangs."""
    emu = make_emulator(faults=["corrupt:rom:5000"])
    kfpkg = write_kfpkg([Region(0x300000, kmodel_bytes(), "m.kmodel", "kmodel")], tmp_path / "x.kfpkg")
    run = _kflash(emu, kfpkg, "dan")
    assert run.returncode == 1
    assert "errcode= 0xe2" in run.stdout
    assert emu.board.isp.rejected_sram_chunks == 1
    assert emu.board.mode == "dead"
    assert emu.board.isp.writes == []


def _mpremote(emu, *args: str, timeout: float = 30):
    return subprocess.run([MPREMOTE, "connect", emu.port, *args], capture_output=True, text=True, timeout=timeout)


def test_mpremote_copies_and_runs_a_script(make_emulator, tmp_path):
    emu = make_emulator()
    script = tmp_path / "hello.py"
    script.write_text("def greet(n):\n    return 'hello %d' % n\n")
    run = _mpremote(emu, "fs", "cp", str(script), ":hello.py", "+", "exec", "import hello; print(hello.greet(42))",
                    "+", "fs", "ls")
    assert run.returncode == 0, run.stderr
    assert "hello 42" in run.stdout
    assert "hello.py" in run.stdout.split("ls :")[-1]
    assert (emu.fs_root / "flash" / "hello.py").read_text() == script.read_text()
    # copying the same file again: mpremote's on-board sha256 matches and it skips the copy
    again = _mpremote(emu, "fs", "cp", str(script), ":hello.py")
    assert "Up to date" in again.stdout


def test_mpremote_sees_board_errors_as_micropython_reports_them(make_emulator):
    emu = make_emulator()
    missing = _mpremote(emu, "fs", "cat", ":nope.txt")
    assert missing.returncode == 1 and "No such file" in missing.stderr
    raised = _mpremote(emu, "exec", "x = [1]\nprint(x[3])")
    assert raised.returncode == 1 and "IndexError" in raised.stdout
    fstring = _mpremote(emu, "exec", "v = 1\nprint(f'{v}')")
    assert "SyntaxError" in fstring.stdout  # MicroPython 1.11 on MaixPy/CanMV has no f-strings


def test_mpremote_uses_raw_paste_when_the_firmware_offers_it(make_emulator, tmp_path):
    emu = make_emulator(raw_paste=True)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 40)
    run = _mpremote(emu, "fs", "cp", str(blob), ":blob.bin", "+", "exec", "import os; print(os.stat('blob.bin')[6])")
    assert run.returncode == 0, run.stderr
    assert "10240" in run.stdout
    assert (emu.fs_root / "flash" / "blob.bin").read_bytes() == blob.read_bytes()


def test_mpremote_with_the_shim_loaded_still_lands_in_the_repl(make_emulator):
    """Opening the port must not reset the board: only explicit line changes are forwarded."""
    emu = make_emulator()
    run = subprocess.run([MPREMOTE, "connect", emu.port, "exec", "print(6*7)"], capture_output=True, text=True,
                         timeout=30, env=emu.client_env())
    assert run.returncode == 0, run.stderr
    assert "42" in run.stdout
    assert not any("RESET asserted" in e for e in emu.events)


def test_board_files_stay_inside_the_emulator_folder(make_emulator, tmp_path):
    emu = make_emulator()
    outside = tmp_path / "outside.txt"
    (emu.fs_root / "flash" / "escape").symlink_to(tmp_path)
    dotdot = _mpremote(emu, "exec", f"open('../../../../../..{outside}', 'w').write('x')")
    assert "OSError: [Errno 2] ENOENT" in dotdot.stdout  # '..' stops at the board's root: no such folder there
    link = _mpremote(emu, "exec", "open('escape/outside.txt', 'w').write('x')")
    assert "OSError: [Errno 13] EACCES" in link.stdout
    assert not outside.exists()


@pytest.mark.parametrize("firmware", ["maixpy", "canmv"])
def test_soft_reboot_banner_matches_the_firmware(make_emulator, firmware):
    emu = make_emulator("maix_dock", firmware=firmware)
    run = _mpremote(emu, "soft-reset", "+", "exec", "import sys; print(sys.implementation.name)")
    assert run.returncode == 0, run.stderr
    assert "micropython" in run.stdout
    assert get_board("maix_dock", firmware).firmware.raw_paste is False
