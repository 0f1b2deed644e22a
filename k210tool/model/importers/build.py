"""Standard tf_keras layers with given weights: what both importers emit.

Every layer the importers create goes through :class:`KerasBuilder`, so a ``.tflite`` and an ``.onnx`` file
become the same kinds of layers a Keras user would have written (Conv2D, DepthwiseConv2D, PReLU,
BatchNormalization, ZeroPadding2D...), which is what the graph IR, head cutting, the KPU rewrite rules and
the lint understand. Weights are set as soon as a layer is called on its (symbolic) input.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from k210tool.errors import ModelError
from k210tool.model.rules import tf_same_pads

# A per-channel affine x * s + b as a BatchNormalization: with mean 0, variance 1 - 2^-10 and epsilon 2^-10
# the variance + epsilon is exactly 1.0 in float32, so the layer computes exactly x * gamma + beta - and the
# TFLite exporter and the fold-batchnorm rule fold it into the neighbouring conv like any other batch norm.
AFFINE_EPSILON = 2.0**-10

Pads = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def f32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


class KerasBuilder:
    """Creates uniquely named tf_keras layers and calls them; ``model()`` closes the graph."""

    def __init__(self) -> None:
        from k210tool.tfutil import import_tf_keras

        self.k = import_tf_keras()
        self.L = self.k.layers
        self._names: set[str] = set()

    # -- plumbing ---------------------------------------------------------------------------------
    def name(self, hint: str) -> str:
        """A valid, unique Keras layer name close to ``hint`` (a TFLite tensor or ONNX node name)."""
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", hint).strip("_.-") or "layer"
        if not base[0].isalnum():
            base = "l" + base
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def _call(self, layer: Any, x: Any, weights: list[np.ndarray] | None = None) -> Any:
        try:
            y = layer(x)
            if weights:
                layer.set_weights([f32(w) for w in weights])
        except ValueError as exc:  # shapes that do not fit: a malformed file
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "shape mismatch"
            raise ModelError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be built from the file: {first}") from None
        return y

    def input(self, hwc: tuple[int, int, int], name: str) -> Any:
        return self.k.Input(shape=hwc, name=self.name(name), dtype="float32")

    def model(self, inp: Any, out: Any, name: str) -> Any:
        return self.k.Model(inp, out, name=self.name(name))

    # -- convolutions -----------------------------------------------------------------------------
    def conv2d(self, x: Any, kernel_hwio: np.ndarray, bias: np.ndarray | None, strides: tuple[int, int],
               padding: str, dilation: tuple[int, int], name: str) -> Any:
        kh, kw, _, cout = kernel_hwio.shape
        layer = self.L.Conv2D(cout, (kh, kw), strides=strides, padding=padding, dilation_rate=dilation,
                              use_bias=bias is not None, name=self.name(name))
        return self._call(layer, x, [kernel_hwio] + ([bias] if bias is not None else []))

    def depthwise(self, x: Any, kernel: np.ndarray, bias: np.ndarray | None, strides: tuple[int, int],
                  padding: str, dilation: tuple[int, int], name: str) -> Any:
        """``kernel`` is (kh, kw, channels, multiplier): output channel c * multiplier + m, as TFLite/ONNX."""
        kh, kw, _, mult = kernel.shape
        layer = self.L.DepthwiseConv2D((kh, kw), strides=strides, padding=padding, depth_multiplier=mult,
                                       dilation_rate=dilation, use_bias=bias is not None, name=self.name(name))
        return self._call(layer, x, [kernel] + ([bias] if bias is not None else []))

    def dense(self, x: Any, kernel: np.ndarray, bias: np.ndarray | None, name: str) -> Any:
        layer = self.L.Dense(kernel.shape[1], use_bias=bias is not None, name=self.name(name))
        return self._call(layer, x, [kernel] + ([bias] if bias is not None else []))

    def explicit_padding(self, x: Any, pads: Pads, kernel: tuple[int, int], strides: tuple[int, int],
                         dilation: tuple[int, int], name: str, pool: str | None = None) -> tuple[Any, str]:
        """(input, padding) for a window op with explicit pads: "valid" when there are none, "same" when they
        are exactly TensorFlow's, otherwise a ZeroPadding2D before a "valid" op (not for max pooling, whose
        padding is -inf, nor average pooling, which would count the zeros)."""
        if not any(sum(p) for p in pads):
            return x, "valid"
        hw = x.shape[1:3]
        same = tuple(tf_same_pads(int(hw[i]), (kernel[i] - 1) * dilation[i] + 1, strides[i]) for i in range(2))
        if same == tuple(pads):
            return x, "same"
        if pool is not None:
            raise ModelError(f"{pool} {name!r}: padding {pads} is neither none nor TensorFlow's 'same' "
                             f"{same} (k210tool cannot express it with Keras pooling)")
        return self.zero_pad(x, pads, name + "_pad"), "valid"

    def zero_pad(self, x: Any, pads: Pads, name: str) -> Any:
        return self._call(self.L.ZeroPadding2D(tuple(tuple(int(v) for v in p) for p in pads), name=self.name(name)), x)

    # -- per-channel layers -----------------------------------------------------------------------
    def prelu(self, x: Any, alpha: np.ndarray, name: str) -> Any:
        """PReLU with ``alpha`` given per channel (C,), or a scalar, or the full per-element shape."""
        rank = len(x.shape)
        channels = int(x.shape[-1])
        a = f32(alpha)
        if a.size in (1, channels) and rank > 2:
            layer = self.L.PReLU(shared_axes=list(range(1, rank - 1)), name=self.name(name))
            weights = np.broadcast_to(a.reshape(-1), (channels,)).reshape((1,) * (rank - 2) + (channels,))
        elif a.size in (1, channels) or tuple(a.shape) == tuple(x.shape[1:]):
            layer = self.L.PReLU(name=self.name(name))
            weights = np.broadcast_to(a.reshape(-1) if a.size in (1, channels) else a, tuple(x.shape[1:]))
        else:
            raise ModelError(f"PReLU {name!r}: slope shape {a.shape} does not fit input {tuple(x.shape)}")
        return self._call(layer, x, [weights])

    def affine(self, x: Any, scale: np.ndarray, shift: np.ndarray, name: str) -> Any:
        """``x * scale + shift`` per channel (last axis), exactly, as a BatchNormalization layer."""
        c = int(x.shape[-1])
        gamma = np.broadcast_to(f32(scale).reshape(-1), (c,))
        beta = np.broadcast_to(f32(shift).reshape(-1), (c,))
        var = np.full(c, 1.0 - AFFINE_EPSILON, np.float32)
        return self.batchnorm(x, gamma, beta, np.zeros(c, np.float32), var, AFFINE_EPSILON, name)

    def with_constant(self, x: Any, kind: str, k: np.ndarray, const_first: bool, name: str) -> Any | None:
        """``x (op) k`` or ``k (op) x`` for a per-channel constant ``k`` as one exact affine layer; None when
        ``kind`` (add/sub/mul/div) has no such form (a constant divided by a tensor)."""
        ones, zeros = np.ones_like(k), np.zeros_like(k)
        if kind == "add":
            return self.affine(x, ones, k, name)
        if kind == "mul":
            return self.affine(x, k, zeros, name)
        if kind == "sub":
            return self.affine(x, -ones, k, name) if const_first else self.affine(x, ones, -k, name)
        if kind == "div" and not const_first:
            return self.affine(x, 1.0 / k, zeros, name)
        return None

    def batchnorm(self, x: Any, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                  epsilon: float, name: str) -> Any:
        layer = self.L.BatchNormalization(axis=-1, epsilon=float(epsilon), name=self.name(name))
        return self._call(layer, x, [gamma, beta, mean, var])

    # -- activations ------------------------------------------------------------------------------
    def activation(self, x: Any, kind: str, name: str, alpha: float = 0.2) -> Any:
        """relu / relu6 / leaky_relu / sigmoid / tanh / swish / softmax (last axis) / linear."""
        if kind == "linear":
            return x
        if kind == "relu":
            layer = self.L.ReLU(name=self.name(name))
        elif kind == "relu6":
            layer = self.L.ReLU(max_value=6.0, name=self.name(name))
        elif kind == "leaky_relu":
            layer = self.L.LeakyReLU(alpha=float(alpha), name=self.name(name))
        elif kind == "softmax":
            layer = self.L.Softmax(axis=-1, name=self.name(name))
        else:
            layer = self.L.Activation(kind, name=self.name(name))
        return self._call(layer, x)

    # -- pooling, merging, shapes -----------------------------------------------------------------
    def pool(self, x: Any, kind: str, size: tuple[int, int], strides: tuple[int, int], padding: str,
             name: str) -> Any:
        cls = self.L.MaxPooling2D if kind == "max" else self.L.AveragePooling2D
        return self._call(cls(size, strides=strides, padding=padding, name=self.name(name)), x)

    def global_pool(self, x: Any, kind: str, keepdims: bool, name: str) -> Any:
        cls = self.L.GlobalMaxPooling2D if kind == "max" else self.L.GlobalAveragePooling2D
        return self._call(cls(keepdims=keepdims, name=self.name(name)), x)

    def merge(self, kind: str, xs: list[Any], name: str) -> Any:
        cls = {"add": self.L.Add, "sub": self.L.Subtract, "mul": self.L.Multiply, "max": self.L.Maximum,
               "min": self.L.Minimum}[kind]
        return cls(name=self.name(name))(xs)

    def concat(self, xs: list[Any], axis: int, name: str) -> Any:
        return self.L.Concatenate(axis=axis, name=self.name(name))(xs)

    def flatten(self, x: Any, name: str) -> Any:
        return self._call(self.L.Flatten(name=self.name(name)), x)

    def reshape(self, x: Any, shape: tuple[int, ...], name: str) -> Any:
        return self._call(self.L.Reshape(shape, name=self.name(name)), x)

    def permute(self, x: Any, dims: tuple[int, ...], name: str) -> Any:
        return self._call(self.L.Permute(dims, name=self.name(name)), x)

    def l2_normalize(self, x: Any, name: str) -> Any:
        return self._call(self.L.UnitNormalization(axis=-1, name=self.name(name)), x)
