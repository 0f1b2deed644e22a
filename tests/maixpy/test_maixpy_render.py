"""Every template x every board x every MicroPython firmware renders, lints, compiles with the firmware's
mpy-cross, and uses no undefined name (ruff F821 on the generated code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from maixpy_factory import face_model, fake_kmodel, summary_dict

from k210tool.boards import all_boards, all_firmware, get_board
from k210tool.errors import FirmwareError, InputError
from k210tool.maixpy.models import parse_location
from k210tool.maixpy.render import ScriptOptions, list_templates, render_script
from k210tool.preprocess import Preprocess

MICROPYTHON_FW = [f.id for f in all_firmware().values() if f.micropython]
TEMPLATES = ["face_recognition", "enroll", "benchmark", "parity"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for v in (3, 4, 5):
        face_model(folder, v, f"face_v{v}", size=8192 + v)
        fake_kmodel(folder / f"det_v{v}.kmodel", v, size=4096)
    return folder


def _undefined_names(source: str) -> str:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed")
    proc = subprocess.run([str(ruff), "check", "--no-cache", "--isolated", "--select", "F821,F811,F823,E999",
                           "--stdin-filename", "board.py", "-"], input=source, capture_output=True, text=True)
    return "" if proc.returncode == 0 else proc.stdout


def _render(template: str, board: str, fw: str, models: Path, **kw):
    version = max(get_board(board, fw).firmware.kmodel_versions)
    return render_script(template, get_board(board, fw), model=models / f"face_v{version}.kmodel",
                         detector=models / f"det_v{min(version, 4)}.kmodel", names=["Alice", "Bob"], **kw)


def test_the_bundled_templates_are_listed() -> None:
    names = {t.name: t for t in list_templates()}
    assert set(TEMPLATES) <= set(names)
    assert names["enroll"].needs == ("model", "names") and names["enroll"].detector
    assert not names["parity"].detector


@pytest.mark.parametrize("fw", MICROPYTHON_FW)
@pytest.mark.parametrize("template", TEMPLATES)
def test_matrix(template: str, fw: str, models: Path) -> None:
    for board in sorted(all_boards()):
        result = _render(template, board, fw, models)
        assert result.kpu_api == get_board(board, fw).firmware.kpu_api
        assert result.mpy_size > 0 and result.source.isascii()
        assert _undefined_names(result.source) == "", f"{template} {board} {fw}"


@pytest.mark.parametrize("color, resize", [("BGR", "letterbox"), ("GRAY", "stretch")])
@pytest.mark.parametrize("fw", ["maixpy", "canmv", "canmv_v5"])
def test_preprocessing_variants_render(color: str, resize: str, fw: str, tmp_path) -> None:
    channels = 1 if color == "GRAY" else 3
    pre = Preprocess(height=96, width=112, channels=channels, color=color, resize=resize, mean=(0.0,), std=(255.0,))
    version = 5 if fw == "canmv_v5" else 4
    model = face_model(tmp_path, version, pre=pre, outputs=((1, 64, 1, 1),))
    fake_kmodel(tmp_path / "det.kmodel", 4)
    sources = {}
    for template in TEMPLATES:
        for auto in (False, True):
            r = render_script(template, get_board("maix_cube", fw), model=model, detector=tmp_path / "det.kmodel",
                              names=["A"], options=ScriptOptions(auto_enroll=auto, frames=5))
            assert _undefined_names(r.source) == ""
            sources[template] = r.source
    marker = "face = face.to_grayscale()" if color == "GRAY" else "face.draw_image(small"
    assert marker in sources["face_recognition"] and marker in sources["enroll"]


def test_detector_of_another_input_size_gets_a_resized_frame(tmp_path, models: Path) -> None:
    det = face_model(tmp_path, 4, "det", pre=Preprocess(height=120, width=160))
    r = render_script("face_recognition", get_board("maix_dock", "canmv"), model=models / "face_v4.kmodel",
                      detector=det)
    assert "small = img.resize(DET_W, DET_H)" in r.source and "DET_W = 160" in r.source
    assert _undefined_names(r.source) == ""


def test_v5_model_on_classic_maixpy_names_the_firmware_to_flash(models: Path) -> None:
    with pytest.raises(FirmwareError) as exc:
        render_script("benchmark", get_board("maix_go"), model=models / "face_v5.kmodel")
    text = str(exc.value)
    assert "v5" in text and "canmv_v5" in text and "feat/kpu" in text
    with pytest.raises(FirmwareError, match="v4"):
        render_script("benchmark", get_board("maix_go", "maixpy_minimum"), model=models / "face_v4.kmodel")


def test_detector_version_is_checked_too(models: Path) -> None:
    with pytest.raises(FirmwareError, match="v5"):
        render_script("face_recognition", get_board("maix_dock"), model=models / "face_v4.kmodel",
                      detector=models / "det_v5.kmodel")


def test_sdk_board_has_no_micropython(models: Path) -> None:
    with pytest.raises(FirmwareError) as exc:
        render_script("benchmark", get_board("kd233"), model=models / "face_v5.kmodel")
    assert "no MicroPython" in str(exc.value) and "--firmware" in str(exc.value)
    assert render_script("benchmark", get_board("kd233", "canmv_v5"), model=models / "face_v5.kmodel").lines > 0


@pytest.mark.parametrize("template, kwargs, message", [
    ("benchmark", {"model": None}, "--model"),
    ("enroll", {"names": []}, "--names"),
    ("enroll", {"names": ["A", "A"]}, "twice"),
    ("enroll", {"names": [" "]}, "empty"),
    ("nope", {}, "unknown template"),
])
def test_missing_inputs_are_clear(template: str, kwargs: dict, message: str, models: Path) -> None:
    args = {"model": models / "face_v4.kmodel", "detector": models / "det_v4.kmodel", "names": ["A"], **kwargs}
    with pytest.raises(InputError, match=message):
        render_script(template, get_board("maix_dock"), **args)


def test_default_placement_and_overlap(models: Path) -> None:
    dock = get_board("maix_dock")
    r = render_script("face_recognition", dock, model=models / "face_v4.kmodel", detector=models / "det_v4.kmodel")
    assert [p.location for p in r.placements] == ["flash 0x300000", "flash 0x310000"]
    assert "--kmodel" in r.next_steps[0] and "@0x300000" in r.next_steps[0]
    with pytest.raises(InputError, match="overlaps"):
        render_script("face_recognition", dock, model=models / "face_v4.kmodel", detector=models / "det_v4.kmodel",
                      detector_at=parse_location("0x301000"))
    r = render_script("face_recognition", dock, model=models / "face_v4.kmodel", detector=models / "det_v4.kmodel",
                      model_at=parse_location("/sd/face.kmodel"), detector_at=parse_location("/sd/det.kmodel"))
    assert 'MODEL_WHERE = "/sd/face.kmodel"' in r.source and 'DET_WHERE = "/sd/det.kmodel"' in r.source


def test_detector_already_on_the_board(models: Path) -> None:
    r = render_script("face_recognition", get_board("maix_dock"), model=models / "face_v4.kmodel")
    assert 'DET_WHERE = "/sd/face_detect.kmodel"' in r.source and "DET_SIZE = 0" in r.source
    assert r.warnings and "face_detect.kmodel" in r.warnings[0] and r.placements[1].size == 0
    r = render_script("enroll", get_board("maix_go"), model=models / "face_v4.kmodel", names=["A"],
                      detector_at=parse_location("0x600000"))
    assert "DET_WHERE = 0x600000" in r.source
    with pytest.raises(InputError, match="size"):  # CanMV releases load from flash only with a size
        render_script("enroll", get_board("maix_dock"), model=models / "face_v4.kmodel", names=["A"],
                      detector_at=parse_location("0x600000"))
    with pytest.raises(InputError, match="overlaps"):
        render_script("enroll", get_board("maix_go"), model=models / "face_v4.kmodel", names=["A"],
                      detector_at=parse_location("0x300100"))


def test_options_are_validated(models: Path) -> None:
    for bad in (ScriptOptions(threshold=2.0), ScriptOptions(shots=0), ScriptOptions(db_path="faces.json"),
                ScriptOptions(anchors=(1.0, 2.0, 3.0)), ScriptOptions(nms=1.5)):
        with pytest.raises(InputError):
            render_script("enroll", get_board("maix_dock"), model=models / "face_v4.kmodel",
                          detector=models / "det_v4.kmodel", names=["A"], options=bad)


def test_canmv_release_with_a_multi_output_model_warns(tmp_path) -> None:
    model = face_model(tmp_path, 4, outputs=((1, 128), (1, 10)))
    r = render_script("parity", get_board("maix_dock"), model=model)
    assert r.warnings and "output 0 only" in r.warnings[0]
    assert "MODEL_OUTPUT_SIZES = [128]" in r.source
    r = render_script("parity", get_board("maix_go"), model=model)
    assert not r.warnings and "MODEL_OUTPUT_SIZES = [128, 10]" in r.source


def test_summary_json_contents_reach_the_script(tmp_path) -> None:
    pre = Preprocess(height=64, width=80, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    model = face_model(tmp_path, 4, pre=pre)
    r = render_script("face_recognition", get_board("maix_dock"), model=model,
                      detector=fake_kmodel(tmp_path / "d.kmodel", 3))
    assert "IN_H = 64" in r.source and "IN_W = 80" in r.source
    assert json.dumps([1.0, 2.0, 3.0]) in r.source


def test_kmodels_the_firmware_cannot_load_are_refused_alone_and_together(tmp_path) -> None:
    """board_fit's verdict (convert's and the emulated firmware's): exactly enough memory renders; one byte
    less refuses; a detector the template loads beside the face model counts against the same memory."""
    import dataclasses
    import shutil

    from k210tool.compile.kmodel.footprint import board_fit
    from k210tool.errors import DoesNotFitError

    sample = Path(__file__).parents[1] / "kmodel" / "data" / "slim320_v4.kmodel"  # a real v4 (ncc 0.2) file
    model, det = tmp_path / "face.kmodel", tmp_path / "det.kmodel"
    for path in (model, det):
        shutil.copy(sample, path)
    (tmp_path / "face.kmodel.json").write_text(json.dumps(summary_dict(4, model.stat().st_size)))
    dock = get_board("maix_dock")
    need = board_fit(model.read_bytes(), dock.firmware).total

    def with_memory(n: int):
        return dataclasses.replace(dock, firmware=dataclasses.replace(dock.firmware, model_memory=n))

    render_script("parity", with_memory(need), model=model)
    with pytest.raises(DoesNotFitError, match="face.kmodel cannot load on maix_dock: needs .* 1 bytes too many"):
        render_script("parity", with_memory(need - 1), model=model)
    render_script("face_recognition", with_memory(2 * need), model=model, detector=det)
    with pytest.raises(DoesNotFitError, match="det.kmodel \\(loaded beside the other kmodel\\) cannot load"):
        render_script("face_recognition", with_memory(2 * need - 1), model=model, detector=det)
