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


def assert_v4_stores_nothing_twice(v5: bytes, v4: bytes) -> None:
    """The transcoded v4 file is no larger than the v5 file plus the difference of the two containers: their
    headers, op encodings and alignment - everything but the constants they store (KPU weights, batch-norm and
    activation tables; the CPU ops' constant tensors). So v4 stores no constant byte v5 does not: a constant
    kept both inside an op and in the constants section (issue 18: a 2 MB dense layer, twice) breaks this.

    Measured on the files, not assumed: the files themselves may differ either way (v4 inlines each KPU layer's
    tables 256-aligned in its body: on a real MobileFaceNet of 803 KPU layers v4 is 51 KB larger than v5 with
    nothing twice), and v4 needs a 4-byte constant (8 with its alignment) for a scalar operand that v5 encodes
    in its code (a clamp's bound): those scalars are allowed for."""
    from k210tool.compile.kmodel import read_kmodel

    (stored5, _), (stored4, scalars4) = constant_bytes(read_kmodel(v5)), constant_bytes(read_kmodel(v4))
    container5, container4 = len(v5) - stored5, len(v4) - stored4
    assert stored4 > 0 and container4 > 0 and container5 > 0
    assert len(v4) <= len(v5) + (container4 - container5) + 8 * scalars4, (len(v4), len(v5), container4, container5)


def constant_bytes(km: object) -> tuple[int, int]:
    """(bytes of constants a kmodel stores, scalar constants among them): its KPU layers' weights and tables,
    the CPU ops' constant tensors (v5: each range of .rdata once; v4: the arrays inside ops, and the whole
    constants section - referenced or not)."""
    import numpy as np

    from k210tool.compile.kmodel.model import KpuConv

    m4, m5 = km.v4, km.v5  # type: ignore[attr-defined]
    ops = [n.op for n in m4.nodes] if m4 is not None else [op for m in m5.modules for f in m.functions for op in f.ops]
    total = sum(op.weights.nbytes + op.batch_norm.words.nbytes + op.activation.words.nbytes
                + len(op.activation.bias) for op in ops if isinstance(op, KpuConv))
    ranges = set()
    for layer in km.layers:  # type: ignore[attr-defined]
        for arg in layer.args.values() if layer.placement == "CPU" else ():
            if isinstance(arg, dict) and arg.get("memory") in ("rdata", "const"):
                ranges.add((arg["start"], arg["size"]))
            elif isinstance(arg, dict) and "array" in arg:
                total += int(arg["length"]) * np.dtype(arg["array"]).itemsize
    scalars = sum(1 for _start, size in ranges if size <= 4)
    if m4 is not None:
        return total + len(m4.constants), scalars
    return total + sum(size for _start, size in ranges), scalars
