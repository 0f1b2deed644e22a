"""Port listing guesses and the reset strategies' line sequences."""

from __future__ import annotations

import json
from types import SimpleNamespace

from click.testing import CliRunner

from k210tool.cli.device import ports as ports_cmd
from k210tool.device.ports import guess, list_ports
from k210tool.device.reset import WIRINGS, hard_reset, isp_reset, isp_strategies, wiring_for


def _port(device, vid, pid, location=None):
    return SimpleNamespace(device=device, vid=vid, pid=pid, location=location, description="USB Serial",
                           serial_number="X1")


def test_usb_ids_map_to_boards():
    chip, boards = guess(0x1A86, 0x7523)
    assert chip == "CH340" and {"maix_dock", "maix_bit", "kd233"} <= set(boards)
    chip, boards = guess(0x0403, 0x6010)
    assert "FT2232" in chip and {"maix_go", "maixduino"} <= set(boards)
    assert guess(0x2341, 0x0043) == ("", [])


def test_ft2232_interfaces_are_told_apart(monkeypatch):
    import serial.tools.list_ports as lp

    fake = [_port("/dev/ttyUSB1", 0x0403, 0x6010, "1-1.2:1.1"), _port("/dev/ttyUSB0", 0x0403, 0x6010, "1-1.2:1.0"),
            _port("/dev/ttyACM0", 0x2341, 0x0043)]
    monkeypatch.setattr(lp, "comports", lambda: fake)
    found = {p.device: p for p in list_ports()}
    assert found["/dev/ttyUSB1"].note.startswith("K210 UART")
    assert "JTAG" in found["/dev/ttyUSB0"].note
    assert found["/dev/ttyACM0"].boards == [] and found["/dev/ttyACM0"].usb_id == "2341:0043"
    out = CliRunner().invoke(ports_cmd, ["--json"])
    assert out.exit_code == 0
    assert [p["device"] for p in json.loads(out.output)] == ["/dev/ttyACM0", "/dev/ttyUSB0", "/dev/ttyUSB1"]


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def set_lines(self, dtr=None, rts=None):
        for name, value in (("dtr", dtr), ("rts", rts)):
            if value is not None:
                self.calls.append((name, value))


def test_isp_reset_asserts_boot_before_releasing_reset():
    rec = _Recorder()
    isp_reset(WIRINGS["dan"], hold=0)(rec)
    # dan: RTS drives RESET, DTR drives BOOT; the last two calls: BOOT asserted, then RESET released
    assert rec.calls[-2:] == [("dtr", True), ("rts", False)]
    assert ("rts", True) in rec.calls
    rec = _Recorder()
    hard_reset(WIRINGS["kd233"], hold=0)(rec)
    assert rec.calls[-2:] == [("rts", False), ("dtr", False)] and ("dtr", True) in rec.calls


def test_kflash_board_names_map_to_wirings():
    assert wiring_for("goE") == wiring_for("maixduino") == WIRINGS["kd233"]
    assert wiring_for("bit") == WIRINGS["dan"]
    assert wiring_for("goD") is None
    assert [s.wiring.name for s in isp_strategies("auto")] == ["dan", "kd233"]
