"""Per-channel value ranges of a float network on calibration images (what the KPU backend quantizes to).

The lowered Keras model runs on the calibration images (turned as the model expects), with an output at
every convolution and add before its activation; each channel's minimum and maximum are kept, and, for the
``percentile`` method, a histogram-free estimate: the ``q``-th percentile of each channel's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.compile.netplan import NetPlan

METHODS = ("minmax", "percentile")


@dataclass
class Ranges:
    """Per tensor (a :class:`NetPlan` op's ``pre`` name): per-channel low and high values."""

    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    images: int
    method: str = "minmax"

    def get(self, tensor: str) -> tuple[np.ndarray, np.ndarray]:
        return self.lo[tensor], self.hi[tensor]


def calibrate(plan: NetPlan, model: object, images: np.ndarray, method: str = "minmax",
              percentile: float = 99.999, batch: int = 8) -> Ranges:
    """``images``: float model inputs (N, H, W, C), already normalized and turned as ``model`` expects."""
    from k210tool.tfutil import import_tf_keras

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: use one of {', '.join(METHODS)}")
    k = import_tf_keras() if type(model).__module__.startswith("tf_keras") else __import__("keras")
    names = sorted({op.pre for op in plan.ops})
    probe = k.Model(model.inputs, [model.get_layer(n).output for n in names])
    lo = {n: None for n in names}
    hi = {n: None for n in names}
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in range(0, len(images), batch):
        outs = probe(images[s : s + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, o in zip(names, outs, strict=True):
            v = np.asarray(o, np.float64).reshape(-1, o.shape[-1])
            a, b = v.min(axis=0), v.max(axis=0)
            lo[n] = a if lo[n] is None else np.minimum(lo[n], a)
            hi[n] = b if hi[n] is None else np.maximum(hi[n], b)
            if method == "percentile":
                samples[n].append(_subsample(v, 4096, s))
    if method == "percentile":
        for n in names:
            v = np.concatenate(samples[n])
            lo[n] = np.maximum(lo[n], np.percentile(v, 100 - percentile, axis=0))
            hi[n] = np.minimum(hi[n], np.percentile(v, percentile, axis=0))
    return Ranges(lo, hi, len(images), method)  # type: ignore[arg-type]


def _subsample(v: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(v) <= count:
        return v
    idx = np.random.default_rng(seed).choice(len(v), count, replace=False)
    return v[idx]
