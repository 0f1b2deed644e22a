"""Engines that run a kmodel on the host, one interface for all of them.

An engine takes a batch of *prepared* uint8 images (``Preprocess.prepare``: ``(N, H, W, C)`` in the
model's channel order) and returns the kmodel's outputs, each as a float32 array with the batch first.
``NncaseEngine`` wraps nncase 1.9's ``Simulator`` (the reference); a NumPy KPU interpreter implements
the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from k210tool.errors import InputError

ENGINES = ("nncase", "numpy")  # engines that run a kmodel
ENGINE_CHOICES = ("auto", *ENGINES)  # what --engine accepts


class Engine(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """uint8 ``(N, H, W, C)`` -> list of outputs, each ``(N, ...)``."""
        ...


def choose_engine(requested: str, version: int) -> str:
    """The engine that runs a kmodel of ``version``: ``requested`` (one of :data:`ENGINE_CHOICES`) made definite.

    ``auto`` is nncase's Simulator (the reference) on v5 and the NumPy interpreter on v4, the only one that
    reads v4 (nncase 1.9 reads v5 only). Neither runs v3.
    """
    if requested not in ENGINE_CHOICES:
        raise InputError(f"unknown engine {requested!r}", f"use one of {', '.join(ENGINE_CHOICES)}")
    if version not in (4, 5):
        raise InputError(f"kmodel v{version} cannot be simulated here: nncase 1.9's Simulator and k210tool's NumPy "
                         "interpreter run kmodel v4 and v5", "convert with k210tool to get a v4 or v5 kmodel")
    if requested == "nncase" and version != 5:
        raise InputError("nncase's Simulator runs kmodel v5 only and this kmodel is v4",
                         "use --engine numpy (or auto), or compare the v5 kmodel (convert --kmodel-version 5)")
    if requested == "auto":
        return "nncase" if version == 5 else "numpy"
    return requested


def make_engine(name: str, kmodel: bytes, input_layout: str = "NCHW") -> Any:
    """An :class:`Engine` by name (one of :data:`ENGINES`)."""
    if name == "nncase":
        return NncaseEngine(kmodel, input_layout)
    if name == "numpy":
        try:
            from k210tool.sim.interp import NumpyEngine
        except ImportError as exc:
            raise InputError(f"the NumPy kmodel interpreter is not available here ({exc})",
                             "use --engine nncase") from None
        return NumpyEngine(kmodel, input_layout)
    raise InputError(f"unknown engine {name!r}", f"use one of {', '.join(ENGINES)}")


def to_layout(batch: np.ndarray, layout: str) -> np.ndarray:
    """NHWC uint8 batch -> the kmodel's input layout."""
    if layout == "NCHW":
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    return np.ascontiguousarray(batch)


class NncaseEngine:
    """nncase 1.9 ``Simulator`` on a kmodel v5. Runs one image at a time (the kmodel has batch 1)."""

    name = "nncase"

    def __init__(self, kmodel: bytes, input_layout: str = "NCHW") -> None:
        from k210tool.tfutil import quiet_stderr

        if kmodel[:4] != b"LDMK" or int.from_bytes(kmodel[4:8], "little") != 5:
            raise InputError("nncase's Simulator runs kmodel v5 files only",
                             "use --engine numpy (k210tool's interpreter runs v4), or convert with "
                             "--kmodel-version 5 for a v5 kmodel")
        with quiet_stderr():
            import nncase
        self._nncase = nncase
        self._sim = nncase.Simulator()
        try:
            self._sim.load_model(kmodel)
        except RuntimeError as exc:
            raise InputError(f"nncase cannot load this kmodel: {exc}", "is the file complete?") from None
        self.input_layout = input_layout
        self.outputs = self._sim.outputs_size

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = to_layout(np.asarray(batch, np.uint8), self.input_layout)
        per_output: list[list[np.ndarray]] = [[] for _ in range(self.outputs)]
        for i in range(len(x)):
            self._sim.set_input_tensor(0, self._nncase.RuntimeTensor.from_numpy(x[i : i + 1]))
            self._sim.run()
            for j in range(self.outputs):
                per_output[j].append(self._sim.get_output_tensor(j).to_numpy().copy())
        return [np.concatenate(o, axis=0).astype(np.float32) for o in per_output]
