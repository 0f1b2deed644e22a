"""Keras model -> TFLite flatbuffer with a fixed batch-1 image input (what nncase imports)."""

from __future__ import annotations

from typing import Any

from k210tool.errors import CompileError


def export_tflite(model: Any, input_shape: tuple[int, int, int]) -> bytes:
    """Float TFLite of ``model`` (either Keras flavour) for one ``(H, W, C)`` image.

    Goes through a concrete function rather than ``from_keras_model`` so tf_keras and Keras 3 models take
    the same path and the batch dimension is fixed to 1 (nncase needs static shapes). A model lowered by
    turning it 180 degrees is exported as it is (it expects the turned image); the kmodel nncase makes of it
    gets the turn afterwards (:func:`k210tool.compile.kmodel.turn.turn_input`).
    """
    from k210tool.tfutil import import_tf, quiet_stderr

    tf = import_tf()
    spec = tf.TensorSpec([1, *input_shape], tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    # The converter saves its trackable object as a SavedModel first. Given the Keras model, that traces
    # every layer's call functions (3/4 of the export time of a MobileFaceNet); a bare module holding the
    # variables gives the same flatbuffer, byte for byte, in a quarter of the time. Kept as a fallback.
    holder = tf.Module()
    holder.held_variables = list(model.variables)
    try:
        with quiet_stderr():
            try:
                return _convert(tf, fn, holder)
            except Exception:  # noqa: BLE001 - the slow path below reports the real error
                return _convert(tf, fn, model)
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"TensorFlow Lite cannot export this model: {first}",
                           "ops outside TFLite's builtin set cannot run on the K210 either") from None


def _convert(tf: Any, fn: Any, trackable: Any) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], trackable)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return bytes(converter.convert())

