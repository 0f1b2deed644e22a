"""Loading and running kmodels on the virtual board: the firmware's checks, its memory, real inference.

:class:`KmodelLoader` is the board's ``BoardContext.kmodel_loader``. It applies what the firmware's loader
applies, in the firmware's order, and raises :class:`KmodelRejected` with a ``reason`` each KPU API turns
into its own error text:

- ``format``: not a kmodel, or a corrupt one (the runtime's header check fails);
- ``version``: a kmodel version the board's firmware does not load (``boards/firmware.toml``);
- ``buffer``: the model file itself does not fit in the RAM left (the firmware's ``malloc`` of the model
  buffer fails);
- ``memory``: the file + the runtime's working memory + the firmware's overhead does not fit in what the
  board's firmware leaves for models (``board.model_memory``) minus the models already loaded (the runtime's
  allocation of its working memory fails). Both are
  :func:`k210tool.compile.kmodel.footprint.board_fit`'s verdicts - the same function ``convert``, ``check``,
  ``script`` and ``flash`` ask, so the board refuses exactly what they call too big;
- ``emulator``: the board would load it but k210tool cannot run it (kmodel v3); the KPU shims raise
  ``OSError`` with this module's text rather than a firmware error the board would not give.

A loaded model runs its real bytes: nncase's Simulator for kmodel v5 (the reference), k210tool's NumPy
interpreter (``k210tool.sim.interp.NumpyEngine``, bit-exact with the Simulator on v5) for v4, or the
engine chosen with ``Hardware(engine=...)``. Memory is held until ``deinit()`` or until the script's
objects are gone (a soft reset), as on the board.
"""

from __future__ import annotations

import gc
import hashlib
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.emulator.runtime import BoardContext
from k210tool.sim.engine import ENGINE_CHOICES, choose_engine, make_engine

_CACHE_SIZE = 4


class KmodelRejected(Exception):
    """The firmware would refuse this kmodel; ``reason`` is one of the module doc's keywords."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class LoadedKmodel:
    """A model the board holds: its description, memory and engine. ``run`` takes the planar input."""

    data: bytes
    version: int
    sha256: str
    input_chw: tuple[int, int, int]
    output_shapes: list[tuple[int, ...]]
    total: int
    engine: Any
    owner: KmodelLoader
    outputs: list[np.ndarray] = field(default_factory=list)
    freed: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def output_chw(self, index: int = 0) -> tuple[int, int, int]:
        """(channels, height, width) of an output, as the firmware's shape helpers report it."""
        dims = [d for d in self.output_shapes[index][1:]] if len(self.output_shapes[index]) > 1 else []
        if len(dims) == 3:
            return dims[0], dims[1], dims[2]
        return (math.prod(self.output_shapes[index]) if self.output_shapes[index] else 1), 1, 1

    def run(self, planar: np.ndarray) -> list[np.ndarray]:
        """Feed a uint8 buffer as the KPU DMA would: the first C*H*W bytes, zero-padded if short."""
        c, h, w = self.input_chw
        flat = np.asarray(planar, np.uint8).reshape(-1)
        need = c * h * w
        buf = np.zeros(need, np.uint8)
        buf[: min(need, flat.size)] = flat[:need]
        nhwc = buf.reshape(1, c, h, w).transpose(0, 2, 3, 1)
        with self.owner.engine_lock:
            outs = self.engine.run(nhwc)
        self.outputs = [np.asarray(o, np.float32).reshape(-1) for o in outs]
        return self.outputs

    def free(self) -> None:
        self.freed = True


