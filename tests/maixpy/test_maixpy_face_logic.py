"""The on-board logic of face_recognition/enroll, executed in CPython: crop geometry equals the host's
Preprocess, the face store and the log lines round-trip through the host readers, matching works."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from maixpy_factory import HOSTILE, face_model, fake_kmodel
from maixpy_fakeboard import load_script

from k210tool.boards import get_board
from k210tool.maixpy.applog import FaceStore, parse_app_log, read_face_db, write_face_db
from k210tool.maixpy.render import ScriptOptions, render_script
from k210tool.preprocess import Preprocess, fit


def _script(tmp_path: Path, template: str = "enroll", pre: Preprocess | None = None, **opts) -> dict:
    model = face_model(tmp_path, 4, pre=pre, size=9999)
    det = fake_kmodel(tmp_path / "det.kmodel", 3)
    r = render_script(template, get_board("maix_dock"), model=model, detector=det, names=HOSTILE[:4],
                      options=ScriptOptions(db_path=str(tmp_path / "faces.json"), **opts))
    return load_script(r.source)


@pytest.mark.parametrize("hw", [(112, 112), (112, 96), (64, 80)])
def test_crop_geometry_equals_the_host_preprocess(hw: tuple[int, int], tmp_path: Path) -> None:
    h, w = hw
    pre = Preprocess(height=h, width=w)
    ns = _script(tmp_path, pre=pre)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    for _ in range(40):
        bw, bh = int(rng.integers(8, 200)), int(rng.integers(8, 200))
        x, y = int(rng.integers(0, 320 - bw)), int(rng.integers(0, 240 - bh))
        cx, cy, cw, ch = ns["crop_rect"]((x, y, bw, bh, 0.9), 320, 240)
        host = pre.prepare(frame[y:y + bh, x:x + bw])  # the host crops the face image to the aspect
        board = fit(frame[cy:cy + ch, cx:cx + cw], h, w, "stretch")  # the board cut that rectangle
        assert np.array_equal(host, board), (x, y, bw, bh)


def test_boxes_leaving_the_frame_are_clamped(tmp_path: Path) -> None:
    ns = _script(tmp_path)
    x, y, w, h = ns["crop_rect"]((-20, -10, 100, 60, 1.0), 320, 240)
    assert x >= 0 and y >= 0 and w == h and x + w <= 320 and y + h <= 240
    x, y, w, h = ns["crop_rect"]((300, 220, 100, 100, 1.0), 320, 240)
    assert x + w <= 320 and y + h <= 240 and w == h == 20
    assert ns["_signed"](0xFFFFFFF6) == -10 and ns["_signed"](5) == 5


def test_store_written_on_the_board_reads_on_the_host(tmp_path: Path) -> None:
    ns = _script(tmp_path)
    db = ns["new_db"]()
    rng = np.random.default_rng(1)
    shots = {name: [ns["l2_normalize"](list(rng.normal(size=128))) for _ in range(2)] for name in HOSTILE[:4]}
    for name, embs in shots.items():
        ns["store_person"](db, name, embs)
    ns["store_person"](db, HOSTILE[0], shots[HOSTILE[0]])  # enrolling again replaces, never duplicates
    ns["write_db"](ns["DB_PATH"], db)
    store = read_face_db((tmp_path / "faces.json").read_text())
    assert sorted(store.names) == sorted(HOSTILE[:4]) and store.dim == 128 and store.model_size == 9999
    assert np.allclose(store.embeddings[store.names.index(HOSTILE[2])], shots[HOSTILE[2]])
    assert not (tmp_path / "faces.json.tmp").exists()


def test_matching_on_a_host_written_store(tmp_path: Path) -> None:
    ns = _script(tmp_path, "face_recognition")
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 128)).astype(np.float32)
    names = ["Alice", "Bob\n", "Zoë"]
    store = FaceStore(128, 9999, names, [c + 0.1 * rng.normal(size=(3, 128)).astype(np.float32) for c in centres])
    (tmp_path / "faces.json").write_text(write_face_db(store))
    people = ns["centroids"](ns["read_db"](ns["DB_PATH"]))
    for i, c in enumerate(centres):
        name, score = ns["best_match"](people, ns["l2_normalize"](list(c)))
        assert name == names[i] and score > 0.9
    assert ns["best_match"]([], [1.0] * 128) == (None, -1.0)


def test_store_of_another_model_is_refused(tmp_path: Path) -> None:
    ns = _script(tmp_path, "face_recognition")
    (tmp_path / "faces.json").write_text(json.dumps({"format": "k210tool-faces", "dim": 64, "people": []}))
    with pytest.raises(ValueError, match="dim 64"):
        ns["read_db"](ns["DB_PATH"])


def test_log_lines_parse_back_with_any_name(tmp_path: Path) -> None:
    ns = _script(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print("MicroPython chatter")
        for name in HOSTILE:
            ns["log"]("face", "frame=3 score=0.8123 box=1,2,3,4", "name", name)
        ns["log"]("face", "frame=4 score=0.1000 box=5,6,7,8", "name", None)
        ns["log"]("done", "frames=4")
    events = parse_app_log(out.getvalue())
    assert [e.name for e in events[: len(HOSTILE)]] == HOSTILE
    assert events[len(HOSTILE)].name is None and events[len(HOSTILE)].fields["box"] == "5,6,7,8"
    assert events[-1].kind == "done" and events[-1].fields == {"frames": "4"}
