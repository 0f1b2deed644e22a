"""The virtual board's hardware, driven over its serial port: camera, LCD, button, and the KPU of each
firmware flavour with real kmodels, the firmware's version check and memory limit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from hil_support import run_on

from k210tool.boards import get_board
from k210tool.emulator.maixpy import Hardware, maix_registry
from k210tool.emulator.maixpy.lcd import read_frames_log
from k210tool.emulator.server import Emulator
from k210tool.maixpy import parity
from k210tool.preprocess import load_image, save_image

SAMPLE_V3 = Path(__file__).parents[1] / "kmodel" / "data" / "yolo_v3.kmodel"
CAMERA_LCD = """
import sensor, lcd
lcd.init(width=320, height=240)
sensor.reset()
sensor.set_pixformat(sensor.RGB565)
sensor.set_framesize(sensor.QVGA)
sensor.set_hmirror(%s)
for i in range(%d):
    img = sensor.snapshot()
    img.draw_string(4, 4, "frame %%d" %% i, color=(255, 255, 0), scale=2)
    lcd.display(img)
print("shown", img.width(), img.height())
"""


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(n)]


def test_camera_folder_to_lcd_pngs(board, tmp_path: Path):
    frames = _frames(3)
    (tmp_path / "cam").mkdir()
    for i, f in enumerate(frames):
        save_image(tmp_path / "cam" / f"{i}.png", f)
    emu, hw = board(camera=tmp_path / "cam", lcd_out=tmp_path / "lcd")
    out, tb = run_on(emu, CAMERA_LCD % ("False", 3))
    assert tb == "" and "shown 320 240" in out
    log = read_frames_log(tmp_path / "lcd")
    assert [r["texts"][0]["text"] for r in log] == ["frame 0", "frame 1", "frame 2"]
    shown = load_image(tmp_path / "lcd" / log[1]["file"])
    expected = parity.rgb565_roundtrip(frames[1])
    untouched = np.ones((240, 320), bool)
    untouched[:40, :] = False  # the text
    assert np.array_equal(shown[untouched], expected[untouched])


def test_camera_mirror_other_than_the_boards_flips_and_the_end_of_frames_stops_the_script(board, tmp_path):
    frames = _frames(2, seed=1)
    emu, hw = board(camera=frames, camera_end="stop", lcd_out=tmp_path / "lcd")
    out, tb = run_on(emu, CAMERA_LCD % ("True", 3))  # the Dock's camera is not mirrored: True flips it
    assert tb.strip().endswith("OSError: sensor: no more frames in arrays")
    shown = load_image(tmp_path / "lcd" / "frame_00002.png")
    assert np.array_equal(shown[60:], parity.rgb565_roundtrip(frames[1])[60:, ::-1])
    assert hw.lcd.frames == 2


def test_camera_reads_a_video_file(board, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    for c in colours:
        writer.write(np.full((120, 160, 3), c[::-1], np.uint8))  # OpenCV writes BGR
    writer.release()
    emu, hw = board(camera=video, lcd_out=tmp_path / "lcd")
    out, tb = run_on(emu, CAMERA_LCD % ("False", 4))
    assert tb == ""
    means = [load_image(tmp_path / "lcd" / r["file"])[100:].reshape(-1, 3).mean(0) for r in read_frames_log(tmp_path / "lcd")]
    for got, want in zip(means, colours + colours[:1], strict=True):  # the fourth snapshot starts the clip again
        assert np.abs(got - np.array(want)).max() < 12


def test_button_presses_reach_the_scripts_interrupt_handler(board):
    emu, hw = board(camera=_frames(1), button_presses={2, 4})
    src = """
import sensor
from fpioa_manager import fm
from maix import GPIO
seen = []
fm.register(16, fm.fpioa.GPIOHS0)
key = GPIO(GPIO.GPIOHS0, GPIO.IN, GPIO.PULL_UP)
key.irq(lambda pin: seen.append(frame), GPIO.IRQ_FALLING)
sensor.reset()
for frame in range(1, 6):
    sensor.snapshot()
print("pressed at", seen, key.value())
"""
    out, tb = run_on(emu, src)
    assert tb == "" and "pressed at [2, 4] 1" in out
    assert hw.pins.presses == 2


def _load_script(api: str, where: str, size: int = 0) -> str:
    if api == "maixpy":
        return f"import KPU as kpu\nt = kpu.load({where})\nprint('loaded', t.model_size())\n"
    if api == "canmv":
        call = f"net.load_kmodel({where}, {size})" if size else f"net.load_kmodel({where})"
        return f"from maix import KPU\nnet = KPU()\n{call}\nprint('loaded')\n"
    return f"from maix import KPU\nnet = KPU()\nnet.load({where}, size={size})\nprint('loaded')\n"


def _put(emu: Emulator, path: Path, name: str) -> str:
    dest = emu.fs_root / "sd" / name
    dest.write_bytes(path.read_bytes())
    return f"'/sd/{name}'"


@pytest.mark.parametrize("firmware, version, error", [
    ("canmv", 5, "OSError: Failed to init model"),
    ("maixpy", 5, "ValueError: [MAIXPY]kpu: load error:2002, ERR_KMODEL_VERSION: only support kmodel V3/V4 now"),
    ("maixpy_minimum", 4, "ValueError: [MAIXPY]kpu: load error:2002, ERR_KMODEL_VERSION: only support kmodel V3"),
    ("canmv", 4, None),
    ("maixpy", 4, None),
    ("canmv_v5", 5, None),
])
def test_the_firmwares_kmodel_version_check(board, models, firmware, version, error):
    emu, _hw = board(firmware)
    where = _put(emu, models.path("face", version), "face.kmodel")
    out, tb = run_on(emu, _load_script(get_board("maix_dock", firmware).firmware.kpu_api, where))
    if error is None:
        assert tb == "" and "loaded" in out
    else:
        assert tb.strip().splitlines()[-1] == error and "loaded" not in out


@pytest.mark.parametrize("firmware, error", [
    ("canmv", "OSError: Failed to init model"),
    ("canmv_v5", "OSError: Failed to load model"),
    ("maixpy", "ValueError: [MAIXPY]kpu: load error:2006, ERR_NO_MEM: memory not enough"),
])
def test_a_model_whose_nncase_total_exceeds_the_boards_memory_does_not_load(board, models, firmware, error):
    emu, hw = board(firmware)
    version = 5 if firmware == "canmv_v5" else 4
    where = _put(emu, models.path("big", version), "big.kmodel")  # a 1.5 KB file needing 4.8 MB of RAM
    out, tb = run_on(emu, _load_script(get_board("maix_dock", firmware).firmware.kpu_api, where))
    assert tb.strip().splitlines()[-1] == error
    assert hw.loader.loads == 0


def test_loaded_models_hold_memory_until_deinit(board, models):
    model = models.path("face", 4)
    emu, hw = board("canmv")
    where = _put(emu, model, "face.kmodel")
    src = f"""
