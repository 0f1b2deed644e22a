"""Small real models shaped like users' files, built with tf_keras and saved as legacy .h5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from k210tool.tfutil import import_tf_keras


def arcface_layer_class() -> type:
    """An ArcFace margin head as users write it: a custom class taking [embedding, label]."""
    k = import_tf_keras()
    tf = __import__("tensorflow")

    class ArcFace(k.layers.Layer):
        def __init__(self, n_classes: int = 10, s: float = 64.0, m: float = 0.5, **kw: Any) -> None:
            super().__init__(**kw)
            self.n_classes, self.s, self.m = n_classes, s, m

        def build(self, input_shape: Any) -> None:
            self.W = self.add_weight(name="W", shape=(int(input_shape[0][-1]), self.n_classes),
                                     initializer="glorot_uniform")

        def call(self, inputs: Any) -> Any:
            x, y = inputs
            x = tf.nn.l2_normalize(x, axis=1)
            w = tf.nn.l2_normalize(self.W, axis=0)
            logits = x @ w
            theta = tf.acos(tf.clip_by_value(logits, -1 + 1e-7, 1 - 1e-7))
            target = tf.cos(theta + self.m)
            onehot = tf.one_hot(tf.cast(y, tf.int32), self.n_classes)
            return tf.nn.softmax(self.s * (logits * (1 - onehot) + target * onehot))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "n_classes": self.n_classes, "s": self.s, "m": self.m}

    return ArcFace


def save_h5(model: Any, path: Path) -> Path:
    model.save(str(path), save_format="h5")
    return path


def tiny_backbone(size: int = 32, emb: int = 16, prelu: bool = True, seed: int = 0, channels: int = 3) -> Any:
    """A MobileFaceNet-shaped toy: stride-2 'same' convs, depthwise, PReLU, GDConv, linear embedding."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    L = k.layers
    inp = k.Input((size, size, channels), name="image")

    def act(x: Any) -> Any:
        return L.PReLU(shared_axes=[1, 2], alpha_initializer=k.initializers.Constant(0.25))(x) if prelu else L.ReLU()(x)

    x = act(L.BatchNormalization()(L.Conv2D(8, 3, 2, padding="same", use_bias=False)(inp)))
    x = act(L.BatchNormalization()(L.DepthwiseConv2D(3, 1, padding="same", use_bias=False)(x)))
    x = act(L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(x)))
    x = act(L.BatchNormalization()(L.DepthwiseConv2D(3, 2, padding="same", use_bias=False)(x)))
    y = L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(x))
    x = L.Add()([L.Conv2D(16, 1, use_bias=False)(x), y])
    s = int(x.shape[1])
    x = L.BatchNormalization()(L.DepthwiseConv2D(s, use_bias=False, name="gdconv")(x))
    x = L.Conv2D(emb, 1, use_bias=False, name="linear_conv")(x)
    x = L.Flatten(name="embedding")(L.BatchNormalization(name="embedding_bn")(x))
    return k.Model(inp, x, name="tiny_facenet")


def dense_tail(size: int = 32, width: int = 1024, emb: int = 512, seed: int = 0) -> Any:
    """Convs, a 1x1 conv to ``width`` channels, the global depthwise conv, then a fully connected embedding:
    ``width`` x ``emb`` float weights (2 MiB by default: more than MaixPy leaves for a model, in float)."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    L = k.layers
    inp = k.Input((size, size, 3), name="image")
    x = L.ReLU()(L.Conv2D(16, 3, 2, padding="same")(inp))
    x = L.ReLU()(L.Conv2D(32, 3, 2, padding="same")(x))
    x = L.Conv2D(width, 1)(x)
    x = L.Flatten()(L.DepthwiseConv2D(int(x.shape[1]), name="gdconv")(x))
    return k.Model(inp, L.Dense(emb, name="embedding")(x), name="dense_tail")


def with_arcface(backbone: Any, n_classes: int = 10) -> Any:
    """Training model: [image, label] -> ArcFace softmax, the way users save it."""
    k = import_tf_keras()
    label = k.Input((), name="label", dtype="int32")
    ArcFace = arcface_layer_class()
    out = ArcFace(n_classes, name="arcface")([backbone.output, label])
    return k.Model([backbone.input, label], out, name="train_model")


def mobilenetv2_dense(size: int = 64, emb: int = 32, n_classes: int = 50, seed: int = 0) -> Any:
    """A MobileNetV2 (keras.applications, nested) backbone + Dense embedding + softmax classifier."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    base = k.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None, alpha=0.35)
    inp = k.Input((size, size, 3), name="image")
    x = k.layers.GlobalAveragePooling2D()(base(inp))
    x = k.layers.Dropout(0.2)(x)
    x = k.layers.Dense(emb, name="embedding")(x)
    x = k.layers.BatchNormalization(name="embedding_bn")(x)
    out = k.layers.Dense(n_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="mnv2_face")


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def run_tflite(data: bytes, x: np.ndarray) -> np.ndarray:
    """The TFLite interpreter's output, in chunks of the model's fixed batch (the last one padded)."""
    from k210tool.tfutil import import_tf

    tf = import_tf()
    interp = tf.lite.Interpreter(model_content=data)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    n = int(inp["shape"][0])
    parts = []
    for start in range(0, len(x), n):
        chunk = x[start:start + n]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], n - len(chunk), 0)])
        interp.set_tensor(inp["index"], padded.astype(np.float32))
        interp.invoke()
        parts.append(interp.get_tensor(out["index"])[:len(chunk)].copy())
    return np.concatenate(parts)


