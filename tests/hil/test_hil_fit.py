"""Issue 18's done-when: every kmodel `convert` calls "fits" loads and runs on the emulated board of its firmware,
and a kmodel convert refuses is refused by the emulated firmware too - down to the last byte.

The project's small models (tests/model_factory.py: a MobileFaceNet-shaped net with PReLU, and one with a
2 MiB fully connected tail) are converted for every MicroPython firmware that loads kmodel v4 or v5 and run
through `test-board` on the emulator of that firmware. Then one kmodel meets firmwares whose model memory is
exactly what convert says it needs, and one byte less.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hil_support import run_on
from model_factory import dense_tail, save_h5, tiny_backbone

from k210tool.boards import all_boards, all_firmware, get_board
from k210tool.commands.convert import CalibrationOptions, ConvertOptions, ConvertResult, convert
from k210tool.commands.testboard import BoardTestOptions, run_board_test
from k210tool.emulator.maixpy import Hardware, maix_registry
from k210tool.emulator.server import Emulator
from k210tool.errors import DoesNotFitError

# every MicroPython firmware that loads what convert writes (maixpy_minimum loads v3 only; the SDK runs no
# MicroPython, so no script can load a model there)
FIRMWARES = sorted(f.id for f in all_firmware().values() if f.micropython and (f.loads(4) or f.loads(5)))
MODELS = {"prelu_net": lambda: tiny_backbone(32), "dense_tail": dense_tail}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], ConvertResult]:
    from k210tool.train.data.synthetic import write_identity_folders

    work = tmp_path_factory.mktemp("fit")
    faces = work / "faces"
    write_identity_folders(faces, identities=3, per_identity=2, size=32, first_seed=70)
    out = {}
    for name, make in MODELS.items():
        src = save_h5(make(), work / f"{name}.h5")
        for fw in FIRMWARES:
            out[name, fw] = convert(ConvertOptions(src, output=work / f"{name}_{fw}.kmodel", firmware=fw,
                                                   calibration=CalibrationOptions(str(faces))))
    return out


def test_the_firmwares_are_those_that_load_v4_or_v5():
    assert FIRMWARES == ["canmv", "canmv_v5", "maixpy"]


@pytest.mark.parametrize("name", ["face", "big"])
def test_the_virtual_board_models_v4_stores_nothing_twice_and_runs_as_v5(models, name):
    import numpy as np
    from helpers import assert_v4_stores_nothing_twice

    from k210tool.sim.interp import NumpyEngine

    v5, v4 = models.path(name, 5).read_bytes(), models.path(name, 4).read_bytes()
    assert_v4_stores_nothing_twice(v5, v4)
    e5, e4 = NumpyEngine(v5), NumpyEngine(v4)
    _n, c, h, w = e5.model.inputs[0].shape
    x = np.random.default_rng(1).integers(0, 256, (2, h, w, c), dtype=np.uint8)  # the engines take NHWC images
    for a, b in zip(e5.run(x), e4.run(x), strict=True):  # v4 records no output shapes: compare the values
        assert a.tobytes() == b.tobytes()


@pytest.mark.slow  # six converts (about 15 s with TensorFlow's start) and a test-board run each
@pytest.mark.parametrize("firmware", FIRMWARES)
@pytest.mark.parametrize("name", list(MODELS))
def test_what_convert_calls_fitting_loads_and_runs_on_the_emulated_firmware(board, converted, name, firmware):
    res = converted[name, firmware]
    assert res.summary.memory.fits  # these small models fit every firmware (convert would have refused them)
    emu, hw = board(firmware)
    _put(emu, res.kmodel)  # the 2 MiB file over a 115200-baud REPL would take minutes: the card has it
    run = run_board_test(BoardTestOptions(port=emu.port, kmodel=res.kmodel, firmware=firmware, vectors=2,
                                          exact=True, upload="skip", model_at=f"/sd/{res.kmodel.name}"))
    assert run.passed and run.identical == 2, run.failures
    assert hw.loader.loads == 1


def _put(emu: Emulator, kmodel: Path) -> None:
    (emu.fs_root / "sd").mkdir(exist_ok=True)
    (emu.fs_root / "sd" / kmodel.name).write_bytes(kmodel.read_bytes())


@pytest.fixture
def firmware_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``firmware_with(id, model_memory)``: CanMV's release with that much memory for models, as a user's
    boards folder ($K210TOOL_BOARDS) defines it; convert, test-board and the emulator all read it."""
    folder = tmp_path / "boards"
    folder.mkdir()
    bundled = (Path(__file__).resolve().parents[2] / "boards" / "firmware.toml").read_text()
    canmv = re.search(r"^\[canmv\]\n(.*?)(?=^\[)", bundled, re.S | re.M)
    assert canmv is not None
    entries: list[str] = []

    def make(fid: str, memory: int) -> str:
        body = re.sub(r"^model_memory = \d+$", f"model_memory = {memory}", canmv.group(1), flags=re.M)
        entries.append(f"[{fid}]\n{body}")
        (folder / "firmware.toml").write_text("\n".join(entries))
        monkeypatch.setenv("K210TOOL_BOARDS", str(folder))
        all_boards.cache_clear()
        all_firmware.cache_clear()
        assert get_board("maix_dock", fid).model_memory == memory
        return fid

    yield make
    monkeypatch.delenv("K210TOOL_BOARDS")
    all_boards.cache_clear()
    all_firmware.cache_clear()


