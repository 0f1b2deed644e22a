"""`k210tool compare` as a user runs it: real TensorFlow, real nncase, the kmodel convert wrote."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from k210tool.preprocess import save_image
from k210tool.train.data.synthetic import identity_images

COLUMNS = ["original float", "rewritten float", "kmodel"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("float-cache")


def _table_header(out: str, title: str) -> str:
    """The header row of the rich table titled ``title`` in the printed output."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(title))
    return next(ln for ln in lines[start + 1:] if "┃" in ln)


def test_three_columns_and_the_html_report(workspace, tmp_path, shared_cache, run_cli) -> None:
    report = tmp_path / "report"
    run = run_cli("compare", workspace.original, workspace.kmodel, "--bin", workspace.bin, "--report", report,
                  "--cache-dir", shared_cache)
    assert run.code == 0, run.err[-3000:]
    header = _table_header(run.out, "Face verification")
    positions = [header.find(c) for c in COLUMNS]
    assert all(p > 0 for p in positions) and positions == sorted(positions), header
    assert "kmodel vs rewritten float" in run.out and "rewritten float vs original float" in run.out
    assert "TAR @ FAR=0.001" in run.out and "accuracy (10-fold)" in run.out

    html = (report / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert set(images) == {"roc.png", "cosine_histogram.png", "score_distributions.png"}
    for name in images:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in images:
        assert f"]({name})" in (report / "report.md").read_text()
    doc = json.loads((report / "report.json").read_text())
    assert doc["columns"] == COLUMNS and list(doc["verification"]) == COLUMNS
    assert doc["data"]["pairs"] == 24 and len(doc["per_pair"]["issame"]) == 24
    assert set(doc["per_pair"]["scores"]) == set(COLUMNS)
    assert {f"{f['test']} vs {f['reference']}" for f in doc["fidelity"]} == {
        "kmodel vs rewritten float", "rewritten float vs original float", "kmodel vs original float"}
    main = next(f for f in doc["fidelity"] if f["test"] == "kmodel" and f["reference"] == "rewritten float")
    assert len(doc["per_image_cosine"]["kmodel vs rewritten float"]) == main["images"] == 48
    assert 0.9 < main["cosine_mean"] <= 1.0 and main["cosine_min"] <= main["cosine_p1"] <= main["cosine_mean"]


def test_explicit_original_with_identity_folders(workspace, shared_cache, run_cli) -> None:
    run = run_cli("compare", workspace.rewritten, workspace.kmodel, "--original", workspace.original,
                  "--data", workspace.faces, "--repeat", "3", "--json", "--cache-dir", shared_cache, "--workers", "2")
    assert run.code == 0, run.err[-3000:]
    r = json.loads(run.out)
    assert r["columns"] == COLUMNS and r["original"] == str(workspace.original)
    assert r["data"]["identities"] == 8 and r["data"]["pairs"] == 2 * 8 * 3
    assert list(r["identification"]) == COLUMNS
    for col in COLUMNS:
        ident = r["identification"][col]
        assert (ident["identities"], ident["gallery_images"], ident["probes"]) == (8, 16, 16)
        assert ident["correct"] == round(ident["top1"] * 16)
    assert "per_image_cosine" not in r  # stdout JSON keeps the figures; the arrays are in report.json


def test_model_and_original_as_one_file_is_warned(workspace, shared_cache, run_cli) -> None:
    """Issue 17: `--original` naming MODEL itself compared a model with itself, silently."""
    run = run_cli("compare", workspace.original, workspace.kmodel, "--original", workspace.original, "--random", "4",
                  "--cache-dir", shared_cache)
    assert run.code == 0, run.err[-3000:]
    assert "MODEL and --original are one file" in run.err
    fine = run_cli("compare", workspace.rewritten, workspace.kmodel, "--original", workspace.original, "--random", "4",
                   "--cache-dir", shared_cache)
    assert fine.code == 0 and "one file" not in fine.err, fine.err[-3000:]


def test_gates_set_the_exit_code_and_the_report_is_still_written(workspace, tmp_path, shared_cache,
                                                                 run_cli) -> None:
    base = ["compare", workspace.original, workspace.kmodel, "--bin", workspace.bin, "--cache-dir", shared_cache,
            "--workers", "1"]
    first = run_cli(*base, "--json", "--min-cosine", "-1", "--max-acc-drop", "100")  # gates that pass
    assert first.code == 0, first.err[-3000:]
    r = json.loads(first.out)
    assert [(g["gate"], g["passed"]) for g in r["gates"]] == [("min-cosine", True), ("max-acc-drop", True)]
    cosine = next(f["cosine_mean"] for f in r["fidelity"] if f["reference"] == "rewritten float")
    drop = 100 * (r["verification"]["original float"]["accuracy"] - r["verification"]["kmodel"]["accuracy"])
    assert r["gates"][0]["value"] == pytest.approx(cosine) and r["gates"][1]["value"] == pytest.approx(drop)

    report = tmp_path / "gated"
    bad_cos = run_cli(*base, "--min-cosine", f"{min(cosine + 1e-4, 1.0):.6f}", "--report", report)
    assert_one_line_error(bad_cos, "--min-cosine", "kmodel vs rewritten float", code=4)
    assert "FAIL" in bad_cos.out  # the figures are printed too
    assert "GATE FAILED" in (report / "report.html").read_text()
    assert json.loads((report / "report.json").read_text())["gates"][0]["passed"] is False

    bad_drop = run_cli(*base, "--max-acc-drop", f"{drop - 0.01:.4f}", "--json")
    assert_one_line_error(bad_drop, "--max-acc-drop", code=4)
    gates = json.loads(bad_drop.out)["gates"]  # one JSON document on stdout, with the failed gate
    assert gates[0]["gate"] == "max-acc-drop" and gates[0]["passed"] is False


def test_malicious_bin_runs_nothing(workspace, tmp_path, run_cli, monkeypatch) -> None:
    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil = tmp_path / "lfw.bin"
    evil.write_bytes(pickle.dumps(([Boom(), b"x"], [True]), protocol=2))
    monkeypatch.chdir(tmp_path)
    run = run_cli("compare", workspace.original, workspace.kmodel, "--bin", evil, "--report", tmp_path / "r")
    assert_one_line_error(run, "not a safe verification .bin", "posix.system")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "r").exists()
    assert "load model" not in run.err  # refused before any model was loaded


