"""The emulator's parts on their own: SLIP framing, sparse flash, confined filesystem, runtime, faults, pins."""

from __future__ import annotations

import dataclasses
import struct
import time
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k210tool.boards import get_board
from k210tool.device import ispproto as P
from k210tool.device.reset import WIRINGS, hard_reset, isp_reset
from k210tool.emulator.board import VirtualBoard
from k210tool.emulator.faults import FaultInjector, parse_fault
from k210tool.emulator.flash import SparseFlash
from k210tool.emulator.mpmodules import default_registry
from k210tool.emulator.pytest_fixtures import wait_until
from k210tool.emulator.runtime import BoardContext, MicroPythonRuntime
from k210tool.emulator.vfs import ConfinedFS
from k210tool.errors import InputError


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.integers(1, 50))
def test_slip_frames_survive_any_split(packets, step):
    stream = b"noise" + b"".join(P.slip_encode(p) for p in packets)
    decoder = P.SlipDecoder()
    frames = []
    for pos in range(0, len(stream), step):
        frames += decoder.feed(stream[pos:pos + step])
    assert frames == packets
    assert bytes(decoder.noise) == b"noise"


def test_request_crc_covers_the_payload():
    frame = P.SlipDecoder().feed(P.build_request(P.FLASH_WRITE, struct.pack("<II", 0x1000, 3) + b"abc"))[0]
    req = P.parse_request(frame)
    assert req is not None and req.crc_ok and req.address_length_data() == (0x1000, 3, b"abc")
    bad = P.Request(req.op, req.crc ^ 1, req.payload)
    assert not bad.crc_ok
    assert zlib.crc32(req.payload) == req.crc


def test_sparse_flash_reads_erased_bytes_and_persists(tmp_path):
    flash = SparseFlash(0x100000)
    flash.write(0x0FF0, b"x" * 40)  # across a sector boundary
    assert flash.read(0x0FE0, 64) == b"\xff" * 16 + b"x" * 40 + b"\xff" * 8
    flash.save(tmp_path / "f.img")
    again = SparseFlash.load(tmp_path / "f.img", 0x100000)
    assert again.read(0x0FF0, 40) == b"x" * 40
    flash.erase(0x1000, 0x1000)
    assert flash.read(0x1000, 8) == b"\xff" * 8 and flash.read(0x0FF0, 16) == b"x" * 16
    with pytest.raises(ValueError):
        flash.write(0x0FFFF0, b"y" * 32)
    with pytest.raises(InputError, match="holds a 1048576-byte flash"):
        SparseFlash.load(tmp_path / "f.img", 0x200000)


def test_confined_fs_maps_board_paths_and_refuses_escapes(tmp_path):
    fs = ConfinedFS(tmp_path / "root")
    assert fs.board_path("main.py") == "/flash/main.py"
    assert fs.host_path("/sd/x.bin") == (tmp_path / "root" / "sd" / "x.bin").resolve()
    assert fs.board_path("../../../etc/passwd") == "/etc/passwd"  # '..' stops at the board's root
    (tmp_path / "root" / "flash" / "out").symlink_to(tmp_path)
    with pytest.raises(OSError) as err:
        fs.open("out/secret", "w")
    assert err.value.errno == 13
    fs.mkdir("lib")
    with fs.open("lib/a.py", "w") as fh:
        fh.write("A = 1\n")
    assert list(fs.ilistdir("lib")) == [("a.py", 0x8000, 0, 6)]
    assert fs.stat("/flash/lib")[0] == 0x4000
    with pytest.raises(OSError) as missing:
        fs.remove("nope")
    assert str(missing.value) == "[Errno 2] ENOENT"


def _runtime(tmp_path, firmware="canmv", **fw_changes):
    board = get_board("maix_dock", firmware)
    if fw_changes:
        board = dataclasses.replace(board, firmware=dataclasses.replace(board.firmware, **fw_changes))
    out: list[str] = []
    ctx = BoardContext(board, SparseFlash(board.flash_size), ConfinedFS(tmp_path / "fs"), write=out.append)
    return MicroPythonRuntime(ctx, default_registry()), out


def test_runtime_keeps_globals_and_formats_tracebacks_like_micropython(tmp_path):
    rt, out = _runtime(tmp_path)
    assert rt.run_source("x = 21") is None
    assert rt.run_source("print(x * 2)") is None and out == ["42\n"]
    tb = rt.run_source("def f():\n    return y\nf()")
    assert tb == ('Traceback (most recent call last):\n  File "<stdin>", line 3, in <module>\n'
                  '  File "<stdin>", line 2, in f\nNameError: name \'y\' is not defined\n')
    assert rt.run_source("import os\nos.stat('missing')").endswith("OSError: [Errno 2] ENOENT\n")
    assert rt.run_source("import sensor").endswith("ImportError: no module named 'sensor'\n")
    rt.soft_reset()
    assert "NameError" in rt.run_source("x")