def prelu_facenet(size: int = 32, emb: int = 16, seed: int = 0, width: int = 8) -> Any:
    """A MobileFaceNet-shaped network with what trained ones have: per-channel PReLU slopes of both signs and
    above 1, TF 'same' stride-2 convolutions on even sizes, an expand/depthwise/project block with a residual
    add, a 1x1 conv + PReLU before the GDConv, a linear embedding. Random weights (seeded), BN folded in."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    L = k.layers

    def prelu(x: Any) -> Any:
        c = int(x.shape[-1])
        slopes = rng.uniform(-2.0, 2.5, c).astype(np.float32)
        return L.PReLU(shared_axes=[1, 2], alpha_initializer=k.initializers.Constant(slopes))(x)

    inp = k.Input((size, size, 3), name="image")
    x = prelu(L.Conv2D(width, 3, 2, padding="same")(inp))
    x = prelu(L.DepthwiseConv2D(3, 1, padding="same")(x))
    x = L.Conv2D(width, 1)(x)
    e = prelu(L.Conv2D(2 * width, 1)(x))
    e = prelu(L.DepthwiseConv2D(3, 2, padding="same")(e))
    x = L.Conv2D(2 * width, 1)(e)
    e = prelu(L.Conv2D(4 * width, 1)(x))
    e = prelu(L.DepthwiseConv2D(3, 1, padding="same")(e))
    x = L.Add()([x, L.Conv2D(2 * width, 1)(e)])
    x = prelu(L.Conv2D(4 * width, 1)(x))
    s = int(x.shape[1])
    x = L.DepthwiseConv2D(s, name="gdconv")(x)
    x = L.Conv2D(emb, 1, name="linear_conv")(x)
    x = L.Flatten(name="embedding")(x)
    return k.Model(inp, x, name="prelu_facenet")


def mobilenetv2_relu6(size: int = 32, emb: int = 32, seed: int = 0) -> Any:
    """A small MobileNetV2-shaped network: ReLU6 everywhere, inverted residual blocks (MobileNetV2's explicit
    ((0,1),(0,1)) padding before stride-2 depthwise convs), residual adds with a ReLU6 after them on a 4x4 map
    (the KPU) and on a 2x2 map (the CPU), GlobalAveragePooling2D, dropout and a Dense embedding with a batch norm. Batch norms are set
    from the data (:func:`_data_batch_norms`) so that every ReLU6 clips some values."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    L = k.layers

    def relu6(x: Any) -> Any:
        return L.ReLU(6.0)(L.BatchNormalization()(x))

    def block(x: Any, expand: int, out: int, stride: int) -> Any:
        c = int(x.shape[-1])
        e = relu6(L.Conv2D(c * expand, 1, use_bias=False)(x)) if expand > 1 else x
        if stride == 2:
            e = L.DepthwiseConv2D(3, 2, use_bias=False)(L.ZeroPadding2D(((0, 1), (0, 1)))(e))
        else:
            e = L.DepthwiseConv2D(3, padding="same", use_bias=False)(e)
        y = L.BatchNormalization()(L.Conv2D(out, 1, use_bias=False)(relu6(e)))
        return L.Add()([x, y]) if stride == 1 and c == out else y

    inp = k.Input((size, size, 3), name="image")
    x = relu6(L.Conv2D(16, 3, 2, padding="same", use_bias=False)(inp))
    x = block(x, 1, 8, 1)
    x = block(x, 6, 16, 2)
    x = block(x, 6, 16, 1)
    x = block(x, 4, 24, 2)
    x = L.ReLU(6.0)(block(x, 4, 24, 1))  # an add with a clip, on the KPU
    x = block(x, 4, 32, 2)
    x = L.ReLU(6.0)(block(x, 4, 32, 1))  # ... and on the CPU (2x2 is under the KPU's 4x4)
    x = relu6(L.Conv2D(64, 1, use_bias=False)(x))
    x = L.Dropout(0.2)(L.GlobalAveragePooling2D()(x))
    x = L.BatchNormalization(name="embedding_bn")(L.Dense(emb, name="embedding")(x))
    model = k.Model(inp, x, name="mobilenetv2_relu6")
    _data_batch_norms(model, np.random.default_rng(seed))
    return model


