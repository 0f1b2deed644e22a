"""The real trained MobileFaceNet (../shared/realdata/build.sh): its .tflite imports to the .h5's network.

Skipped when the real data is absent (it is built from package registries, ~5 min, and never committed).
``K210TOOL_REALDATA`` points at another build folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from model_factory import predict, run_tflite

from k210tool.model.load import load_model
from k210tool.preprocess import Preprocess, find_images
from k210tool.tfutil import import_tf_keras

REAL = Path(os.environ.get("K210TOOL_REALDATA", "/tmp/k210-realdata"))
pytestmark = pytest.mark.skipif(not (REAL / "models" / "mobilefacenet.tflite").is_file(),
                                reason=f"no real data in {REAL} (build it with ../shared/realdata/build.sh)")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    pre = Preprocess(height=112, width=112)  # RGB, (x - 127.5) / 128: the model's own preprocessing
    files = [sorted(find_images(d))[0] for d in sorted((REAL / "faces").iterdir()) if d.is_dir()]
    return pre.normalize(pre.prepare_files(files))  # one face of each of the 40 people


def test_real_mobilefacenet_tflite_imports_to_the_interpreters_and_the_h5s_embeddings(faces) -> None:
    path = REAL / "models" / "mobilefacenet.tflite"
    lm = load_model(path)
    kinds = [n.class_name for n in lm.graph]
    assert kinds.count("PReLU") == 33 and kinds.count("Add") == 12 and lm.output_shape == (192,)
    got = predict(lm.model, faces)
    for name, ref in (("interpreter", run_tflite(path.read_bytes(), faces)),
                      ("h5", predict(import_tf_keras().models.load_model(REAL / "models" / "mobilefacenet.h5",
                                                                          compile=False), faces))):
        assert _cosine(got, ref).min() > 0.999999, name
        assert np.abs(got - ref).max() < 1e-3, (name, np.abs(got - ref).max())


def test_the_batch_of_two_file_as_shipped_imports_to_the_same_model(faces) -> None:
    b1, b2 = load_model(REAL / "models" / "mobilefacenet.tflite"), load_model(REAL / "models" / "mobilefacenet_b2.tflite")
    assert b2.input_shape == (112, 112, 3)
    np.testing.assert_array_equal(predict(b2.model, faces[:8]), predict(b1.model, faces[:8]))
