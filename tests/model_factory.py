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


def tiny_backbone(size: int = 32, emb: int = 16, prelu: bool = True, seed: int = 0) -> Any:
    """A MobileFaceNet-shaped toy: stride-2 'same' convs, depthwise, PReLU, GDConv, linear embedding."""
    k = import_tf_keras()
    k.utils.set_random_seed(seed)
    L = k.layers
    inp = k.Input((size, size, 3), name="image")

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
