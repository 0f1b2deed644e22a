"""Saving models as legacy tf.keras ``.h5`` files - what users bring and what ``k210tool convert`` reads.

Keras writes h5 files in place, so a crash mid-save would leave a broken file under the final name;
every save here goes to a temporary name beside the target and is renamed into place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from k210tool.model.save import save_model_atomic
from k210tool.train.config import ModelConfig

__all__ = ["export_inference", "export_training_model", "save_model_atomic"]


def export_inference(backbone: Any, cfg: ModelConfig, path: Path | str) -> Path:
    """The backbone alone (image -> embedding), float32, as a plain ``.h5`` with no custom layers."""
    from k210tool.train.models.backbones import float32_copy

    return save_model_atomic(float32_copy(backbone, cfg), path)


def export_training_model(training_model: Any, path: Path | str) -> Path:
    """The ``[image, label] -> logits`` model with its head (what training files from users look like)."""
    return save_model_atomic(training_model, path)
