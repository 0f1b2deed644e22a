"""MobileFaceNet (Chen et al., 2018) in tf_keras, as the paper describes it and in its KPU form.

``activation="prelu", stride2_padding="same"`` is the paper's network (PReLU, TensorFlow "same" padding
on stride-2 convs, 7x7 global depthwise conv, 128-d linear embedding). ``activation="relu",
stride2_padding="symmetric"`` is the form the K210's KPU runs well: the same layers with ReLU and an
explicit ZeroPadding2D((1, 1)) before each stride-2 conv, which is what `k210tool rewrite` produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (expansion t, output channels c, repeats n, first stride s) from Table 1 of the paper
PAPER_BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


@dataclass(frozen=True)
class MobileFaceNetConfig:
    input_size: int = 112
    embedding_size: int = 128
    activation: str = "prelu"  # prelu | relu | relu6 | leaky
    stride2_padding: str = "same"  # same (TensorFlow SAME) | symmetric (ZeroPadding2D(1) + valid)
    expansion_scale: float = 1.0  # multiplies every bottleneck's expansion ratio
    width: int = 64  # channels of the stem (the paper: 64)
    prelu_init: float = 0.25
    weight_decay: float = 0.0
    bottlenecks: tuple[tuple[int, int, int, int], ...] = PAPER_BOTTLENECKS
    # True: a shortcut wherever stride 1 keeps the channels (the paper's table read as MobileNetV2 does, and
    # insightface): 12 residual adds. False: the first block of every table row is plain: 10 adds.
    first_block_residual: bool = True


def build_mobilefacenet(config: MobileFaceNetConfig | None = None, name: str = "mobilefacenet", **kw: Any) -> Any:
    """Build the backbone as a tf_keras functional model: image -> ``embedding`` (N, embedding_size)."""
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    cfg = config or MobileFaceNetConfig(**kw)
    if cfg.activation not in ("prelu", "relu", "relu6", "leaky"):
        raise ValueError(f"unknown activation {cfg.activation!r}")
    if cfg.stride2_padding not in ("same", "symmetric"):
        raise ValueError(f"unknown stride-2 padding {cfg.stride2_padding!r}")
    L = k.layers
    reg = k.regularizers.l2(cfg.weight_decay) if cfg.weight_decay else None
    counter = {"n": 0}

    def uid(prefix: str) -> str:
        counter["n"] += 1
        return f"{prefix}_{counter['n']}"

    def act(x: Any, prefix: str) -> Any:
        if cfg.activation == "prelu":
            return L.PReLU(shared_axes=[1, 2], alpha_initializer=k.initializers.Constant(cfg.prelu_init),
                           name=uid(prefix + "_prelu"))(x)
        if cfg.activation == "leaky":
            return L.LeakyReLU(0.1, name=uid(prefix + "_leaky"))(x)
        return L.ReLU(6.0 if cfg.activation == "relu6" else None, name=uid(prefix + "_relu"))(x)

    def conv(x: Any, filters: int, kernel: int, stride: int, prefix: str, depthwise: bool = False) -> Any:
        padding = "same"
        if stride == 2 and cfg.stride2_padding == "symmetric":
            x = L.ZeroPadding2D(((kernel // 2,) * 2, (kernel // 2,) * 2), name=uid(prefix + "_pad"))(x)
            padding = "valid"
        if depthwise:
            return L.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False,
                                     depthwise_regularizer=reg, name=uid(prefix + "_dw"))(x)
        return L.Conv2D(filters, kernel, stride, padding=padding, use_bias=False,
                        kernel_regularizer=reg, name=uid(prefix + "_conv"))(x)

    def bn(x: Any, prefix: str) -> Any:
        return L.BatchNormalization(epsilon=1e-3, name=uid(prefix + "_bn"))(x)

    inp = k.Input((cfg.input_size, cfg.input_size, 3), name="image")
    x = act(bn(conv(inp, cfg.width, 3, 2, "stem"), "stem"), "stem")
    x = act(bn(conv(x, cfg.width, 3, 1, "stem2", depthwise=True), "stem2"), "stem2")
    channels = cfg.width
    for stage, (t, c, n, s) in enumerate(cfg.bottlenecks, start=1):
        for i in range(n):
            stride = s if i == 0 else 1
            prefix = f"b{stage}_{i}"
            expanded = max(1, round(channels * t * cfg.expansion_scale))
            y = act(bn(conv(x, expanded, 1, 1, prefix + "_expand"), prefix + "_expand"), prefix + "_expand")
            y = act(bn(conv(y, expanded, 3, stride, prefix, depthwise=True), prefix), prefix)
            y = bn(conv(y, c, 1, 1, prefix + "_project"), prefix + "_project")
            shortcut = stride == 1 and channels == c and (i > 0 or cfg.first_block_residual)
            x = L.Add(name=uid(prefix + "_add"))([x, y]) if shortcut else y
            channels = c
    x = act(bn(conv(x, 512, 1, 1, "head"), "head"), "head")
    spatial = int(x.shape[1])
    x = L.DepthwiseConv2D(spatial, 1, padding="valid", use_bias=False, name="gdconv")(x)
    x = L.BatchNormalization(epsilon=1e-3, name="gdconv_bn")(x)
    x = L.Conv2D(cfg.embedding_size, 1, use_bias=False, kernel_regularizer=reg, name="linear_conv")(x)
    x = L.BatchNormalization(epsilon=1e-3, name="embedding_bn")(x)
    x = L.Flatten(name="embedding")(x)
    return k.Model(inp, x, name=name)


def settle_batchnorm(model: Any, images: Any, batch_size: int = 16) -> None:
    """Set every BatchNormalization's moving statistics to those of ``images`` (float model input).

    A freshly initialised network has mean 0 / variance 1 in every BN, which makes its activations
    blow up or vanish layer after layer; one pass in training mode with momentum 0 gives it the
    well-scaled activations of a trained network, so quantization behaves realistically.
    """
    import numpy as np

    bns = [layer for layer in _all_layers(model) if type(layer).__name__ == "BatchNormalization"]
    saved = [b.momentum for b in bns]
    try:
        for b in bns:
            b.momentum = 0.0
        x = np.asarray(images, np.float32)[:batch_size]
        model(x, training=True)
    finally:
        for b, m in zip(bns, saved, strict=True):
            b.momentum = m


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_all_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def randomize_affine(model: Any, seed: int = 0) -> None:
    """Give BN gammas/betas and PReLU slopes seeded values that make a random network behave like a trained one.

    A freshly initialised BN+ReLU network is chaotic: it maps two faces to nearly orthogonal embeddings and
    amplifies any perturbation (8-bit quantization, a one-pixel padding shift) layer after layer, which no
    trained face model does. Positive betas on the BNs that feed an activation keep most units in the
    activation's linear part, which tames that: quantized/float cosines then look like a trained model's
    (~0.98) instead of ~0.7. Linear BNs (projections, GDConv, embedding) keep beta 0.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    layers = _all_layers(model)
    feeds_activation = set()
    for layer in layers:
        if type(layer).__name__ in ("PReLU", "ReLU", "LeakyReLU", "Activation"):
            for node in getattr(layer, "_inbound_nodes", [])[:1]:
                for parent in _inbound_layers(node):
                    feeds_activation.add(parent.name)
    for layer in layers:
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            new_beta = rng.uniform(0.5, 1.5, beta.shape) if layer.name in feeds_activation else np.zeros_like(beta)
            layer.set_weights([rng.uniform(0.7, 1.3, gamma.shape).astype(np.float32),
                               new_beta.astype(np.float32), mean, var])
        elif kind == "PReLU":
            (alpha,) = layer.get_weights()
            layer.set_weights([rng.uniform(0.05, 0.4, alpha.shape).astype(np.float32)])
        elif kind == "DepthwiseConv2D" and _is_global(layer):
            layer.set_weights([_smooth_global_kernel(layer.get_weights()[0], rng)])


