"""Run a float ``.tflite`` / ``.onnx`` file in its own runtime: the TFLite interpreter, onnxruntime.

``compare`` uses these as the float reference of such files rather than the Keras model k210tool imports
them into: the user's file, as its own runtime computes it, is the truth the kmodel is measured against,
and an importer mistake then shows up in the figures instead of being inherited by both columns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from k210tool.errors import InputError, ModelError

Runner = Callable[[np.ndarray], np.ndarray]


def native_runner(fmt: str, data: bytes) -> tuple[Runner, str]:
    """(run, description): ``run`` maps a float NHWC batch to the model's output, batch first."""
    if fmt == "tflite":
        return tflite_runner(data), "the TFLite interpreter"
    if fmt == "onnx":
        return onnx_runner(data), "onnxruntime"
    raise ValueError(fmt)


def tflite_runner(data: bytes) -> Runner:
    from k210tool.tfutil import import_tf, quiet_stderr

    tf = import_tf()
    with quiet_stderr():
        interp = tf.lite.Interpreter(model_content=data)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def invoke(chunk: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        return np.asarray(interp.get_tensor(out["index"]))

    return _in_chunks(invoke, int(inp["shape"][0]))


def onnx_runner(data: bytes) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("running an .onnx model needs onnxruntime", "pip install 'k210tool[onnx]'") from None
    from k210tool.model.importers.onnx import input_is_nhwc

    nhwc = input_is_nhwc(data)
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph classes
        raise ModelError(f"onnxruntime cannot run the model: {str(exc).strip().splitlines()[0][:300]}") from None
    inp = session.get_inputs()[0]

    def invoke(chunk: np.ndarray) -> np.ndarray:
        x = chunk if nhwc else chunk.transpose(0, 3, 1, 2)
        return np.asarray(session.run(None, {inp.name: np.ascontiguousarray(x)})[0])

    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 0
    return _in_chunks(invoke, batch)


def _in_chunks(invoke: Callable[[np.ndarray], np.ndarray], fixed_batch: int) -> Runner:
    """Feed a model whose batch is fixed (TFLite files often are, even at 2) chunk by chunk, padding the last;
    ``fixed_batch`` 0 means any batch size."""

    def run(batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, np.float32)
        if not fixed_batch or len(x) == fixed_batch:
            return invoke(x)
        parts = []
        for start in range(0, len(x), fixed_batch):
            chunk = x[start:start + fixed_batch]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], fixed_batch - len(chunk), 0)])
            parts.append(invoke(padded)[:len(chunk)].copy())
        return np.concatenate(parts)

    return run
