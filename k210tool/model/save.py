"""Saving Keras models atomically: a temporary name beside the target, then a rename.

Keras writes model files in place, so a crash mid-save would leave a broken file under the final name.
tf_keras models go to a legacy ``.h5`` (``save_format="h5"``, what users' tools and ``k210tool convert`` read)
when the suffix is ``.h5``; Keras 3 models are saved by their own ``save`` (``.keras``, or legacy h5).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from k210tool.errors import InputError
from k210tool.fileio import check_output_path

MODEL_SUFFIXES = (".h5", ".keras")


def save_model_atomic(model: Any, path: Path | str, include_optimizer: bool = False) -> Path:
    from k210tool.tfutil import quiet_stderr

    target = check_output_path(path)
    suffix = target.suffix.lower() or ".h5"
    if suffix not in MODEL_SUFFIXES:
        raise InputError(f"cannot save a model as {target.name}", "use a .h5 or .keras file name")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        with quiet_stderr():
            if type(model).__module__.startswith("tf_keras") and suffix == ".h5":
                model.save(tmp, save_format="h5", include_optimizer=include_optimizer)
            else:
                model.save(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target