from maix import KPU, utils
free0 = utils.heap_free()
a = KPU(); a.load_kmodel({where})
b = KPU(); b.load_kmodel({where})
free2 = utils.heap_free()
a.deinit(); b.deinit()
print("used", free0 - free2, "back", utils.heap_free() == free0)
"""
    out, tb = run_on(emu, src)
    from k210tool.compile.kmodel.footprint import board_fit

    one = board_fit(model.read_bytes(), get_board("maix_dock", "canmv").firmware).total
    assert tb == "" and f"used {2 * one} back True" in out


def test_a_model_file_larger_than_the_free_ram_fails_at_the_buffer(models, tmp_path):
    base = get_board("maix_dock", "canmv")
    tiny_ram = dataclasses.replace(base, firmware=dataclasses.replace(base.firmware, model_memory=4096))
    with Emulator(tiny_ram, fs_root=tmp_path / "fs", modules=maix_registry(Hardware())) as emu:
        face = models.path("face", 4)
        assert face.stat().st_size > 4096
        where = _put(emu, face, "face.kmodel")
        out, tb = run_on(emu, _load_script("canmv", where))
    assert tb.strip().endswith("MemoryError: model buffer memory allocation failed")
    assert f"model size {face.stat().st_size} " in out  # the firmware prints the size before it allocates


def test_a_v3_kmodel_is_refused_by_the_emulator_not_by_the_firmware(board):
    emu, _hw = board("maixpy")
    where = _put(emu, SAMPLE_V3, "yolo.kmodel")
    _out, tb = run_on(emu, _load_script("maixpy", where))
    assert "virtual board cannot run kmodel v3" in tb and "ERR_KMODEL" not in tb


@pytest.mark.parametrize("firmware", ["canmv", "maixpy", "canmv_v5"])
def test_kpu_from_flash_runs_the_real_model_bit_exactly(board, models, firmware):
    api = get_board("maix_dock", firmware).firmware.kpu_api
    version = 5 if api == "canmv_v5" else 4
    data = models.path("face", version).read_bytes()
    emu, _hw = board(firmware)
    emu.flash.write(0x300000, data)
    hwc = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fed = parity.board_inputs(hwc[None], api)
    if api == "canmv":
        (emu.fs_root / "sd" / "in.bin").write_bytes(parity.input_file_bytes(fed[0]))
        run = "out = net.run_with_output('/sd/in.bin', getlist=True)"
    else:
        run = ("img = image.Image(size=(32, 32))\n"
               "for y in range(32):\n    for x in range(32):\n        img.set_pixel(x, y, PIX[y][x])\n"
               "img.pix_to_ai()\n"
               + ("out = kpu.forward(t, img)[:]" if api == "maixpy" else "net.run(img)\nout = net.get_outputs(0)"))
    load = _load_script(api, "0x300000", len(data) if api != "maixpy" else 0)
    if api == "maixpy":
        load += "kpu.set_outputs(t, 0, 1, 1, 128)\n"
    src = (f"import image, ustruct, ubinascii\nPIX = {[[tuple(map(int, p)) for p in row] for row in fed[0]]}\n"
           f"{load}{run}\nprint('OUT', ubinascii.hexlify(ustruct.pack('<%df' % len(out), *out)).decode())\n")
    out, tb = run_on(emu, src)
    assert tb == "", tb
    got = np.frombuffer(bytes.fromhex(out.split("OUT ")[1].split()[0]), "<f4")
    from k210tool.commands.testboard import reference_engine

    engine, _name = reference_engine(data, version, "auto")
    assert got.tobytes() == engine.run(fed)[0].ravel().tobytes()


def test_v5_api_refuses_an_image_of_another_size(board, models):
    emu, _hw = board("canmv_v5")
    where = _put(emu, models.path("face", 5), "face.kmodel")
    src = _load_script("canmv_v5", where) + "import image\nimg = image.Image(size=(40, 32))\nimg.pix_to_ai()\nnet.run(img)\n"
    out, tb = run_on(emu, src)
    assert "model input 32x32 but image is 32x40" in out
    assert tb.strip().endswith("OSError: [Errno 34] ERANGE")