def _is_global(layer: Any) -> bool:
    shape = layer.input_shape
    return tuple(layer.kernel_size) == (shape[1], shape[2])


def _smooth_global_kernel(kernel: Any, rng: Any) -> Any:
    """A trained global depthwise conv (GDConv) weights the face's centre smoothly; a random one is spatial
    noise that makes the embedding change completely under a one-cell shift. One Gaussian bump per channel."""
    import numpy as np

    kh, kw, channels, mult = kernel.shape
    yy, xx = np.mgrid[0:kh, 0:kw]
    cy = rng.uniform(0.3, 0.7, channels) * (kh - 1)
    cx = rng.uniform(0.3, 0.7, channels) * (kw - 1)
    sigma = rng.uniform(0.2, 0.45, channels) * kh
    bump = np.exp(-((yy[..., None] - cy) ** 2 + (xx[..., None] - cx) ** 2) / (2 * sigma**2))
    scale = rng.choice([-1.0, 1.0], channels) * rng.uniform(0.5, 1.5, channels)
    out = bump / bump.sum(axis=(0, 1)) * scale
    return np.repeat(out[..., None], mult, axis=3).astype(np.float32)


def _inbound_layers(node: Any) -> list[Any]:
    layers = getattr(node, "inbound_layers", [])
    return list(layers) if isinstance(layers, (list, tuple)) else [layers]
