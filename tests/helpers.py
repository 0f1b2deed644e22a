"""Test helpers: run the real CLI entry point in-process and capture what a user would see."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class CliRun:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliRun:
    from k210tool.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err)


def assert_one_line_error(run: CliRun, *needles: str, code: int = 2) -> None:
    assert run.code == code, (run.code, run.err)
    lines = [ln for ln in run.err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("k210tool: error:")]
    assert len(errors) == 1, run.err
    assert "Traceback" not in run.err
    for n in needles:
        assert n.lower() in errors[0].lower(), (n, errors[0])


def assert_v4_stores_nothing_twice(v5: bytes, v4: bytes) -> None:
    """The transcoded v4 file carries no byte the v5 file does not: apart from the containers' own headers
    (v5: model, module, function and section headers, mempool descriptors; v4: its header, input/output
    ranges and shapes, node headers), v4 is no larger. A constant stored both in an op and in the constants
    section (issue 18: a 2 MB dense layer twice) breaks this."""
    from k210tool.compile.kmodel import read_kmodel

    m5, m4 = read_kmodel(v5).v5, read_kmodel(v4).v4
    assert m5 is not None and m4 is not None
    payload5 = sum(s.body_size for mod in m5.modules for s in mod.sections)
    payload4 = len(m4.constants) + sum(n.body_size for n in m4.nodes)
    header5, header4 = len(v5) - payload5, len(v4) - payload4
    assert 0 < header4 and 0 < header5
    assert len(v4) <= len(v5) + (header4 - header5), (len(v4), len(v5), header4, header5)
