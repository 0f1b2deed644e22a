"""Engines that run a kmodel on the host, one interface for all of them.

An engine takes a batch of *prepared* uint8 images (``Preprocess.prepare``: ``(N, H, W, C)`` in the
model's channel order) and returns the kmodel's outputs, each as a float32 array with the batch first.
``NncaseEngine`` wraps nncase 1.9's ``Simulator`` (the reference); a NumPy KPU interpreter implements
the same protocol.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from k210tool.errors import InputError


class Engine(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """uint8 ``(N, H, W, C)`` -> list of outputs, each ``(N, ...)``."""
        ...


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
