"""``maix.KPU`` of CanMV: the release API (kmodel v3/v4) and the ``feat/kpu`` API (v5).

Release (``components/micropython/port/src/Maix/maix_kpu/Maix_kpu.c`` on CanMV main): ``KPU()``,
``load_kmodel(path)`` / ``load_kmodel(flash_address, size)``, ``run_with_output(img | path, getlist=,
get_feature=)`` (output 0), ``init_yolo2(...)`` + ``regionlayer_yolo2()``, ``deinit()``. It prints
``model size N`` and ``model load succeed`` as the firmware does; a refused model raises
``MemoryError: model buffer memory allocation failed`` (the buffer) or ``OSError: Failed to init model``.

feat/kpu (``maix_kpu/maix_kpu.c`` on that branch): ``KPU()``, ``load(path | offset, size=)``, ``run(img)``
(the image must be the model's input size), ``get_outputs(index)``, ``Yolo2()`` with ``init(anchor,
threshold=, nms_value=)`` and ``run()``, ``deinit()``. Refusals: ``ValueError: Model size error!``,
``MemoryError: Model buffer memory allocation failed``, ``OSError: Failed to load model``.
"""

from __future__ import annotations

import errno
import math
from typing import Any

import numpy as np

from k210tool.emulator.maixpy.kmodels import KmodelRejected, LoadedKmodel, read_flash_model
from k210tool.emulator.maixpy.yolo2 import RegionLayer, run_region_layer
from k210tool.emulator.runtime import BoardContext

V5_MAX_MODEL = 5 * 1024 * 1024  # feat/kpu refuses models of 5 MiB and more


def read_board_file(ctx: BoardContext, path: str) -> bytes:
    host = ctx.fs.host_path(path)
    if not host.is_file():
        raise OSError("Failed to read file")
    return host.read_bytes()


def image_input(img: Any, error: type[Exception]) -> np.ndarray:
    buf = getattr(img, "pix_ai", None)
    if buf is None:
        raise error("Image formart error, use pix_to_ai() method to convert for kpu")  # sic, the firmware's text
    return buf


class CanmvKPU:
    """CanMV release ``maix.KPU``."""

    def __init__(self, ctx: BoardContext) -> None:
        self._ctx = ctx
        self._model: LoadedKmodel | None = None
        self._region: RegionLayer | None = None
        self._last: list[np.ndarray] = []

    def load_kmodel(self, path: Any = None, size: int = 0) -> None:
        ctx = self._ctx
        if path is None:
            raise ValueError("invalid path input")
        if isinstance(path, str):
            host = ctx.fs.host_path(path)
            n = host.stat().st_size if host.is_file() else 0
            ctx.write(f"model size {n} \r\n")
            data = read_board_file(ctx, path)
        elif isinstance(path, int) and not isinstance(path, bool):
            if path <= 0:
                raise ValueError("path error!")
            if int(size) <= 0:
                raise ValueError("size error!")
            try:
                data = read_flash_model(ctx, path, int(size))
            except OSError:
                raise OSError("Failed to read file") from None
        else:
            raise ValueError("path error!")
        try:
            self._model = ctx.kmodel_loader(ctx, data)  # type: ignore[misc]
        except KmodelRejected as exc:
            if exc.reason == "buffer":
                raise MemoryError("model buffer memory allocation failed") from None
            raise OSError(exc.detail if exc.reason == "emulator" else "Failed to init model") from None
        ctx.write("model load succeed\r\n")

    def _need_model(self) -> LoadedKmodel:
        if self._model is None or self._model.freed:
            raise OSError("Model Buffer maybe dirty!")
        return self._model

    def run_with_output(self, input: Any = None, getlist: bool = False, get_feature: bool = False) -> Any:
        model = self._need_model()
        if input is None:
            raise ValueError("invalid input")
        if isinstance(input, str):
            planar = np.frombuffer(read_board_file(self._ctx, input), np.uint8)
        elif hasattr(input, "pix_to_ai"):
            planar = image_input(input, OSError)
        else:
            raise ValueError("invalid input")
        self._last = model.run(planar)
        out = self._last[0]
        if getlist:
            return [float(v) for v in out]
        if get_feature:
            if out.size > 256:
                raise ValueError("feature len out of 256\r\n")
            norm = math.sqrt(float(np.sum(out.astype(np.float64) ** 2)))
            return [float(v) / norm if norm else 0.0 for v in out]
        return None

    def init_yolo2(self, anchor: Any = None, anchor_num: int = 5, img_w: int = 320, img_h: int = 240,
                   net_w: int = 320, net_h: int = 240, layer_w: int = 10, layer_h: int = 8,
                   threshold: float = 0.7, nms_value: float = 0.4, classes: int = 1) -> None:
        if anchor is None:
            raise ValueError("need input anchor")
        anchors = tuple(float(a) for a in anchor)[: 2 * int(anchor_num)]
        self._region = RegionLayer(anchors, float(threshold), float(nms_value), int(classes), int(layer_w),
                                   int(layer_h), int(net_w), int(net_h), int(img_w), int(img_h))

    def regionlayer_yolo2(self) -> list[list[Any]]:
        if self._region is None or not self._last:
            raise OSError("Model Buffer maybe dirty!")
        return [[d.x, d.y, d.w, d.h, d.classid, d.prob] for d in run_region_layer(self._region, self._last[0])]

    def feature_compare(self, a: Any, b: Any) -> float:
        if len(a) != len(b):
            raise ValueError("feature len error")
        va, vb = np.asarray(a, np.float32), np.asarray(b, np.float32)
        den = float(np.linalg.norm(va) * np.linalg.norm(vb))
        return float(va @ vb) / den * 100.0 if den else 0.0

    def deinit(self) -> bool | None:
        if self._model is None:
            return False
        self._model.free()
        self._model = None
        self._ctx.write("free kpu model buf succeed\r\n")
        return None


