"""The tf.data input pipeline: global shuffle, parallel decode, prefetch, exact positions for resume.

Each epoch's order is a permutation of the whole :class:`SampleIndex` (all shards, all identities) drawn
from ``(seed, epoch)``, and so is each sample's flip - so the pipeline is a pure function of
``(seed, epoch, start)``. Resuming at step ``s`` of an epoch starts the same permutation at sample
``s * batch`` and yields exactly the batches the interrupted run would have seen, without reading the
skipped images. Decoding goes through :class:`k210tool.preprocess.Preprocess` (OpenCV releases the GIL
while it decodes, so ``num_parallel_calls`` threads decode in parallel); order is kept deterministic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.preprocess import Preprocess
from k210tool.train.data.index import SampleIndex


@dataclass
class DecodeStats:
    """Samples that failed to decode (skipped), shared with the decode threads."""

    failed: int = 0
    examples: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str) -> None:
        with self._lock:
            self.failed += 1
            if len(self.examples) < 5:
                self.examples.append(what)


def epoch_plan(n: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, flips)`` of one epoch: a permutation of all ``n`` samples and a coin per position."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    return rng.permutation(n).astype(np.int64), rng.random(n) < 0.5


def load_sample(index: SampleIndex, pre: Preprocess, i: int, flip: bool, stats: DecodeStats | None = None
                ) -> tuple[np.ndarray, bool]:
    """Sample ``i`` as the float model input (and whether it decoded); ``flip`` mirrors it first."""
    from k210tool.eval.binfile import decode

    try:
        image = pre.prepare(decode(index.read(i)))
    except InputError:
        if stats is not None:
            stats.add(index.describe(i))
        return np.zeros((pre.height, pre.width, pre.channels), np.float32), False
    if flip:
        image = image[:, ::-1]
    return pre.normalize(image).astype(np.float32), True


def make_dataset(index: SampleIndex, pre: Preprocess, batch_size: int, *, seed: int, epoch: int,
                 start: int = 0, flip: bool = True, parallel_calls: int = 0, limit: int | None = None,
                 stats: DecodeStats | None = None) -> Any:
    """Batches ``(images float32 (B,H,W,C), labels int32 (B,))`` of epoch ``epoch`` from sample ``start``.

    ``limit`` caps the samples taken (whole batches only); incomplete final batches are dropped so
    every step sees the same batch size.
    """
    from k210tool.tfutil import import_tf

    tf = import_tf()
    order, flips = epoch_plan(len(index), seed, epoch)
    end = len(order) if limit is None else min(len(order), limit)
    order, flips = order[start:end], flips[start:end] & flip
    labels = index.labels[order]

    def decode(i: Any, f: Any) -> tuple[np.ndarray, bool]:
        return load_sample(index, pre, int(i), bool(f), stats)

    def tf_decode(i: Any, f: Any, label: Any) -> tuple[Any, Any, Any]:
        image, ok = tf.numpy_function(decode, [i, f], [tf.float32, tf.bool], stateful=False)
        image.set_shape((pre.height, pre.width, pre.channels))
        ok.set_shape(())
        return image, label, ok

    calls = parallel_calls if parallel_calls > 0 else tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices((order, flips, labels.astype(np.int32)))
    ds = ds.map(tf_decode, num_parallel_calls=calls, deterministic=True)
    ds = ds.filter(lambda image, label, ok: ok).map(lambda image, label, ok: (image, label))
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(samples: int, global_batch: int) -> int:
    steps = samples // global_batch
    if steps == 0:
        raise InputError(f"{samples} training images are fewer than one batch of {global_batch}",
                         "lower data.batch_size (or optim.accumulate)")
    return steps
