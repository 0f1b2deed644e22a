"""Importers: ``.tflite`` and ``.onnx`` files -> equivalent tf_keras functional models.

The models they return are built from standard Keras layers with the file's weights, NHWC with a free batch
dimension, so a TFLite or ONNX model goes through the same graph IR, head cutting, KPU rewrite rules, lint,
calibration and export as a Keras ``.h5``. Anything they cannot express exactly is a one-line
:class:`~k210tool.errors.ModelError` naming the operator.
"""

from __future__ import annotations

from k210tool.model.importers.onnx import import_onnx
from k210tool.model.importers.tflite import import_tflite

__all__ = ["import_onnx", "import_tflite"]
