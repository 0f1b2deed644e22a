"""Saving models as legacy tf.keras ``.h5`` files - what users bring and what ``k210tool convert`` reads.

Keras writes h5 files in place, so a crash mid-save would leave a broken file under the final name;
every save here goes to a temporary name beside the target and is renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from k210tool.fileio import check_output_path
from k210tool.train.config import ModelConfig


def save_model_atomic(model: Any, path: Path | str, include_optimizer: bool = False) -> Path:
    """Save ``model`` as ``path`` through a temporary file and a rename.

    tf_keras models go to a legacy ``.h5`` when the suffix is ``.h5`` (``save_format="h5"``); Keras 3
    models are saved by their own ``save`` (``.keras``, or legacy h5 for ``.h5``).
    """
    target = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".h5", dir=target.parent)
    os.close(fd)
    try:
        if type(model).__module__.startswith("tf_keras") and target.suffix in (".h5", ""):
            model.save(tmp, save_format="h5", include_optimizer=include_optimizer)
        else:
            model.save(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def export_inference(backbone: Any, cfg: ModelConfig, path: Path | str) -> Path:
    """The backbone alone (image -> embedding), float32, as a plain ``.h5`` with no custom layers."""
    from k210tool.train.models.backbones import float32_copy

    return save_model_atomic(float32_copy(backbone, cfg), path)


def export_training_model(training_model: Any, path: Path | str) -> Path:
    """The ``[image, label] -> logits`` model with its head (what training files from users look like)."""
    return save_model_atomic(training_model, path)
