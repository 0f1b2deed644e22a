"""``KPU`` of MaixPy-v1 (``components/micropython/port/src/Maix/Maix_kpu.c``): ``load(address | path)``,
``set_outputs(task, i, w, h, ch)`` (kmodel v4 needs it before ``forward``), ``forward(task, img)`` -> a
feature map whose ``[:]`` is the list of floats, ``get_output(task, i)``, ``init_yolo2(task, threshold, nms,
anchor_num, anchors)``, ``run_yolo2(task, img)`` -> objects with ``rect()``/``value()``... or None,
``deinit(task)``.

Load failures are the firmware's ``ValueError: [MAIXPY]kpu: load error:<code>, <text>`` with the codes of
``sipeed_kpu.h`` (2002 kmodel version, 2005 read file, 2006 no memory, 2003 format).
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from k210tool.emulator.maixpy.kmodels import KmodelRejected, LoadedKmodel, read_flash_model
from k210tool.emulator.maixpy.yolo2 import Detection, RegionLayer, run_region_layer
from k210tool.emulator.runtime import BoardContext

_ERRORS = {
    "format": (2003, "ERR_KMODEL_FORMAT: layer_header.body_size <=0"),
    "read": (2005, "ERR_READ_FILE: read file failed"),
    "buffer": (2006, "ERR_NO_MEM: memory not enough"),
    "memory": (2006, "ERR_NO_MEM: memory not enough"),
}


def _load_error(reason: str, versions: tuple[int, ...]) -> ValueError:
    if reason == "version":
        code, text = 2002, ("ERR_KMODEL_VERSION: only support kmodel V3/V4 now" if 4 in versions
                            else "ERR_KMODEL_VERSION: only support kmodel V3")
    else:
        code, text = _ERRORS.get(reason, (2003, "ERR_KMODEL_FORMAT: layer_header.body_size <=0"))
    return ValueError(f"[MAIXPY]kpu: load error:{code}, {text}")


class KpuNet:
    """What ``KPU.load`` returns (the firmware's ``kpu_net`` object)."""

    def __init__(self, model: LoadedKmodel, address: int | None, path: str | None) -> None:
        self.model = model
        self._address = address
        self._path = path
        self.outputs_set: dict[int, tuple[int, int, int]] = {}
        self.region: tuple[float, float, tuple[float, ...]] | None = None

    def model_addr(self) -> int:
        return self._address if self._address is not None else -1

    def model_size(self) -> int:
        return self.model.size

    def model_path(self) -> str | None:
        return self._path

    def __repr__(self) -> str:
        where = self._path if self._path is not None else f"0x{self._address:x}"
        return f"{{\"model_addr\": {where!r}, \"model_size\": {self.model.size}}}"


class Fmap:
    """A feature map: ``[:]`` / ``[i]`` give floats; ``w()``, ``h()``, ``ch()`` its shape."""

    def __init__(self, values: np.ndarray, whc: tuple[int, int, int]) -> None:
        self._values = values
        self._whc = whc

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [float(v) for v in self._values[index]]
        return float(self._values[index])

    def __len__(self) -> int:
        return int(self._values.size)

    def w(self) -> int:
        return self._whc[0]

    def h(self) -> int:
        return self._whc[1]

    def ch(self) -> int:
        return self._whc[2]


class YoloObject:
    """One ``run_yolo2`` result: ``rect()`` (x, y, w, h), ``value()`` (probability), ``classid()``..."""

    def __init__(self, d: Detection, count: int) -> None:
        self._d = d
        self._count = count

    def rect(self) -> tuple[int, int, int, int]:
        return (self._d.x, self._d.y, self._d.w, self._d.h)

    def x(self) -> int:
        return self._d.x

    def y(self) -> int:
        return self._d.y

    def w(self) -> int:
        return self._d.w

    def h(self) -> int:
        return self._d.h

    def value(self) -> float:
        return self._d.prob

    def classid(self) -> int:
        return self._d.classid

    def index(self) -> int:
        return self._d.index

    def objnum(self) -> int:
        return self._count


def make_kpu_module(ctx: BoardContext) -> types.ModuleType:
    """The ``KPU`` module; only MaixPy-v1 firmware has it."""
    if ctx.board.firmware.kpu_api != "maixpy":
        raise ImportError("no module named 'KPU'")
    versions = ctx.board.firmware.kmodel_versions

    def load(where: Any, *_a: Any, **_kw: Any) -> KpuNet:
        if isinstance(where, int) and not isinstance(where, bool):
            if where <= 0:
                raise ValueError("[MAIXPY]kpu: model_addr must > 0 ")
            try:
                data = read_flash_model(ctx, where)
            except OSError:
                raise _load_error("read", versions) from None
            path = None
        elif isinstance(where, str):
            if not any(s in where for s in (".kmodel", ".smodel", ".emodel")):
                raise ValueError("[MAIXPY]kpu: model format don't match, only supply .kmodel ")
            host = ctx.fs.host_path(where)
            if not host.is_file():
                raise _load_error("read", versions)
            data, path = host.read_bytes(), where
        else:
            raise TypeError("[MAIXPY]kpu: only accept int or string")
        try:
            model = ctx.kmodel_loader(ctx, data)  # type: ignore[misc]
        except KmodelRejected as exc:
            if exc.reason == "emulator":
                raise OSError(exc.detail) from None
            raise _load_error(exc.reason, versions) from None
        return KpuNet(model, where if path is None else None, path)

    def set_outputs(task: KpuNet, index: int, w: int, h: int, ch: int) -> bool:
        _check(task)
        if not 0 <= int(index) < len(task.model.output_shapes):
            raise ValueError("[MAIXPY]kpu: set_outputs arg format error: set_outputs(task, int idx, int w, int h, "
                             "int ch)")
        want = int(np.prod(task.model.output_shapes[int(index)]))
        if int(w) * int(h) * int(ch) != want:
            raise OSError("SIPEED_KPU_ERR_SIZE_NOTMATCH")
        task.outputs_set[int(index)] = (int(w), int(h), int(ch))
        return True

    def _run(task: KpuNet, img: Any) -> None:
        _check(task)
        planar = getattr(img, "pix_ai", None)
        c, h, w = task.model.input_chw
        problem = None
        if planar is None:
            problem = "[MAIXPY]kpu: pix_ai is NULL!\r\n"
        elif (img.width(), img.height()) != (w, h):
            problem = f"[MAIXPY]kpu: img w={img.width()},h={img.height()}, but model w={w},h={h}\r\n"
        elif planar.shape[0] != c:
            kind = "grayscale" if planar.shape[0] == 1 else "RGB"
            problem = f"[MAIXPY]kpu: {kind} img, but model channel={c}\r\n"
        if problem:
            ctx.write(problem)
            raise ValueError("[MAIXPY]kpu: check img format err!\r\n")
        if task.model.version == 4 and len(task.outputs_set) < len(task.model.output_shapes):
            raise OSError("ERR_OUTPUTS_SET: need kpu.set_outputs() to set shape")
        task.model.run(planar)

    def _fmap(task: KpuNet, index: int) -> Fmap:
        outs = task.model.outputs
        if not 0 <= index < len(outs):
            raise OSError("sipeed_kpu_get_output err")
        whc = task.outputs_set.get(index)
        if whc is None:
            c, hh, ww = task.model.output_chw(index)
            whc = (ww, hh, c)
        return Fmap(outs[index], whc)

    def forward(task: KpuNet, img: Any, *_a: Any) -> Fmap:
        _run(task, img)
        return _fmap(task, 0)

    def get_output(task: KpuNet, index: int) -> Fmap:
        _check(task)
        if not task.model.outputs:
            raise OSError("get_output err")
        return _fmap(task, int(index))

    def init_yolo2(task: KpuNet, threshold: float, nms_value: float, anchor_number: int, anchor: Any) -> None:
        _check(task)
        if not 0 <= float(threshold) <= 1:
            raise ValueError("[MAIXPY]kpu: threshold only support 0 to 1")
        if not 0 <= float(nms_value) <= 1:
            raise ValueError("[MAIXPY]kpu: nms_value only support 0 to 1")
        if int(anchor_number) <= 0:
            raise ValueError("[MAIXPY]kpu: anchor_number should > 0")
        task.region = (float(threshold), float(nms_value), tuple(float(a) for a in anchor)[: 2 * int(anchor_number)])

    def run_yolo2(task: KpuNet, img: Any) -> list[YoloObject] | None:
        if task.region is None:
            raise TypeError("[MAIXPY]kpu: kpu_net type error")
        _run(task, img)
        threshold, nms, anchors = task.region
        c, lh, lw = task.model.output_chw(0)
        _ci, h, w = task.model.input_chw
        classes = max(0, c // (len(anchors) // 2) - 5)
        found = run_region_layer(RegionLayer(anchors, threshold, nms, classes, lw, lh, w, h, w, h),
                                 task.model.outputs[0])
        return [YoloObject(d, len(found)) for d in found] or None

    def deinit(task: KpuNet) -> None:
        if isinstance(task, KpuNet):
            task.model.free()

    mod = types.ModuleType("KPU")
    mod.__dict__.update(load=load, set_outputs=set_outputs, forward=forward, get_output=get_output,
                        init_yolo2=init_yolo2, run_yolo2=run_yolo2, deinit=deinit)
    return mod


def _check(task: Any) -> None:
    if not isinstance(task, KpuNet):
        raise TypeError("[MAIXPY]kpu: kpu_net type error")
    if task.model.freed:
        raise OSError("ERR_RUN_MODEL: maybe model dirty")


__all__ = ["Fmap", "KpuNet", "YoloObject", "make_kpu_module"]
