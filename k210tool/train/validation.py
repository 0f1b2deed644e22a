"""Embeddings of image batches and verification accuracy on insightface ``.bin`` sets.

Images go through :class:`~k210tool.preprocess.Preprocess` and the metrics through
:func:`k210tool.eval.verification.verify` - the project's one implementation of each.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.preprocess import Preprocess


@dataclass
class SetResult:
    name: str
    pairs: int
    accuracy: float
    accuracy_std: float
    best_threshold: float
    tar_at_far: dict[str, float]
    auc: float


@dataclass
class VerificationImages:
    """A verification set kept encoded (LFW-size sets would take ~0.5 GB decoded); decoded per chunk."""

    name: str
    encoded: list[bytes]  # 2 per pair
    issame: np.ndarray
    pre: Preprocess

    def __len__(self) -> int:
        return len(self.encoded)

    def prepared(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 model-sized images ``start:stop``."""
        from k210tool.eval.binfile import decode

        return np.stack([self.pre.prepare(decode(b)) for b in self.encoded[start:stop]])


def load_verification_set(path: Path | str, pre: Preprocess) -> VerificationImages:
    from k210tool.eval.binfile import decode, load_bin

    vs = load_bin(path)
    decode(vs.images[0])  # fail now, not at the first validation, when the set cannot be decoded
    return VerificationImages(vs.name, vs.images, vs.issame, pre)


def embed_set(model: Any, images: VerificationImages | np.ndarray, pre: Preprocess, flip: bool = True,
              chunk: int = 512) -> np.ndarray:
    """Embeddings of a whole set, decoding ``chunk`` images at a time."""
    if isinstance(images, np.ndarray):
        return embed(model, images, pre, flip=flip)
    parts = [embed(model, images.prepared(i, i + chunk), pre, flip=flip) for i in range(0, len(images), chunk)]
    return np.concatenate(parts)


_PREDICTORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def predictor(model: Any) -> Any:
    """``model`` in inference mode as one traced function (eager Keras calls are ~10x slower)."""
    fn = _PREDICTORS.get(model)
    if fn is None:
        from k210tool.tfutil import import_tf

        tf = import_tf()
        spec = tf.TensorSpec((None, *tuple(model.input_shape[1:])), tf.float32)
        fn = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), input_signature=[spec])
        _PREDICTORS[model] = fn
    return fn


def embed(model: Any, images: np.ndarray, pre: Preprocess, batch_size: int = 64, flip: bool = False) -> np.ndarray:
    """Embeddings (float32) of prepared uint8 ``images``; ``flip`` adds the mirrored image's embedding."""
    run = predictor(model)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        e = run(pre.normalize(batch)).numpy()
        if flip:
            e = e + run(pre.normalize(batch[:, :, ::-1])).numpy()
        out.append(e.reshape(len(batch), -1))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def evaluate(model: Any, sets: list[VerificationImages], pre: Preprocess, flip: bool = True) -> list[SetResult]:
    """10-fold verification accuracy (and TAR@FAR, AUC) of ``model`` on each set."""
    from k210tool.eval.verification import verify

    results = []
    for s in sets:
        emb = embed_set(model, s, pre, flip)
        r = verify(emb[0::2], emb[1::2], s.issame)
        results.append(SetResult(s.name, r.pairs, r.accuracy, r.accuracy_std, r.best_threshold, r.tar_at_far, r.auc))
    return results


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows (e.g. student vs teacher embeddings of the same images)."""
    from k210tool.eval.verification import pair_scores

    return float(np.mean(pair_scores(a, b)))
