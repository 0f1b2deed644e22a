"""Saving Keras models atomically: Keras writes into a private scratch folder, the bytes then go to the
target through :func:`k210tool.fileio.atomic_open` (an unnamed file renamed into place).

Keras writes model files in place, so a crash mid-save would leave a broken file under the final name; a
scratch folder left by a killed run is swept by the next one.
tf_keras models go to a legacy ``.h5`` (``save_format="h5"``, what users' tools and ``k210tool convert`` read)
when the suffix is ``.h5``; Keras 3 models are saved by their own ``save`` (``.keras``, or legacy h5).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from k210tool.errors import InputError
from k210tool.fileio import atomic_open, check_output_path, scratch_dir

MODEL_SUFFIXES = (".h5", ".keras")


def save_model_atomic(model: Any, path: Path | str, include_optimizer: bool = False) -> Path:
    from k210tool.tfutil import quiet_stderr

    target = check_output_path(path)
    suffix = target.suffix.lower() or ".h5"
    if suffix not in MODEL_SUFFIXES:
        raise InputError(f"cannot save a model as {target.name}", "use a .h5 or .keras file name")
    with scratch_dir("save") as scratch:
        tmp = scratch / f"model{suffix}"
        with quiet_stderr():
            if type(model).__module__.startswith("tf_keras") and suffix == ".h5":
                model.save(tmp, save_format="h5", include_optimizer=include_optimizer)
            else:
                model.save(tmp)
        with tmp.open("rb") as src, atomic_open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target