class CanmvV5KPU:
    """CanMV feat/kpu ``maix.KPU`` (``KPU()`` returns one of these)."""

    def __init__(self, ctx: BoardContext) -> None:
        self._ctx = ctx
        self._model: LoadedKmodel | None = None
        self._ran = False

    def load(self, where: Any, size: int = 0) -> None:
        ctx = self._ctx
        size = int(size)
        if isinstance(where, str):
            host = ctx.fs.host_path(where)
            n = size or (host.stat().st_size if host.is_file() else 0)
        elif isinstance(where, int) and not isinstance(where, bool):
            if where <= 0:
                raise ValueError("Model offset error!")
            n = size
        else:
            raise ValueError("Load_kmodel need one parameter, path(string) or offset(int)")
        if isinstance(where, int) and not n:
            try:
                data = read_flash_model(ctx, where)  # the firmware probes the size from the header
            except OSError:
                raise OSError("Failed to read file from rawflash") from None
            n = len(data)
        if n <= 0 or n >= V5_MAX_MODEL:
            raise ValueError("Model size error!")
        if isinstance(where, str):
            try:
                data = read_board_file(ctx, where)[:n]
            except OSError:
                raise OSError("Failed to read file from filesystem") from None
            if len(data) != n:
                raise OSError("Model in filesystem maybe damaged")
        elif size:
            try:
                data = read_flash_model(ctx, where, n)
            except OSError:
                raise OSError("Failed to read file from rawflash") from None
        try:
            self._model = ctx.kmodel_loader(ctx, data)  # type: ignore[misc]
        except KmodelRejected as exc:
            self._model = None
            if exc.reason == "buffer":
                raise MemoryError("Model buffer memory allocation failed") from None
            raise OSError(exc.detail if exc.reason == "emulator" else "Failed to load model") from None
        self._ran = False

    def run(self, img: Any) -> None:
        if self._model is None or self._model.freed:
            raise OSError("Please load kmodel before")
        planar = image_input(img, ValueError)
        c, h, w = self._model.input_chw
        if (img.width(), img.height()) != (w, h):
            self._ctx.write(f"model input {h}x{w} but image is {img.height()}x{img.width()}")
            raise OSError(errno.ERANGE, "ERANGE")
        self._model.run(planar)
        self._ran = True

    def get_outputs(self, index: int = 0) -> list[float]:
        if self._model is None or self._model.freed or not self._ran:
            raise OSError("Please load/run kmodel before")
        if not 0 <= int(index) < len(self._model.outputs):
            raise OSError("Failed to get kpu outputs")
        return [float(v) for v in self._model.outputs[int(index)]]

    def Yolo2(self) -> CanmvV5Yolo2:  # noqa: N802 - the firmware's name
        return CanmvV5Yolo2(self)

    def deinit(self) -> None:
        if self._model is not None:
            self._model.free()
        self._model = None
        self._ran = False


class CanmvV5Yolo2:
    """``KPU().Yolo2()``: the region layer over the parent's output 0, in model-input coordinates."""

    def __init__(self, parent: CanmvV5KPU) -> None:
        self._parent = parent
        self._args: tuple[tuple[float, ...], float, float] | None = None

    def init(self, anchor: Any, threshold: float | None = None, nms_value: float | None = None) -> None:
        anchors = tuple(float(a) for a in anchor)
        if len(anchors) % 2:
            raise ValueError("The number of anchors should be a multiple of 2")
        self._args = (anchors, 0.5 if threshold is None else float(threshold),
                      0.3 if nms_value is None else float(nms_value))

    def run(self) -> list[list[Any]]:
        if self._args is None:
            raise OSError("Please call init before run")
        model = self._parent._model
        if model is None or model.freed or not self._parent._ran:
            raise OSError("Please load/run kmodel before")
        anchors, threshold, nms = self._args
        chn, lh, lw = model.output_chw(0)
        classes = chn // (len(anchors) // 2) - 5
        if classes < 0:
            raise OSError("Yolo2 region layer init failed")
        _c, h, w = model.input_chw
        rl = RegionLayer(anchors, threshold, nms, classes, lw, lh, w, h, w, h)
        return [[d.x, d.y, d.w, d.h, d.classid, d.prob] for d in run_region_layer(rl, model.outputs[0])]

    def deinit(self) -> None:
        self._args = None


# scripts see the firmware's type names (e.g. in "'KPU' object has no attribute 'load'")
CanmvKPU.__name__ = CanmvKPU.__qualname__ = "KPU"
CanmvV5KPU.__name__ = CanmvV5KPU.__qualname__ = "KPU"
CanmvV5Yolo2.__name__ = CanmvV5Yolo2.__qualname__ = "Yolo2"

__all__ = ["CanmvKPU", "CanmvV5KPU", "CanmvV5Yolo2", "image_input", "read_board_file"]
