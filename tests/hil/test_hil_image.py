"""The image shim against the firmware's pixel rules and k210tool's own host-side helpers."""

from __future__ import annotations

import cv2
import numpy as np

from k210tool.emulator.maixpy.image import Image, ascii_only, draw_text_pixels
from k210tool.maixpy import parity


def _rgb(seed: int = 0, h: int = 24, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_camera_pixels_are_rgb565_as_the_host_models_them():
    rgb = _rgb()
    img = Image.from_rgb(rgb)
    assert np.array_equal(img.pixels, parity.rgb565_roundtrip(rgb))
    # 5/6/5 bits: at most 32 red levels
    assert len(np.unique(img.pixels[..., 0])) <= 32 < len(np.unique(rgb[..., 0]))


def test_set_pixel_then_pix_to_ai_gives_the_planar_buffer_the_parity_host_expects():
    hwc = _rgb(1, 8, 8)
    img = Image.blank(8, 8)
    for y in range(8):
        for x in range(8):
            img.set_pixel(x, y, tuple(int(v) for v in hwc[y, x]))
    img.pix_to_ai()
    fed = parity.board_inputs(hwc[None], "canmv_v5")[0]
    assert img.pix_ai.tobytes() == parity.input_file_bytes(fed)
    assert img.get_pixel(3, 4) == tuple(int(v) for v in fed[4, 3])
    assert img.get_pixel(8, 0) is None


def test_grayscale_image_feeds_one_plane_unchanged():
    img = Image.from_rgb(_rgb(2), grayscale=True)
    img.set_pixel(0, 0, 77)
    img.pix_to_ai()
    assert img.pix_ai.shape == (1, 24, 40) and img.pix_ai[0, 0, 0] == 77
    assert img.to_grayscale().get_pixel(0, 0) == 77


def test_resize_is_nearest_when_shrinking_and_bilinear_when_enlarging():
    img = Image.from_rgb(_rgb(3))
    small = img.resize(20, 12)
    assert np.array_equal(small.pixels, cv2.resize(img.pixels, (20, 12), interpolation=cv2.INTER_NEAREST))
    big = img.resize(80, 48)
    bilinear = parity.rgb565_roundtrip(cv2.resize(img.pixels, (80, 48), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(big.pixels, bilinear)


def test_cut_clips_to_the_image_and_refuses_empty_regions():
    img = Image.from_rgb(_rgb(4))
    part = img.cut(30, 20, 50, 50)
    assert (part.width(), part.height()) == (10, 4)
    assert np.array_equal(part.pixels, img.pixels[20:24, 30:40])
    try:
        img.cut(100, 100, 5, 5)
    except ValueError:
        pass
    else:
        raise AssertionError("a region outside the image must raise")


def test_draw_string_draws_the_ascii_text_in_its_colour_and_records_it():
    img = Image.blank(160, 40)
    img.draw_string(4, 6, "Zoë 0.91", color=(0, 255, 0), scale=2)
    assert img.texts[0].text == "Zo? 0.91" == ascii_only("Zoë 0.91")
    mask = np.zeros((40, 160), np.uint8)
    draw_text_pixels(mask, 4, 6, "Zo? 0.91", 255, 2)
    assert mask.any()
    assert (img.pixels[mask > 0] == (0, 255, 0)).all()
    assert not img.pixels[mask == 0].any()


def test_draw_rectangle_outline_and_fill():
    img = Image.blank(20, 20)
    img.draw_rectangle(2, 3, 5, 4, color=(255, 0, 0))
    px = img.pixels
    assert tuple(px[3, 2]) == (255, 0, 0) and tuple(px[6, 6]) == (255, 0, 0)
    assert tuple(px[4, 4]) == (0, 0, 0)  # outline only
    img.draw_rectangle(10, 10, 3, 3, color=(8, 8, 8), fill=True)
    assert tuple(img.pixels[11, 11]) == tuple(parity.rgb565_roundtrip(np.array([[8, 8, 8]], np.uint8))[0])
