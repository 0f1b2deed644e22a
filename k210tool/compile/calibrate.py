"""Per-channel value ranges of a float network on calibration images (what the KPU backend quantizes to).

The lowered Keras model runs on the calibration images (turned as the model expects), with an output at
every convolution and add before its activation; each channel's minimum and maximum are kept, and, for the
``percentile`` method, a histogram-free estimate: the ``q``-th percentile of each channel's values.
Layers split to fit KPU RAM (:mod:`k210tool.compile.ramsplit`) have tensors the Keras model does not: channel
slices of its tensors, and partial sums, computed here in float64 from the tensors they are made of.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k210tool.compile.netplan import Add, Conv, NetPlan

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
    tensors = _Tensors(plan)
    layers = sorted({layer for n in names for layer in tensors.keras_layers(n)})
    probe = k.Model(model.inputs, [model.get_layer(n).output for n in layers])
    lo = {n: None for n in names}
    hi = {n: None for n in names}
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for s in range(0, len(images), batch):
        outs = probe(images[s : s + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        found = {n: np.asarray(o, np.float64) for n, o in zip(layers, outs, strict=True)}
        for n in names:
            o = tensors.value(n, found)
            v = o.reshape(-1, o.shape[-1])
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


class _Tensors:
    """Where a plan tensor's values come from: a Keras layer's output, a channel slice of another tensor, or
    (a split layer's partial sums) its op applied to its inputs."""

    def __init__(self, plan: NetPlan) -> None:
        self.plan = plan
        self.made: dict[str, tuple[Conv | Add, bool]] = {}  # tensor -> (op, after the activation)
        for op in plan.ops:
            self.made[op.pre] = (op, False)
            self.made[op.dst] = (op, op.dst != op.pre)

    def keras_layers(self, tensor: str) -> list[str]:
        if tensor in self.plan.keras_outputs:
            return [self.plan.keras_outputs[tensor]]
        if tensor in self.plan.slices:
            return self.keras_layers(self.plan.slices[tensor][0])
        op, _act = self.made[tensor]
        inputs = (op.a, op.b) if isinstance(op, Add) else (op.src,)
        return [layer for t in inputs for layer in self.keras_layers(t)]

    def value(self, tensor: str, found: dict[str, np.ndarray]) -> np.ndarray:
        """NHWC float64 values of ``tensor`` for one batch, ``found`` holding the Keras layers' outputs."""
        if tensor in found:
            return found[tensor]
        if tensor in self.plan.keras_outputs:
            v = found[self.plan.keras_outputs[tensor]]
        elif tensor in self.plan.slices:
            src, a, b = self.plan.slices[tensor]
            v = self.value(src, found)[..., a:b]
        else:
            op, act = self.made[tensor]
            if act:
                v = op.act.apply(self.value(op.pre, found), axis=-1)
            elif isinstance(op, Add):
                v = self.value(op.a, found) + self.value(op.b, found)
            else:
                v = conv_nhwc(self.value(op.src, found), op)
        found[tensor] = v
        return v


def conv_nhwc(x: np.ndarray, op: Conv) -> np.ndarray:
    """``op`` (before its activation) on NHWC values ``x``, in float64."""
    t, b, le, r = op.pad
    x = np.pad(x, ((0, 0), (t, b), (le, r), (0, 0)))
    w = np.asarray(op.weights, np.float64)
    kh, kw, s = w.shape[2], w.shape[3], op.stride
    oh, ow = (x.shape[1] - kh) // s + 1, (x.shape[2] - kw) // s + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s, :]
            out += patch * w[:, 0, i, j] if op.depthwise else patch @ w[:, :, i, j].T
    return out + np.asarray(op.bias, np.float64)


def _subsample(v: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(v) <= count:
        return v
    idx = np.random.default_rng(seed).choice(len(v), count, replace=False)
    return v[idx]
