"""Where calibration images come from: a folder of images, a ``.npy`` array, or ``random``.

Shared by ``convert`` (the images it quantizes with) and ``rewrite`` (the images it measures a rewrite on).
:func:`check_calibration_source` is cheap and runs before the slow model load; :func:`calibration_images`
prepares the batch with the model's :class:`~k210tool.preprocess.Preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from k210tool.errors import InputError
from k210tool.preprocess import Preprocess, find_images, load_array, load_folder
from k210tool.report import Reporter


@dataclass(frozen=True)
class CalibrationOptions:
    source: str | None = None  # a folder of images, a .npy file, or "random"
    count: int = 100
    seed: int = 0
    method: str = "auto"  # auto | minmax | percentile (k210tool backend) | nncase's no_clip, l2, kld_m*, cdf


def check_calibration_source(cal: CalibrationOptions) -> None:
    """Cheap checks before the slow model load."""
    if cal.source is None:
        raise InputError("no calibration data",
                         "pass --calib DIR (face crops), --calib FILE.npy, or --calib random to quantize without "
                         "data (accuracy is then not meaningful)")
    if cal.count < 1:
        raise InputError("--calib-count must be at least 1")
    if cal.source == "random":
        return
    p = Path(cal.source)
    if not p.exists():
        raise InputError(f"calibration source {p} does not exist")
    if not p.is_dir() and not p.is_file():
        raise InputError(f"calibration source {p} is neither a folder nor a regular file")
    if p.is_dir() and not find_images(p):
        raise InputError(f"calibration folder {p} holds no images (jpg/png/bmp, searched recursively)",
                         "point --calib at a folder of face crops")
    if p.is_file() and p.suffix.lower() != ".npy":
        raise InputError(f"calibration file {p} is not a .npy array", "use a folder of images or a .npy file")


def calibration_images(cal: CalibrationOptions, pre: Preprocess, reporter: Reporter) -> tuple[np.ndarray, str]:
    """Prepared uint8 calibration batch and a description of where it came from."""
    assert cal.source is not None
    if cal.source == "random":
        reporter.warn("calibrating on random images: the kmodel runs, but its accuracy is not meaningful")
        rng = np.random.default_rng(cal.seed)
        n = min(cal.count, 16)
        return rng.integers(0, 256, (n, pre.height, pre.width, pre.channels), dtype=np.uint8), "random"
    p = Path(cal.source)
    if p.is_dir():
        loaded = load_folder(p, pre, cal.count, seed=cal.seed, reporter=reporter)
        return loaded.images, f"{len(loaded.images)} images from {p}"
    arr = load_array(p, pre)
    if len(arr) > cal.count:
        arr = arr[np.random.default_rng(cal.seed).choice(len(arr), cal.count, replace=False)]
    return arr, f"{len(arr)} images from {p}"
