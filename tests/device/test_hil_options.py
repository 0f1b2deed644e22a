"""test-board's option resolution (issue 17): `--upload auto` and the float model the kmodel was compiled from."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from k210tool.commands import testboard
from k210tool.commands.testboard import BoardTestOptions, choose_upload, compiled_float_model
from k210tool.report import Reporter

DATA = Path(__file__).parent.parent / "kmodel" / "data"


def test_auto_upload_flashes_a_big_kmodel_on_a_serial_port_and_deploys_otherwise(tmp_path: Path) -> None:
    big = DATA / "slim320_v4.kmodel"  # 300 KB: minutes over the REPL
    small = tmp_path / "small.kmodel"
    small.write_bytes(big.read_bytes()[:4096])
    assert BoardTestOptions(port="x", kmodel=big).upload == "deploy"  # the library's default is unchanged
    auto = BoardTestOptions(port="/dev/ttyUSB0", kmodel=big, upload="auto")
    assert choose_upload(auto) == "flash"
    assert choose_upload(BoardTestOptions(port="/dev/ttyUSB0", kmodel=small, upload="auto")) == "deploy"
    assert choose_upload(BoardTestOptions(port="socket://host:1234", kmodel=big, upload="auto")) == "deploy"
    assert choose_upload(BoardTestOptions(port="/dev/ttyUSB0", kmodel=big, upload="auto",
                                          model_at="/sd/face.kmodel")) == "deploy"
    assert choose_upload(BoardTestOptions(port="/dev/ttyUSB0", kmodel=small, upload="auto",
                                          model_at="0x300000")) == "flash"
    assert choose_upload(BoardTestOptions(port="/dev/ttyUSB0", kmodel=big, upload="deploy")) == "deploy"


def test_the_cli_default_is_auto(capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import run_cli

    run = run_cli(capsys, "test-board", "--help")
    assert run.code == 0 and "[default: auto]" in " ".join(run.out.split())


def test_model_is_replaced_by_the_rewritten_model_convert_compiled(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: `test-board --model face.h5` compared the board with face.h5 while the kmodel computes
    face.rewritten.h5 (approximate rules ran): exit 4 for bit-identical outputs. Resolved as compare does."""
    kmodel, original, rewritten = tmp_path / "face.kmodel", tmp_path / "face.h5", tmp_path / "face.rewritten.h5"
    shutil.copy(DATA / "slim320_v4.kmodel", kmodel)
    original.write_bytes(b"h5")
    from k210tool.sim import kmodelrun

    real = kmodelrun.read_kmodel_file

    def with_summary(path: Path, reporter: object = None) -> object:
        info = real(path)
        info.summary = SimpleNamespace(source=str(original), float_model=str(rewritten))
        return info

    monkeypatch.setattr(kmodelrun, "read_kmodel_file", with_summary)
    opts = BoardTestOptions(port="x", kmodel=kmodel, float_model=original)
    assert compiled_float_model(opts, Reporter()) == original  # the rewritten model is gone: the one given
    rewritten.write_bytes(b"h5")
    assert compiled_float_model(opts, Reporter()) == rewritten
    other = tmp_path / "other.h5"
    other.write_bytes(b"h5")
    assert compiled_float_model(BoardTestOptions(port="x", kmodel=kmodel, float_model=other), Reporter()) == other
    assert testboard.resolve_options(opts, Reporter()).float_model == rewritten
