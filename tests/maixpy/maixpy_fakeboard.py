"""Execute a generated script in CPython with stand-ins for the firmware modules it imports.

Only what the parity template and the pure functions of the face templates touch is here (a KPU of the
CanMV feat/kpu API backed by nncase's Simulator, an image with set_pixel/pix_to_ai). The virtual board of
k210tool/emulator is the complete one; this keeps the template tests inside their own area.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import time as _time
import types
from pathlib import Path
from typing import Any

import numpy as np


def _to565(v: int, bits: int) -> int:  # the firmware's rb825/g826 tables: round(v * max / 255)
    top = (1 << bits) - 1
    return (v * top * 2 + 255) // (2 * 255)


def _from565(q: int, bits: int) -> int:  # rb528/g628: round(q * 255 / max)
    top = (1 << bits) - 1
    return (q * 255 * 2 + top) // (2 * top)


class FakeImage:
    """RGB565 (or greyscale) image; pix_to_ai() fills ``ai`` with planar uint8 like the firmware."""

    def __init__(self, w: int, h: int, gray: bool = False) -> None:
        self.w, self.h, self.gray = w, h, gray
        self.px = np.zeros((h, w) if gray else (h, w, 3), np.int64)
        self.ai: np.ndarray | None = None

    def width(self) -> int:
        return self.w

    def height(self) -> int:
        return self.h

    def set_pixel(self, x: int, y: int, value: Any) -> None:
        if self.gray:
            self.px[y, x] = int(value)
        else:  # stored as 5/6/5 bits, as in RGB565
            self.px[y, x] = (_to565(value[0], 5), _to565(value[1], 6), _to565(value[2], 5))

    def to_grayscale(self) -> FakeImage:
        out = FakeImage(self.w, self.h, gray=True)
        return out

    def pix_to_ai(self) -> None:
        if self.gray:
            self.ai = self.px.astype(np.uint8)[None]
            return
        planes = [np.vectorize(_from565)(self.px[..., c], bits) for c, bits in enumerate((5, 6, 5))]
        self.ai = np.stack(planes).astype(np.uint8)


class FakeKPU:
    """CanMV feat/kpu's KPU object: load / run / get_outputs / deinit, on nncase's Simulator."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.outputs: list[np.ndarray] = []

    def load(self, where: Any, size: int = 0) -> None:
        from k210tool.sim.engine import NncaseEngine

        data = Path(where).read_bytes()
        assert size in (0, len(data)), "size passed to load() differs from the file"
        self.engine = NncaseEngine(data, input_layout="NCHW")

    def run(self, img: FakeImage) -> None:
        assert img.ai is not None, "pix_to_ai() was not called"
        self.outputs = self.engine.run(img.ai.transpose(1, 2, 0)[None])

    def get_outputs(self, index: int = 0) -> list[float]:
        return [float(v) for v in self.outputs[index].ravel()]

    def deinit(self) -> None:
        self.engine = None


def fake_modules() -> dict[str, types.ModuleType]:
    mods = {}
    for name in ("maix", "Maix", "image", "lcd", "sensor", "KPU", "fpioa_manager", "time"):
        mods[name] = types.ModuleType(name)
    mods["maix"].KPU = FakeKPU  # type: ignore[attr-defined]
    for name in ("maix", "Maix"):  # imported by the enroll button code, used only in main()
        mods[name].GPIO = object  # type: ignore[attr-defined]
        mods[name].utils = None  # type: ignore[attr-defined]
    mods["fpioa_manager"].fm = None  # type: ignore[attr-defined]
    mods["image"].Image = lambda size: FakeImage(*size)  # type: ignore[attr-defined]
    mods["time"].ticks_us = lambda: int(_time.perf_counter() * 1e6)  # type: ignore[attr-defined]
    mods["time"].ticks_diff = lambda a, b: a - b  # type: ignore[attr-defined]
    return mods


def load_script(source: str, modules: dict[str, types.ModuleType] | None = None) -> dict[str, Any]:
    """Execute ``source`` (its main() does not run) with firmware imports resolved to ``modules``."""
    mods = modules if modules is not None else fake_modules()
    real_import = builtins.__import__

    def _import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in mods:
            return mods[name]
        return real_import(name, *args, **kwargs)

    fake_builtins = dict(vars(builtins), __import__=_import)
    namespace: dict[str, Any] = {"__name__": "board_script", "__builtins__": fake_builtins}
    exec(compile(source, "board_script.py", "exec"), namespace)
    return namespace


def run_main(namespace: dict[str, Any]) -> str:
    """Call the script's main() and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace["main"]()
    return out.getvalue()
