"""The full user path on the virtual board, with the demo MobileFaceNet.

convert the demo model -> render enroll and face_recognition -> flash the kmodels (k210tool flash, kflash)
-> enroll three synthetic identities through the camera (k210tool run) -> deploy main.py, which the board
runs at its reboot -> the right names in the printed log and in the LCD frames; then test-board on the
same board with the float model.

What this exercises is the pipeline, not face recognition quality. The detector is the demo detector (it
marks the photo held in front of a black background; it is no face detector). The demo MobileFaceNet has
seeded, untrained weights: same-identity cosines of its embeddings are weak unless the pictures are close,
so the enrolment photos are the identities' neutral renders (variation 0) and the probes vary slightly
(variation 0.03: small shifts, rotation, lighting and noise); measured with this model, same-identity
scores are about 0.45-0.75 and other identities below 0.25, hence ``--threshold 0.35``. An identity that
was not enrolled must come out unnamed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from k210tool.emulator.maixpy import Hardware, maix_registry
from k210tool.emulator.maixpy.demo_detector import anchor_for, build_demo_detector, demo_scene
from k210tool.emulator.maixpy.image import draw_text_pixels
from k210tool.emulator.maixpy.lcd import read_frames_log
from k210tool.emulator.server import Emulator
from k210tool.maixpy.applog import parse_app_log, read_face_db
from k210tool.maixpy.parity import rgb565_roundtrip
from k210tool.preprocess import load_image

PEOPLE = ["Alice", "Bob", "Zoë"]  # the demo scene's identities 100, 101, 102, in order


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", "k210tool", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, f"k210tool {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def _reboot_and_read(port: str, marker: bytes, timeout: float) -> str:
    """Soft-reset the board from its friendly prompt (it then runs boot.py and main.py) and read its output."""
    out = bytearray()
    end = time.monotonic() + timeout
    with serial.Serial(port, 115200, timeout=0.2) as link:
        link.write(b"\r\x04")
        while marker not in out and time.monotonic() < end:
            out += link.read(4096)
    return out.decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.mark.slow
def test_enrolled_synthetic_identities_are_recognised_by_the_generated_app(tmp_path: Path):
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
    from k210tool.commands.demo import make_demo

    # 1. the model: the demo MobileFaceNet (KPU form), converted for the Dock's CanMV release (kmodel v4)
    demo = make_demo(tmp_path / "demo", identities=2, per_identity=3, activation="relu", stride2_padding="symmetric")
    face = convert(ConvertOptions(model=demo.model, output=tmp_path / "face.kmodel",
                                  calibration=CalibrationOptions(source=str(demo.faces), count=6))).kmodel
    assert face.read_bytes()[:8] == b"LDMK\x04\x00\x00\x00"
    det = build_demo_detector(tmp_path / "det.kmodel", kmodel_version=4)

    # 2. the apps, as a user renders them
    anchors = " ".join(f"{a:.4f}" for a in anchor_for((112, 112), (320, 240)))
    common = ["--board", "maix_dock", "--model", str(face), "--detector", str(det), "--anchors", anchors]
    names = sum((["--names", n] for n in PEOPLE), [])
    _cli("script", "enroll", *common, *names, "--auto-enroll", "--shots", "1", "--frames", "3",
         "-o", str(tmp_path / "enroll.py"))
    _cli("script", "face_recognition", *common, "--threshold", "0.35", "--frames", "7", "-o", str(tmp_path / "main.py"))

    seeds = demo_scene(tmp_path / "camera", people=3, probes=2)  # 3 to enrol, 6 probes, 1 stranger
    expected = [PEOPLE[s - 100] if s is not None else None for s in seeds[3:]]
    hw = Hardware(camera=tmp_path / "camera", camera_end="stop", lcd_out=tmp_path / "lcd")
    with Emulator("maix_dock", fs_root=tmp_path / "board", modules=maix_registry(hw)) as emu:
        env = emu.client_env()
        # 3. kmodels into the flash over ISP (the detector goes right after the model, 64 KiB aligned)
        det_at = (0x300000 + face.stat().st_size + 0xFFFF) // 0x10000 * 0x10000  # where the scripts look for it
        _cli("flash", "-p", emu.port, "--board", "maix_dock", "--kmodel", f"{face}@0x300000",
             "--kmodel", f"{det}@{det_at:#x}", "-q", env=env)
        # 4. enrol: frames 1-3 of the camera
        enrolled = parse_app_log(_cli("run", "-p", emu.port, str(tmp_path / "enroll.py"), "--timeout", "120"))
        assert [e.name for e in enrolled if e.kind == "enrolled"] == list(PEOPLE)
        db = read_face_db((tmp_path / "board" / "flash" / "k210tool_faces.json").read_text())
        assert db.names == list(PEOPLE) and db.dim == 128
        # 5. deploy main.py; reset the board (Ctrl-D at its prompt), which runs main.py on frames 4-10
        _cli("deploy", "-p", emu.port, str(tmp_path / "main.py"), "--no-reboot", "-q")
        log = _reboot_and_read(emu.port, b"k210tool done", timeout=180)
        events = parse_app_log(log)
        faces = [e for e in events if e.kind == "face"]
        assert [e.name for e in faces] == expected, log
        assert all(float(e.fields["score"]) >= 0.35 for e in faces if e.name)
        assert all(e.fields["box"] == "104,63,112,112" for e in faces)  # the detector's box around the photo (104,64)

        # 6. the LCD: the recognition frames carry the name and score, drawn in green at the box
        shown = read_frames_log(tmp_path / "lcd")[3:]
        assert len(shown) == 7
        for record, event in zip(shown, faces, strict=True):
            (text,) = record["texts"]
            label = f"{event.name or '?'} {float(event.fields['score']):.2f}".replace("ë", "?")
            assert text["text"] == label
            png = load_image(tmp_path / "lcd" / record["file"])
            mask = draw_text_pixels(np.zeros(png.shape[:2], np.uint8), text["x"], text["y"], label, 255, 2)
            colour = (0, 255, 0) if event.name else tuple(rgb565_roundtrip(np.array([[255, 64, 64]], np.uint8))[0])
            assert tuple(text["color"]) == colour and (png[mask] == colour).all()

        # 7. test-board on the kmodel the board holds in flash, with the float model: exact against the simulator
        from k210tool.commands.testboard import BoardTestOptions, run_board_test

        res = run_board_test(BoardTestOptions(port=emu.port, kmodel=face, float_model=demo.model, data=demo.faces,
                                              max_inputs=2, exact=True, float_min_cosine=0.5, upload="skip",
                                              model_at="0x300000"))
        assert res.passed and res.identical == 2
        assert all(v.float_cosine is not None and 0.5 <= v.float_cosine < 1.0 for v in res.vectors)
