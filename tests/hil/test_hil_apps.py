"""Generated apps other than parity on the virtual board, with small real models: the benchmark, enroll
taking its shots on button presses, and face_recognition on the feat/kpu API (kmodel v5)."""

from __future__ import annotations

import numpy as np
import pytest
from hil_support import run_on

from k210tool.boards import get_board
from k210tool.compile.kmodel.footprint import board_fit
from k210tool.emulator.maixpy.demo_detector import anchor_for
from k210tool.maixpy.applog import parse_app_log, read_face_db
from k210tool.maixpy.render import ScriptOptions, render_script
from k210tool.train.data.synthetic import identity_images

ANCHORS = anchor_for((112, 112), (320, 240))


@pytest.mark.parametrize("firmware, version", [("canmv", 4), ("maixpy", 4), ("canmv_v5", 5)])
def test_benchmark_reports_runs_and_the_memory_the_model_holds(board, models, firmware, version):
    path = models.path("face", version)
    script = render_script("benchmark", get_board("maix_dock", firmware), model=path,
                           options=ScriptOptions(iterations=3)).source
    emu, _hw = board(firmware)
    emu.flash.write(0x300000, path.read_bytes())
    out, tb = run_on(emu, script)
    assert tb == "", tb
    (bench,) = [e for e in parse_app_log(out) if e.kind == "bench"]
    f = bench.fields
    assert f["runs"] == "3" and float(f["mean_ms"]) > 0 and float(f["min_ms"]) <= float(f["max_ms"])
    total = board_fit(path.read_bytes(), get_board("maix_dock", firmware).firmware).total
    assert int(f["heap_free_before"]) - int(f["heap_free"]) == total  # measured while the model is loaded


def _frames(people: list[int], shots: int) -> list[np.ndarray]:
    frames = []
    for seed in people:
        for photo in identity_images(seed, shots, variation=0.0, image_seed=1):
            frame = np.zeros((240, 320, 3), np.uint8)
            frame[64:176, 104:216] = photo
            frames.append(frame)
    return frames


def _flash_placements(emu, rendered, face, det) -> None:
    """Write the kmodels where the rendered script expects them (what `k210tool flash` would do)."""
    for placement in rendered.placements:
        address = int(placement.location.split()[-1], 16)
        emu.flash.write(address, (face if placement.what == "model" else det).read_bytes())


def test_enroll_takes_shots_only_when_the_button_is_pressed(board, models):
    face, det = models.path("face", 4), models.path("detector", 4)
    script = render_script("enroll", get_board("maix_dock"), model=face, detector=det, names=["Ann", "Ben"],
                           options=ScriptOptions(shots=2, frames=8, anchors=ANCHORS))
    # frame i shows person i // 4; the button is pressed at frames 2, 3 (Ann) and 5, 8 (Ben)
    frames = [f for f in _frames([11, 12], 1) for _ in range(4)]
    emu, hw = board("canmv", camera=frames, button_presses={2, 3, 5, 8})
    _flash_placements(emu, script, face, det)
    out, tb = run_on(emu, script.source)
    assert tb == "", tb
    shots = [e for e in parse_app_log(out) if e.kind == "enrolled"]
    assert [(e.name, e.fields["shot"]) for e in shots] == [("Ann", "1/2"), ("Ann", "2/2"), ("Ben", "1/2"), ("Ben", "2/2")]
    db = read_face_db((emu.fs_root / "flash" / "k210tool_faces.json").read_text())
    assert db.names == ["Ann", "Ben"] and db.dim == 128
    # the two shots of a person are the same photo: equal embeddings; the two people differ
    ann, ben = db.embeddings
    assert np.allclose(ann[0], ann[1]) and not np.allclose(ann[0], ben[0])
    assert hw.camera_for(emu.board.context).snapshots == 8


def test_face_recognition_on_the_feat_kpu_api(board, models, tmp_path):
    face, det = models.path("face", 5), models.path("detector", 5)
    b = get_board("maix_dock", "canmv_v5")
    common = {"model": face, "detector": det}
    enroll = render_script("enroll", b, names=["Ann", "Ben"], options=ScriptOptions(
        shots=1, frames=2, auto_enroll=True, anchors=ANCHORS), **common)
    recognise = render_script("face_recognition", b, options=ScriptOptions(frames=3, anchors=ANCHORS,
                                                                              threshold=0.9), **common)
    frames = _frames([21, 22], 1) + _frames([22, 21], 1) + [np.zeros((240, 320, 3), np.uint8)]
    emu, _hw = board("canmv_v5", camera=frames, camera_end="stop", lcd_out=tmp_path / "lcd")
    _flash_placements(emu, enroll, face, det)
    out, tb = run_on(emu, enroll.source)
    assert tb == "" and "k210tool done people=2" in out
    out, tb = run_on(emu, recognise.source)
    assert tb == "", tb
    events = parse_app_log(out)
    # the same photos as enrolled (the tiny model sees them resized to 32x32): named; the empty frame: no face
    assert [(e.fields["frame"], e.name) for e in events if e.kind == "face"] == [("1", "Ben"), ("2", "Ann")]
    assert [e.fields.get("frames") for e in events if e.kind == "done"] == ["3"]