def _data_batch_norms(model: Any, rng: np.random.Generator, images: int = 16) -> None:
    """Set each batch norm's statistics from what reaches it on smooth random images, then its scale and
    shift so its output spreads over about -1..8 (a ReLU6 after it clips the top)."""
    k = import_tf_keras()
    h, w, c = (int(d) for d in model.input_shape[1:])
    x = rng.random((images, h // 4 + 1, w // 4 + 1, c))
    x = np.kron(x, np.ones((1, 4, 4, 1)))[:, :h, :w] * 2.0 - 1.0  # blocky images: large activations stay
    norms = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    probe = k.Model(model.inputs, [layer.input for layer in norms])
    for i, layer in enumerate(norms):  # in order: each one's input depends on those before it
        v = np.asarray(probe(x, training=False)[i], np.float64)
        v = v.reshape(-1, v.shape[-1])
        n = v.shape[-1]
        layer.set_weights([rng.uniform(1.5, 3.0, n), rng.uniform(0.5, 3.0, n), v.mean(0), v.var(0) + 1e-3])


def wide_bottleneck(size: int = 64, expand: int = 384, seed: int = 0, name: str = "project") -> Any:
    """A MobileFaceNet-shaped network with one bottleneck too wide for the KPU's 2 MiB of RAM at full
    resolution: 16 -> ``expand`` channels (1x1, PReLU), a 3x3 depthwise conv (PReLU), a 1x1 projection back
    to 16 (named ``name``) and a residual add; then a stride-2 depthwise, a 1x1 conv, GDConv, a linear
    embedding. At 64x64 each ``expand``-channel map takes ``expand`` * 4 KiB in the KPU's row layout."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    L = k.layers

    prelus: list[Any] = []

    def prelu(x: Any) -> Any:
        prelus.append(L.PReLU(shared_axes=[1, 2]))
        return prelus[-1](x)

    inp = k.Input((size, size, 3), name="image")
    x = prelu(L.Conv2D(16, 3, padding="same")(inp))
    e = prelu(L.Conv2D(expand, 1, name="expand")(x))
    e = prelu(L.DepthwiseConv2D(3, padding="same", name="depthwise")(e))
    x = L.Add()([x, L.Conv2D(16, 1, name=name)(e)])
    x = prelu(L.DepthwiseConv2D(3, 2, padding="same")(x))
    x = prelu(L.Conv2D(32, 1)(x))
    x = L.DepthwiseConv2D(int(x.shape[1]), name="gdconv")(x)
    x = L.Flatten(name="embedding")(L.Conv2D(32, 1, name="linear_conv")(x))
    model = k.Model(inp, x, name="wide_bottleneck")
    for layer in prelus:  # slopes of both signs and above 1, as trained PReLUs have (set after: saved plainly)
        shape = layer.get_weights()[0].shape
        layer.set_weights([rng.uniform(-1.0, 1.5, shape).astype(np.float32)])
    return model


def too_wide_for_kpu_ram(size: int = 64, channels: int = 512) -> Any:
    """A 1x1 conv whose ``channels`` x ``size`` x ``size`` output (2 MiB at 512 x 64 x 64) and its input cannot
    be in KPU RAM at once, and whose output goes to the CPU whole (GlobalAveragePooling2D): nothing to split."""
    k = import_tf_keras()
    k.utils.set_random_seed(0)
    L = k.layers
    inp = k.Input((size, size, 3), name="image")
    x = L.ReLU()(L.Conv2D(16, 3, padding="same")(inp))
    x = L.ReLU()(L.Conv2D(channels, 1, name="too_wide")(x))
    x = L.Dense(32, name="embedding")(L.GlobalAveragePooling2D()(x))
    return k.Model(inp, x, name="too_wide")
