"""The camera of the virtual board: ``sensor`` fed from a folder of images, a video file or arrays.

A :class:`FrameSource` yields RGB888 frames (what is in front of the lens, upright). ``sensor.snapshot()``
fits the next one to the frame size the script chose (``set_framesize``: centre crop to the aspect ratio,
then resize - :func:`k210tool.preprocess.fit`), rounds it to RGB565 (or makes it grey) and returns an
:class:`~k210tool.emulator.maixpy.image.Image`. The emulated sensor is mounted the way the board's
``[camera]`` settings expect: with the board's own ``set_hmirror``/``set_vflip`` values the picture is
upright, other values flip it.

Only ``snapshot()`` consumes frames (``skip_frames`` waits but keeps the source's position), so a test
knows which picture each snapshot shows. When a source runs out it starts again (``end="loop"``),
repeats its last frame (``"hold"``) or makes ``snapshot()`` raise ``OSError`` (``"stop"``).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.emulator.maixpy.image import GRAYSCALE, RGB565, Image
from k210tool.emulator.runtime import BoardContext
from k210tool.errors import InputError

# sensor.set_framesize constants (OpenMV framesize_t) and their pixel sizes
FRAMESIZES = {"QQVGA": (1, 160, 120), "QVGA": (2, 320, 240), "VGA": (3, 640, 480), "HQVGA": (4, 240, 160),
              "CIF": (5, 352, 288), "QCIF": (6, 176, 144), "B128X128": (7, 128, 128), "B240X240": (8, 240, 240)}
END_MODES = ("loop", "hold", "stop")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mjpeg", ".mjpg")


class FrameSource:
    """Frames in order; ``frames()`` starts from the beginning each time it is called."""

    description = "frames"

    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError


class ArraySource(FrameSource):
    def __init__(self, images: Sequence[np.ndarray], description: str = "arrays") -> None:
        if not len(images):
            raise InputError("the camera was given no frames")
        self.images = [np.asarray(i, np.uint8) for i in images]
        self.description = description

    def frames(self) -> Iterator[np.ndarray]:
        return iter(self.images)


class FolderSource(FrameSource):
    """Every image under a folder (recursively), in sorted path order."""

    def __init__(self, folder: Path) -> None:
        from k210tool.preprocess import find_images

        self.paths = find_images(folder)
        if not self.paths:
            raise InputError(f"no images in camera folder {folder}", "put .png/.jpg files there")
        self.description = str(folder)

    def frames(self) -> Iterator[np.ndarray]:
        from k210tool.preprocess import load_image

        for p in self.paths:
            yield load_image(p)


class VideoSource(FrameSource):
    def __init__(self, path: Path) -> None:
        import cv2

        cap = cv2.VideoCapture(str(path))
        ok = cap.isOpened() and cap.read()[0]
        cap.release()
        if not ok:
            raise InputError(f"cannot read video {path}", "give a video OpenCV can decode, or a folder of images")
        self.path = path
        self.description = str(path)

    def frames(self) -> Iterator[np.ndarray]:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


class TestPattern(FrameSource):
    """Colour bars with a moving square: what the camera shows when nothing was given."""

    description = "test pattern"

    def frames(self) -> Iterator[np.ndarray]:
        bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255],
                         [255, 0, 0], [0, 0, 255], [0, 0, 0]], np.uint8)
        for i in range(30):
            img = np.repeat(bars, 40, axis=0)[None].repeat(240, axis=0)
            x = 20 + 8 * i
            img[100:140, x:x + 40] = (128, 128, 128)
            yield img


def open_source(spec: FrameSource | str | Path | Sequence[np.ndarray]) -> FrameSource:
    """A folder, a video file, a sequence of RGB arrays, or a ready :class:`FrameSource`."""
    if isinstance(spec, FrameSource):
        return spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            return FolderSource(path)
        if path.is_file():
            if path.suffix.lower() in VIDEO_SUFFIXES:
                return VideoSource(path)
            return ArraySource([_load(path)], str(path))
        raise InputError(f"camera source {path} does not exist", "give a folder of images or a video file")
    return ArraySource(list(spec))


def _load(path: Path) -> np.ndarray:
    from k210tool.preprocess import load_image

    return load_image(path)


class Camera:
    """The frame stream shared by all soft resets of one board (a camera keeps running)."""

    def __init__(self, source: FrameSource, end: str = "loop",
                 on_snapshot: Callable[[int], None] | None = None) -> None:
        if end not in END_MODES:
            raise InputError(f"unknown camera end mode {end!r}", f"use one of {', '.join(END_MODES)}")
        self.source = source
        self.end = end
        self.on_snapshot = on_snapshot
        self.snapshots = 0
        self._it: Iterator[np.ndarray] | None = None
        self._last: np.ndarray | None = None
        self._lock = threading.Lock()

    def next_frame(self) -> np.ndarray:
        with self._lock:
            if self._it is None:
                self._it = self.source.frames()
            frame = next(self._it, None)
            if frame is None:
                if self.end == "hold" and self._last is not None:
                    frame = self._last
                elif self.end == "loop":
                    self._it = self.source.frames()
                    frame = next(self._it, None)
            if frame is None:
                raise OSError(f"sensor: no more frames in {self.source.description}")
            self._last = frame
            self.snapshots += 1
            return frame


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    from k210tool.preprocess import fit

    rgb = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)
    if rgb.shape[:2] == (height, width):
        return rgb
    return fit(rgb[..., :3], height, width, "crop")


def make_sensor_module(ctx: BoardContext, camera: Camera) -> types.ModuleType:
    """``sensor`` (OpenMV's py_sensor.c API) over ``camera``."""
    cam = ctx.board.camera
    state: dict[str, Any] = {"reset": False, "pixformat": RGB565, "framesize": FRAMESIZES["QVGA"][0],
                             "hmirror": cam.hmirror, "vflip": cam.vflip, "running": True}
    sizes = {code: (w, h) for code, w, h in FRAMESIZES.values()}

    def reset(*_a: Any, **_kw: Any) -> None:
        state.update(reset=True, hmirror=cam.hmirror, vflip=cam.vflip)

    def need_reset() -> None:
        if not state["reset"]:
            raise RuntimeError("Sensor Timeout!!")  # what the firmware says before sensor.reset()

    def set_pixformat(fmt: int) -> None:
        if fmt not in (RGB565, GRAYSCALE):
            raise ValueError("Invalid Pixformat")
        state["pixformat"] = fmt

    def set_framesize(size: int) -> None:
        if size not in sizes:
            raise ValueError("Invalid Framesize")
        state["framesize"] = size

    def snapshot() -> Image:
        need_reset()
        w, h = sizes[state["framesize"]]
        frame = _fit(camera.next_frame(), w, h)
        # the board's own mirror/flip settings give an upright picture; others flip it
        if state["hmirror"] != cam.hmirror:
            frame = frame[:, ::-1]
        if state["vflip"] != cam.vflip:
            frame = frame[::-1]
        img = Image.from_rgb(frame, grayscale=state["pixformat"] == GRAYSCALE)
        img._fs = ctx.fs
        if camera.on_snapshot is not None:
            camera.on_snapshot(camera.snapshots)
        return img

    def skip_frames(n: int | None = None, time: int | None = None) -> None:
        need_reset()
        if time:
            ctx.sleep(min(float(time), 2000.0) / 1000.0 / 10)  # a tenth: the frames are not real-time

    mod = types.ModuleType("sensor")
    mod.__dict__.update(
        reset=reset, set_pixformat=set_pixformat, set_framesize=set_framesize, snapshot=snapshot,
        skip_frames=skip_frames, run=lambda enable=1: state.update(running=bool(enable)),
        set_hmirror=lambda v: state.update(hmirror=bool(v)), set_vflip=lambda v: state.update(vflip=bool(v)),
        get_hmirror=lambda: state["hmirror"], get_vflip=lambda: state["vflip"],
        width=lambda: sizes[state["framesize"]][0], height=lambda: sizes[state["framesize"]][1],
        set_windowing=lambda *a, **k: None, set_contrast=lambda *a: None, set_brightness=lambda *a: None,
        set_saturation=lambda *a: None, set_auto_gain=lambda *a, **k: None, set_auto_whitebal=lambda *a, **k: None,
        set_auto_exposure=lambda *a, **k: None, get_id=lambda: 0x2642, shutdown=lambda *a: None,
        RGB565=RGB565, GRAYSCALE=GRAYSCALE, **{name: code for name, (code, _w, _h) in FRAMESIZES.items()},
    )
    return mod


__all__ = ["ArraySource", "Camera", "FolderSource", "FrameSource", "TestPattern", "VideoSource",
           "make_sensor_module", "open_source"]
