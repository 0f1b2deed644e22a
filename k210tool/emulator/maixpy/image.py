"""The ``image`` module of MaixPy/CanMV (OpenMV's ``py_image.c``), as far as the generated scripts use it.

An :class:`Image` is RGB565 or greyscale, like the firmware's. RGB565 pixels are kept as 8-bit values that
went through the firmware's 8 -> 5/6 -> 8 bit tables (:func:`k210tool.maixpy.parity.rgb565_roundtrip`), so
``get_pixel`` returns what the board returns. ``pix_to_ai()`` fills the planar uint8 buffer the KPU reads
(planes R, G, B, or the single grey plane) - the kmodel's NCHW input.

Resizing follows the firmware: nearest neighbour when shrinking, bilinear when enlarging. Text is drawn
with OpenCV's Hershey "plain" font in solid pixels (no anti-aliasing, like the board's bitmap font), ASCII only (other characters become ``?``, as the
board's font has only ASCII glyphs); every ``draw_string`` is also recorded in :attr:`Image.texts`, so the
LCD shim can list what a frame shows.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from k210tool.emulator.runtime import BoardContext
from k210tool.maixpy.parity import rgb565_roundtrip

# OpenMV pixformat constants (sensor.RGB565 / sensor.GRAYSCALE share them)
GRAYSCALE = 1
RGB565 = 2
_FONT_BASE = 0.75  # cv2 FONT_HERSHEY_PLAIN scale per MaixPy font scale (about 10 px tall at scale 1)


@dataclass(frozen=True)
class DrawnText:
    """One ``draw_string`` call as it ended up on the image (``text`` is what the font could show)."""

    x: int
    y: int
    text: str
    color: tuple[int, int, int]
    scale: float


def _to_rgb(color: Any) -> tuple[int, int, int]:
    if color is None:
        return (255, 255, 255)
    if isinstance(color, int):  # a grey level, as OpenMV takes for greyscale images
        v = max(0, min(255, color))
        return (v, v, v)
    r, g, b = (max(0, min(255, int(c))) for c in tuple(color)[:3])
    return (r, g, b)


def _grey_of(rgb: tuple[int, int, int]) -> int:
    # OpenMV's COLOR_RGB888_TO_Y: (r * 38 + g * 75 + b * 15) >> 7
    return (rgb[0] * 38 + rgb[1] * 75 + rgb[2] * 15) >> 7


def ascii_only(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def text_origin(y: int, scale: float) -> tuple[float, int]:
    """(cv2 font scale, baseline y) for text whose top-left corner is at row ``y``."""
    import cv2

    font_scale = _FONT_BASE * max(float(scale), 0.1)
    (_w, h), _base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_PLAIN, font_scale, 1)
    return font_scale, y + h


def draw_text_pixels(canvas: np.ndarray, x: int, y: int, text: str, color: Any, scale: float = 1.0) -> np.ndarray:
    """Draw ``text`` (ASCII) onto an (H, W[, 3]) uint8 array in place, top-left at (x, y), in solid
    pixels (OpenCV anti-aliases its fonts; the board's bitmap font does not). Returns the text's mask."""
    import cv2

    font_scale, baseline = text_origin(y, scale)
    thickness = max(1, int(round(float(scale) / 2)))
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.putText(mask, ascii_only(text), (int(x), int(baseline)), cv2.FONT_HERSHEY_PLAIN, font_scale, 255,
                thickness, cv2.LINE_8)
    on = mask >= 128
    canvas[on] = color
    return on


class Image:
    """An RGB565 (``(H, W, 3)`` uint8 of 565-representable values) or greyscale (``(H, W)``) image."""

    def __init__(self, pixels: np.ndarray, fs: Any = None) -> None:
        self._px = np.ascontiguousarray(pixels, dtype=np.uint8)
        self.pix_ai: np.ndarray | None = None
        self.texts: list[DrawnText] = []
        self._fs = fs  # the board's filesystem, for save()

    # --- construction --------------------------------------------------------------------------------
    @classmethod
    def blank(cls, width: int, height: int, grayscale: bool = False) -> Image:
        if width <= 0 or height <= 0:
            raise ValueError("image size must be positive")
        return cls(np.zeros((height, width) if grayscale else (height, width, 3), np.uint8))

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, grayscale: bool = False) -> Image:
        """A camera frame (RGB888 ``(H, W, 3)``) as the sensor delivers it: rounded to RGB565, or grey."""
        rgb = np.asarray(rgb, np.uint8)
        if grayscale:
            weights = np.array([38, 75, 15], np.uint32)
            return cls(((rgb.astype(np.uint32) * weights).sum(-1) >> 7).astype(np.uint8))
        return cls(rgb565_roundtrip(rgb))

    @property
    def is_gray(self) -> bool:
        return self._px.ndim == 2

    @property
    def pixels(self) -> np.ndarray:
        """The image as the host sees it: RGB ``(H, W, 3)`` (grey images are expanded)."""
        return np.repeat(self._px[..., None], 3, axis=2) if self.is_gray else self._px.copy()

    # --- queries ---------------------------------------------------------------------------------------
    def width(self) -> int:
        return int(self._px.shape[1])

    def height(self) -> int:
        return int(self._px.shape[0])

    def format(self) -> int:
        return GRAYSCALE if self.is_gray else RGB565

    def size(self) -> int:
        return self.width() * self.height() * (1 if self.is_gray else 2)

    def get_pixel(self, x: int, y: int, rgbtuple: bool = True) -> Any:
        x, y = int(x), int(y)
        if not (0 <= x < self.width() and 0 <= y < self.height()):
            return None
        if self.is_gray:
            return int(self._px[y, x])
        return tuple(int(v) for v in self._px[y, x])

    def __repr__(self) -> str:
        kind = "grayscale" if self.is_gray else "rgb565"
        return f'{{"w":{self.width()}, "h":{self.height()}, "type"="{kind}", "size":{self.size()}}}'

    # --- pixel writes ----------------------------------------------------------------------------------
    def _store(self, rgb: tuple[int, int, int]) -> Any:
        if self.is_gray:
            return _grey_of(rgb)
        return tuple(int(v) for v in rgb565_roundtrip(np.array([rgb], np.uint8))[0])

    def set_pixel(self, x: int, y: int, value: Any) -> Image:
        x, y = int(x), int(y)
        if 0 <= x < self.width() and 0 <= y < self.height():
            if self.is_gray:
                self._px[y, x] = value if isinstance(value, int) else _grey_of(_to_rgb(value))
            else:
                self._px[y, x] = self._store(_to_rgb(value))
        return self

    def draw_rectangle(self, x: Any, y: int = 0, w: int = 0, h: int = 0, color: Any = None, thickness: int = 1,
                       fill: bool = False) -> Image:
        import cv2

        if isinstance(x, (tuple, list)):
            x, y, w, h = x
        stored = self._store(_to_rgb(color))
        x0, y0 = int(x), int(y)
        x1, y1 = x0 + int(w) - 1, y0 + int(h) - 1
        cv2.rectangle(self._px, (x0, y0), (x1, y1), stored, -1 if fill else max(1, int(thickness)), cv2.LINE_8)
        return self

    def draw_line(self, x0: int, y0: int, x1: int, y1: int, color: Any = None, thickness: int = 1) -> Image:
        import cv2

        cv2.line(self._px, (int(x0), int(y0)), (int(x1), int(y1)), self._store(_to_rgb(color)),
                 max(1, int(thickness)), cv2.LINE_8)
        return self

    def draw_circle(self, x: int, y: int, radius: int, color: Any = None, thickness: int = 1,
                    fill: bool = False) -> Image:
        import cv2

        cv2.circle(self._px, (int(x), int(y)), int(radius), self._store(_to_rgb(color)),
                   -1 if fill else max(1, int(thickness)), cv2.LINE_8)
        return self

    def draw_cross(self, x: int, y: int, color: Any = None, size: int = 5, thickness: int = 1) -> Image:
        self.draw_line(x - size, y, x + size, y, color, thickness)
        return self.draw_line(x, y - size, x, y + size, color, thickness)

    def draw_string(self, x: int, y: int, text: Any, color: Any = None, scale: float = 1.0, **_kw: Any) -> Image:
        shown = ascii_only(str(text))
        stored = self._store(_to_rgb(color))
        draw_text_pixels(self._px, int(x), int(y), shown, stored, scale)
        self.texts.append(DrawnText(int(x), int(y), shown, stored if isinstance(stored, tuple) else (stored,) * 3,
                                    float(scale)))
        return self

    def draw_image(self, img: Image, x: int, y: int, **_kw: Any) -> Image:
        src = img._px if img.is_gray == self.is_gray else (img.pixels if not self.is_gray else img._gray())
        x, y = int(x), int(y)
        h, w = src.shape[:2]
        dx0, dy0 = max(0, x), max(0, y)
        dx1, dy1 = min(self.width(), x + w), min(self.height(), y + h)
        if dx1 > dx0 and dy1 > dy0:
            self._px[dy0:dy1, dx0:dx1] = src[dy0 - y:dy1 - y, dx0 - x:dx1 - x]
        self.texts.extend(DrawnText(t.x + x, t.y + y, t.text, t.color, t.scale) for t in img.texts)
        return self

    def clear(self) -> Image:
        self._px[:] = 0
        self.texts.clear()
        return self

    # --- new images ------------------------------------------------------------------------------------
    def _gray(self) -> np.ndarray:
        if self.is_gray:
            return self._px
        return ((self._px.astype(np.uint32) * np.array([38, 75, 15], np.uint32)).sum(-1) >> 7).astype(np.uint8)

    def copy(self) -> Image:
        out = self._new(self._px.copy())
        out.texts = list(self.texts)
        return out

    def cut(self, x: int, y: int, w: int, h: int) -> Image:
        """A new image of the region, clipped to this image (``ValueError`` when nothing is left)."""
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(self.width(), int(x) + int(w)), min(self.height(), int(y) + int(h))
        if x1 <= x0 or y1 <= y0:
            raise ValueError("Region of interest is outside the image")
        return self._new(self._px[y0:y1, x0:x1].copy())

    crop = cut

    def resize(self, w: int, h: int) -> Image:
        """Nearest neighbour when shrinking, bilinear when enlarging (as the firmware's resize)."""
        import cv2

        w, h = int(w), int(h)
        if w <= 0 or h <= 0:
            raise ValueError("resize: width and height must be positive")
        shrink = w <= self.width() and h <= self.height()
        out = cv2.resize(self._px, (w, h), interpolation=cv2.INTER_NEAREST if shrink else cv2.INTER_LINEAR)
        return self._new(out if self.is_gray else rgb565_roundtrip(out))

    def to_grayscale(self, copy: bool = False) -> Image:
        return self._new(self._gray().copy())

    def to_bytes(self) -> bytes:
        """The frame buffer: one byte per grey pixel, or RGB565 as little-endian 16-bit words."""
        if self.is_gray:
            return self._px.tobytes()
        p = self._px.astype(np.uint16)
        word = ((p[..., 0] >> 3) << 11) | ((p[..., 1] >> 2) << 5) | (p[..., 2] >> 3)
        return word.astype("<u2").tobytes()

    def pix_to_ai(self) -> None:
        """Fill the planar buffer the KPU reads: (3, H, W) planes R, G, B, or (1, H, W) grey."""
        self.pix_ai = self._px[None].copy() if self.is_gray else np.ascontiguousarray(self._px.transpose(2, 0, 1))

    def save(self, path: str, *_a: Any, **_kw: Any) -> Image:
        from k210tool.preprocess import save_image

        if self._fs is None:
            raise OSError(19, "ENODEV")
        save_image(self._fs.host_path(path), self.pixels)
        return self

    def _new(self, pixels: np.ndarray) -> Image:
        return Image(pixels, self._fs)


def make_image_module(ctx: BoardContext) -> types.ModuleType:
    """``image``: ``Image(path)`` or ``Image(size=(w, h))``; paths are on the board's filesystem."""

    def image_factory(path: str | None = None, *, size: tuple[int, int] | None = None, **_kw: Any) -> Image:
        if path is None:
            w, h = size if size is not None else (ctx.board.lcd.width, ctx.board.lcd.height)
            img = Image.blank(int(w), int(h))
            img._fs = ctx.fs
            return img
        from k210tool.preprocess import load_image

        host = ctx.fs.host_path(path)
        if not host.is_file():
            raise OSError(2, "ENOENT")
        try:
            pixels = load_image(host)
        except Exception:
            raise OSError(5, "EIO") from None
        img = Image.from_rgb(pixels)
        img._fs = ctx.fs
        return img

    mod = types.ModuleType("image")
    mod.__dict__.update(Image=image_factory, GRAYSCALE=GRAYSCALE, RGB565=RGB565)
    return mod


__all__ = ["DrawnText", "Image", "ascii_only", "draw_text_pixels", "make_image_module"]
