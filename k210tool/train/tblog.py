"""TensorBoard scalars without the ``tensorboard`` package.

``tf.summary.scalar`` lives in the tensorboard package, which k210tool does not depend on. The event
files only need TensorFlow's own ``tf.summary.write`` with the "scalars" plugin tag, which is what
``tf.summary.scalar`` writes too; TensorBoard (installed wherever the logs are viewed) reads them alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ScalarLog:
    """``log(name, value, step)`` into ``logdir``'s event files."""

    def __init__(self, logdir: Path | str) -> None:
        from tensorflow.core.framework import summary_pb2

        from k210tool.tfutil import import_tf

        self._tf = import_tf()
        self._writer = self._tf.summary.create_file_writer(str(logdir))
        self._meta = summary_pb2.SummaryMetadata()
        self._meta.plugin_data.plugin_name = "scalars"

    def log(self, name: str, value: float, step: int) -> None:
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(name, tf.constant(float(value), tf.float32), step=int(step), metadata=self._meta)

    def flush(self) -> None:
        self._writer.flush()


def read_scalars(logdir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """All scalars in ``logdir``'s event files: ``{tag: [(step, value), ...]}`` (for tests and reports)."""
    from tensorflow.core.util import event_pb2

    from k210tool.tfutil import import_tf

    tf = import_tf()
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)):
            event: Any = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                scalar = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                out.setdefault(value.tag, []).append((int(event.step), scalar))
    return out
