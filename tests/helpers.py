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


def as_from_a_terminal() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT, as Ctrl-C in a terminal would. A child
    inherits its parent's SIGINT disposition, and a test worker's need not be a terminal's (when SIGINT is
    ignored, Python never raises KeyboardInterrupt): give the child the default one. (Both SIGINT tests
    failed once, only in a full parallel run.)"""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kmodel_cosines(kmodel: bytes, model: object, pre: object, images: object) -> object:
    """Per image: the cosine between what ``kmodel`` computes (k210tool's interpreter) on uint8 ``images`` and
    what the float Keras ``model`` computes on them, normalized by ``pre``."""
    import numpy as np

    from k210tool.sim.interp import NumpyEngine

    ours = NumpyEngine(kmodel).run(images)[0].reshape(len(images), -1)  # type: ignore[arg-type]
    ref = np.asarray(model(pre.normalize(images), training=False)).reshape(len(images), -1)  # type: ignore[operator,attr-defined]
    return (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
