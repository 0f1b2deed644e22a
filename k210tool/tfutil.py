"""Import TensorFlow, tf_keras and Keras 3 once, quietly.

TensorFlow prints CUDA probes and absl banners from C++ while it imports, before any Python logging
setting can take effect. Library code imports TF through these helpers, which silence file
descriptor 2 for the duration of the import only (real errors still raise as exceptions).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "ABSL_MIN_LOG_LEVEL": "3",
    "KMP_WARNINGS": "0",
}


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Redirect the process-level stderr (fd 2) to /dev/null inside the block."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _prepare() -> None:
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save\\(\\)`.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="tensorflow.*")


def import_tf() -> Any:
    """``import tensorflow`` without its start-up noise; also quiets its Python loggers."""
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    _prepare()
    with quiet_stderr():
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tf


def import_tf_keras() -> Any:
    import_tf()
    with quiet_stderr():
        import tf_keras
    return tf_keras


def import_keras3() -> Any:
    import_tf()
    with quiet_stderr():
        import keras
    return keras