@pytest.mark.slow
def test_convert_and_the_emulated_firmware_agree_to_the_byte(converted, firmware_with, tmp_path):
    ref = converted["prelu_net", "canmv"]
    need = ref.summary.memory.total  # file + working memory + CanMV's overhead
    pinned = {"prelu_layout": ref.summary.kpu["prelu_layout"], "dense": ref.summary.kpu["dense"]}
    src, faces = Path(ref.summary.source), ref.summary.quantization["calibration"].split(" from ")[-1]

    def convert_for(fid: str, **kw: object) -> ConvertResult:
        return convert(ConvertOptions(src, output=tmp_path / f"{fid}.kmodel", firmware=fid,
                                      calibration=CalibrationOptions(faces), **pinned, **kw))  # type: ignore[arg-type]

    exact = convert_for(firmware_with("exact", need))
    assert exact.summary.memory.fits and exact.kmodel.read_bytes() == ref.kmodel.read_bytes()
    with pytest.raises(DoesNotFitError, match="does not load on maix_dock: needs .* 1 bytes too many"):
        convert_for(firmware_with("short", need - 1))
    short = convert_for("short", allow_overflow=True)  # written anyway, and marked
    assert not short.summary.memory.fits and short.kmodel.read_bytes() == ref.kmodel.read_bytes()

    with Emulator(get_board("maix_dock", "exact"), fs_root=tmp_path / "fs1", modules=maix_registry(Hardware())) as emu:
        run = run_board_test(BoardTestOptions(port=emu.port, kmodel=exact.kmodel, firmware="exact", vectors=1,
                                              exact=True))
        assert run.passed
    with Emulator(get_board("maix_dock", "short"), fs_root=tmp_path / "fs2", modules=maix_registry(Hardware())) as emu:
        _put(emu, short.kmodel)
        out, tb = run_on(emu, f"from maix import KPU\nnet = KPU()\nnet.load_kmodel('/sd/{short.kmodel.name}')\n"
                              "print('loaded')\n")
        assert tb.strip().splitlines()[-1] == "OSError: Failed to init model" and "loaded" not in out
        with pytest.raises(DoesNotFitError, match="cannot load on maix_dock"):  # test-board asks first
            run_board_test(BoardTestOptions(port=emu.port, kmodel=short.kmodel, firmware="short", vectors=1))