def test_bad_inputs_are_one_line_errors(workspace, tmp_path, run_cli) -> None:
    km = workspace.kmodel
    assert_one_line_error(run_cli("compare", workspace.other_size, km, "--random", 2, "--no-cache"),
                    "kmodel takes 32x32x3", "48x48x3")
    broken = tmp_path / "broken.kmodel"
    broken.write_bytes(km.read_bytes()[:3000])
    assert_one_line_error(run_cli("compare", workspace.original, broken, "--random", 2), "kmodel")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("compare", workspace.original, km, "--data", tmp_path / "empty"), "no images")
    assert_one_line_error(run_cli("compare", workspace.original, km), "no images to compare", "--data")
    assert_one_line_error(run_cli("compare", workspace.original, km, "--random", 2, "--bin", workspace.bin), "one image source")
    assert_one_line_error(run_cli("compare", workspace.original, workspace.kmodel_v4, "--random", 2, "--engine", "nncase"),
                    "v5 only", "--engine numpy")
    assert_one_line_error(run_cli("compare", workspace.original, km, "--random", 2, "--max-acc-drop", 1), "pairs")


def test_undecodable_images_are_skipped_and_counted(workspace, tmp_path, shared_cache, run_cli) -> None:
    data = tmp_path / "faces"
    for ident in ("id_0100", "id_0101", "id_0102"):
        shutil.copytree(workspace.faces / ident, data / ident)
    (data / "id_0101" / "truncated.png").write_bytes((data / "id_0101" / "000.png").read_bytes()[:100])
    run = run_cli("compare", workspace.original, workspace.kmodel_v4, "--data", data, "--json", "--cache-dir",
                  shared_cache)
    assert run.code == 0, run.err[-3000:]
    r = json.loads(run.out)
    assert r["data"]["skipped_images"] == 1 and r["data"]["images"] == 12
    assert any("skipped 1 image" in w for w in r["warnings"])
    assert r["engine"] == "numpy" and r["kmodel_version"] == 4
    assert r["float_cache"]["original float"]["computed"] + r["float_cache"]["original float"]["cached"] == 12


def test_lfw_pairs_file_with_its_image_folder(workspace, tmp_path, shared_cache, run_cli) -> None:
    lfw = tmp_path / "lfw"
    people = [f"Person_{i}" for i in range(6)]
    for i, person in enumerate(people):
        (lfw / person).mkdir(parents=True)
        for n, img in enumerate(identity_images(700 + i, 3, 32), start=1):
            save_image(lfw / person / f"{person}_{n:04d}.jpg", img)
    lines = ["1 12"]
    used = set()
    for i, person in enumerate(people):
        lines.append(f"{person} 1 {2 + i % 2}")
        lines.append(f"{person} 3 {people[(i + 1) % 6]} 1")
        used |= {(person, 1), (person, 2 + i % 2), (person, 3)}
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    run = run_cli("compare", workspace.original, workspace.kmodel, "--pairs", pairs, "--data", lfw, "--json",
                  "--cache-dir", shared_cache, "--engine", "nncase")
    assert run.code == 0, run.err[-3000:]
    r = json.loads(run.out)
    assert r["data"]["kind"] == "lfw" and r["data"]["pairs"] == 12
    assert r["data"]["images"] == len(used) == 15  # an image in several pairs runs once
    assert r["engine"] == "nncase" and r["verification"]["kmodel"]["genuine"] == 6