class KmodelLoader:
    """The board's kmodel loader (firmware checks, memory accounting, engines); one per virtual board."""

    def __init__(self, engine: str = "auto") -> None:
        if engine not in ENGINE_CHOICES:
            raise ValueError(f"engine must be one of {ENGINE_CHOICES}")
        self.engine_name = engine
        self.engine_lock = threading.Lock()
        self._live: weakref.WeakSet[LoadedKmodel] = weakref.WeakSet()
        self._engines: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.loads = 0

    # --- memory ------------------------------------------------------------------------------------------
    def memory_in_use(self) -> int:
        return sum(m.total for m in list(self._live) if not m.freed)

    def memory_free(self, ctx: BoardContext) -> int:
        return max(0, ctx.board.model_memory - self.memory_in_use())

    # --- loading -----------------------------------------------------------------------------------------
    def __call__(self, ctx: BoardContext, data: bytes) -> LoadedKmodel:
        from k210tool.compile.kmodel import KmodelError, kmodel_version, read_kmodel
        from k210tool.compile.kmodel.footprint import board_fit

        data = bytes(data)
        try:
            version = kmodel_version(data)
        except KmodelError as exc:
            raise KmodelRejected("format", exc.message) from None
        fw = ctx.board.firmware
        if not fw.loads(version):
            raise KmodelRejected("version", f"{fw.name} loads kmodel v{'/v'.join(map(str, fw.kmodel_versions))}, "
                                            f"this one is v{version}")
        try:
            km = read_kmodel(data)
        except KmodelError as exc:
            raise KmodelRejected("format", exc.message) from None
        fit = board_fit(km, fw, self.memory_in_use())
        if not fit.fits:
            gc.collect()  # models of scripts that are gone (soft reset) give their memory back first
            fit = board_fit(km, fw, self.memory_in_use())
        if not fit.fits:
            raise KmodelRejected(fit.problem, fit.reason)
        engine = self._engine(data, version)
        model = LoadedKmodel(data, version, hashlib.sha256(data).hexdigest(), _input_chw(km),
                             [tuple(t.shape) for t in km.outputs], fit.total, engine, self)
        self._live.add(model)
        self.loads += 1
        return model

    def _engine(self, data: bytes, version: int) -> Any:
        if version == 3:
            raise KmodelRejected("emulator", "k210tool's virtual board cannot run kmodel v3 (nncase 0.1); "
                                              "the real board loads it: use a v4/v5 model here")
        # the board runs what it is given: a v4 kmodel asked of nncase (whose Simulator reads v5 only) runs on NumPy
        name = choose_engine(self.engine_name if version == 5 else "auto", version)
        key = (hashlib.sha256(data).hexdigest(), name)
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        try:
            engine = make_engine(name, data, "NCHW")
        except Exception as exc:  # the runtime cannot make sense of it: the board's loader fails too
            raise KmodelRejected("format", f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        self._engines[key] = engine
        while len(self._engines) > _CACHE_SIZE:
            self._engines.popitem(last=False)
        return engine


def _input_chw(km: Any) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in km.inputs[0].shape) if km.inputs else ()
    if len(shape) == 4:
        return shape[1], shape[2], shape[3]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    raise KmodelRejected("format", f"the kmodel's input shape {list(shape)} is not an image")


def read_flash_model(ctx: BoardContext, address: int, size: int | None = None) -> bytes:
    """The bytes at ``address`` of the board's flash: ``size`` of them, or - when the firmware works the
    size out from the kmodel's header - the kmodel found there: the written extent up to the first erased
    4 KiB sector, without the erased (0xFF) tail when the kmodel reads completely without it."""
    from k210tool.compile.kmodel import KmodelError, read_kmodel

    flash = ctx.flash
    if size is not None:
        if address < 0 or address + size > flash.size:
            raise OSError(5, "EIO")
        return flash.read(address, size)
    sector = 4096
    end = address
    while end + sector <= flash.size and flash.read(end, sector) != b"\xff" * sector:
        end += sector
    if end == address:
        raise OSError(5, "EIO")  # nothing flashed there
    extent = flash.read(address, end - address)
    trimmed = extent.rstrip(b"\xff")
    try:
        read_kmodel(trimmed)  # a kmodel that really ends in 0xFF bytes does not read without them
    except KmodelError:
        return extent
    return trimmed


__all__ = ["KmodelLoader", "KmodelRejected", "LoadedKmodel", "read_flash_model"]
