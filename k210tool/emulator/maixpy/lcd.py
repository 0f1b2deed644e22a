"""The LCD of the virtual board: every ``lcd.display(img)`` becomes a PNG a person can look at.

Frames go to ``FOLDER/frame_00001.png``, ``frame_00002.png``..., each with a ``frame_00001.json`` beside
it: ``{"frame": 1, "file": "frame_00001.png", "width": 320, "height": 240, "texts": [{"x": 40, "y": 12,
"text": "Alice 0.93", "color": [0, 255, 0], "scale": 2.0}]}`` - the strings drawn on the image, so tests
and people can find what a frame shows without reading pixels (:func:`read_frames_log`). Both files are
written atomically. The PNG is
the image as displayed (what a viewer of the panel sees: ``lcd.rotation`` compensates the panel's
mounting, so it does not turn the picture). Without a folder the frames are only counted.
"""

from __future__ import annotations

import json
import threading
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

from k210tool.emulator.maixpy.image import Image
from k210tool.emulator.runtime import BoardContext


class LcdSink:
    """Where displayed frames go; shared by all soft resets of one board (frame numbers keep counting)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.frames = 0
        self.last: Image | None = None
        self._lock = threading.Lock()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def show(self, img: Image) -> Path | None:
        from k210tool.fileio import write_json
        from k210tool.preprocess import save_image

        with self._lock:
            self.frames += 1
            self.last = img.copy()
            if self.folder is None:
                return None
            name = f"frame_{self.frames:05d}.png"
            path = self.folder / name
            save_image(path, img.pixels)
            record = {"frame": self.frames, "file": name, "width": img.width(), "height": img.height(),
                      "texts": [asdict(t) for t in img.texts]}
            write_json(path.with_suffix(".json"), record)
            return path


def read_frames_log(folder: Path | str) -> list[dict[str, Any]]:
    """The records of the frames in ``folder`` (what the LCD showed, in order)."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("frame_*.json"))]


def make_lcd_module(ctx: BoardContext, sink: LcdSink) -> types.ModuleType:
    """``lcd`` (py_lcd.c): init, rotation, display, clear, width, height."""
    size = {"w": ctx.board.lcd.width, "h": ctx.board.lcd.height, "rotation": ctx.board.lcd.rotation}

    def init(*_a: Any, width: int | None = None, height: int | None = None, **_kw: Any) -> None:
        size["w"] = int(width or size["w"])
        size["h"] = int(height or size["h"])
        size["init"] = True

    def rotation(n: int | None = None) -> int:
        if n is not None:
            size["rotation"] = int(n) % 4
        return size["rotation"]

    def display(img: Image, *_a: Any, **_kw: Any) -> None:
        if not isinstance(img, Image):
            raise TypeError("expecting an image")
        if not size.get("init"):
            raise OSError("lcd: call lcd.init() first")
        sink.show(img)

    def clear(color: Any = 0) -> None:
        if not size.get("init"):
            raise OSError("lcd: call lcd.init() first")

    def width() -> int:
        return size["w"] if size["rotation"] % 2 == 0 else size["h"]

    def height() -> int:
        return size["h"] if size["rotation"] % 2 == 0 else size["w"]

    mod = types.ModuleType("lcd")
    mod.__dict__.update(init=init, rotation=rotation, display=display, clear=clear, width=width, height=height,
                        deinit=lambda: size.pop("init", None), direction=lambda *a: None,
                        set_backlight=lambda *a: None, mirror=lambda *a: None,
                        BLACK=0, WHITE=0xFFFF, RED=0xF800, GREEN=0x07E0, BLUE=0x001F)
    return mod


__all__ = ["LcdSink", "make_lcd_module", "read_frames_log"]
