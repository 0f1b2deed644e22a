"""The issue's done-when, on the demo MobileFaceNet (112x112, the paper's network) as a user runs it:
demo -> convert (exact lowering, the default board's kmodel) -> compare with a verification .bin made here."""

from __future__ import annotations

import os
import pickle
import re

import pytest


@pytest.mark.slow
def test_converted_mobilefacenet_report_and_malicious_bin(tmp_path, run_cli) -> None:
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
    from k210tool.commands.demo import make_demo
    from k210tool.train.data.synthetic import write_verification_bin

    demo = make_demo(tmp_path / "demo", identities=4, per_identity=3)
    kmodel = tmp_path / "demo" / "mobilefacenet.kmodel"
    converted = convert(ConvertOptions(model=demo.model, output=kmodel,
                                       calibration=CalibrationOptions(str(demo.faces), count=8)))
    # the lowering is exact: the kmodel computes the original float model, no rewritten model is written
    assert converted.summary.float_model == str(demo.model)
    assert not (tmp_path / "demo" / "mobilefacenet.rewritten.h5").exists()
    ver = write_verification_bin(tmp_path / "synthetic.bin", first_seed=900, identities=6, pairs=20)

    report = tmp_path / "report"
    run = run_cli("compare", demo.model, kmodel, "--bin", ver, "--report", report, "--no-cache")
    assert run.code == 0, run.err[-3000:]
    lines = run.out.splitlines()
    title = next(i for i, ln in enumerate(lines) if ln.startswith("Face verification"))
    header = next(ln for ln in lines[title + 1:] if "┃" in ln)
    cols = [header.find(c) for c in ("float", "kmodel")]
    assert all(c > 0 for c in cols) and cols == sorted(cols) and "rewritten" not in header, header
    assert "kmodel vs float" in run.out
    cosine = next(ln for ln in lines if ln.startswith("│ cosine mean"))
    # random weights and slopes, calibrated on 8 synthetic faces (the real model gives 0.997: README)
    assert float(re.findall(r"\d\.\d+", cosine)[0]) > 0.95, cosine
    html = (report / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"roc.png", "cosine_histogram.png", "score_distributions.png"} <= set(images)
    assert all((report / name).stat().st_size > 1000 for name in images)

    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil = tmp_path / "lfw.bin"
    evil.write_bytes(pickle.dumps(([Boom(), b"x"], [True]), protocol=2))
    bad = run_cli("compare", demo.model, kmodel, "--bin", evil)
    assert bad.code == 2 and "not a safe verification .bin" in bad.err
    assert not (tmp_path / "PWNED").exists()