def test_runtime_rejects_fstrings_only_on_firmware_without_them(tmp_path):
    rt, _ = _runtime(tmp_path)
    assert rt.run_source("a = 1\nb = f'{a}'").endswith('line 2\nSyntaxError: invalid syntax\n')
    rt2, out = _runtime(tmp_path, fstrings=True)
    assert rt2.run_source("a = 1\nprint(f'{a}')") is None and out == ["1\n"]


def test_runtime_imports_board_modules_and_reads_flash(tmp_path):
    rt, out = _runtime(tmp_path)
    rt.ctx.flash.write(0x300000, b"LDMK")
    (tmp_path / "fs" / "flash" / "helper.py").write_text("def twice(v):\n    return 2 * v\n")
    src = "import helper\nfrom Maix import utils\nprint(helper.twice(4), utils.flash_read(0x300000, 4))"
    assert rt.run_source(src) is None
    assert out == ["8 b'LDMK'\n"]


def test_registry_is_the_extension_point(tmp_path):
    rt, out = _runtime(tmp_path)
    import types

    rt.registry.register("sensor", lambda ctx: types.SimpleNamespace(snapshot=lambda: "frame"))
    assert rt.run_source("import sensor\nprint(sensor.snapshot())") is None and out == ["frame\n"]


def test_fault_specs_are_checked():
    assert str(parse_fault("cut:repl:500:2")) == "cut:repl:500:2"
    for bad in ("cut:repl", "melt:repl:1", "cut:nowhere:1", "stall:repl:5", "corrupt:isp:-1"):
        with pytest.raises(InputError):
            parse_fault(bad)


def test_fault_injector_fires_once_at_the_phase_offset():
    inj = FaultInjector([parse_fault("corrupt:stub:5"), parse_fault("cut:repl:3:0.2")])
    assert inj.filter_rx("rom", b"0123456789") == [(b"0123456789", 0.0)]  # other phase: untouched
    (piece, _), = inj.filter_rx("stub", b"0123456789")
    assert piece[:5] == b"01234" and piece[5] != ord("5") and piece[6:] == b"6789"
    assert inj.filter_rx("stub", b"0123456789") == [(b"0123456789", 0.0)]  # fired already
    assert inj.filter_rx("repl", b"abcdef") == [(b"abc", 0.0)]
    assert inj.filter_rx("repl", b"lost") == []  # link down
    time.sleep(0.25)
    assert inj.filter_rx("repl", b"back") == [(b"back", 0.0)]


class _Pins:
    """Drives a VirtualBoard's lines like pyserial would through the shim."""

    def __init__(self, board: VirtualBoard) -> None:
        self.board = board

    def set_lines(self, dtr: bool | None = None, rts: bool | None = None) -> None:
        if dtr is not None:
            self.board.set_line("dtr", dtr)
        if rts is not None:
            self.board.set_line("rts", rts)


@pytest.mark.parametrize(("board_id", "wiring"), [("maix_dock", "dan"), ("maix_go", "kd233")])
def test_reset_strategies_pick_isp_or_firmware_by_the_boards_wiring(tmp_path, board_id, wiring):
    sent: list[bytes] = []
    vb = VirtualBoard(get_board(board_id), SparseFlash(0x1000000), tmp_path, sent.append, lambda s: None)
    isp_reset(WIRINGS[wiring], hold=0.03)(_Pins(vb))
    assert wait_until(lambda: vb.mode == "rom")
    hard_reset(WIRINGS[wiring], hold=0.03)(_Pins(vb))
    assert wait_until(lambda: vb.mode == "firmware")
    other = "kd233" if wiring == "dan" else "dan"
    isp_reset(WIRINGS[other], hold=0.03)(_Pins(vb))  # the other board's sequence never reaches the ROM
    time.sleep(0.1)
    assert vb.mode != "rom"
    vb.shutdown()


def test_ctrl_c_interrupts_a_busy_loop_on_the_board(make_emulator):
    from k210tool.device.rawrepl import RawRepl
    from k210tool.device.transport import open_transport

    emu = make_emulator()
    with open_transport(emu.port) as t:
        repl = RawRepl(t)
        repl.enter()
        repl.send_program(b"n = 0\nwhile True:\n    n += 1\n")
        time.sleep(0.2)
        repl.interrupt()
        result = repl.follow(3.0)
        assert result.traceback.strip().endswith("KeyboardInterrupt:")
        assert repl.eval("n > 0") is True
