"""The one image -> tensor path. Calibration, compare, training and the board templates all use it.

Two steps, kept apart on purpose:

1. :meth:`Preprocess.prepare` turns any RGB image into the uint8 tensor the *kmodel* takes
   (resized/cropped to the model input, channel order of the model). This is what the board feeds
   the KPU and what nncase's calibration and Simulator receive.
2. :meth:`Preprocess.normalize` turns those uint8 pixels into the float input the *Keras model*
   expects: ``(pixel - mean) / std`` per channel. nncase is told the same mean/std
   (:meth:`nncase_options`), so the kmodel's built-in preprocessing reproduces it on the device.

Images are RGB everywhere inside k210tool; ``color="BGR"`` means the *model* was trained on BGR input
(OpenCV-style), in which case ``prepare`` swaps the channels once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp")
RESIZE_MODES = ("crop", "stretch", "letterbox")


@dataclass(frozen=True)
class Preprocess:
    """How pixels become model input. The defaults are the insightface convention ``(x-127.5)/128``."""

    height: int = 112
    width: int = 112
    channels: int = 3
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (128.0, 128.0, 128.0)
    color: str = "RGB"
    resize: str = "crop"
    letterbox_value: int = 0

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR", "GRAY"):
            raise InputError(f"unknown colour order {self.color!r}", "use RGB, BGR or GRAY")
        if self.resize not in RESIZE_MODES:
            raise InputError(f"unknown resize mode {self.resize!r}", f"use one of {', '.join(RESIZE_MODES)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            object.__setattr__(self, "mean", _broadcast(self.mean, self.channels, "mean"))
            object.__setattr__(self, "std", _broadcast(self.std, self.channels, "std"))
        if any(s == 0 for s in self.std):
            raise InputError("--std must not be 0")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):  # nncase spins forever on a NaN
            raise InputError(f"--mean {list(self.mean)} / --std {list(self.std)} must be finite numbers")
        if min(self.height, self.width) < 1 or self.channels not in (1, 3):
            raise InputError(f"an input of {self.height}x{self.width}x{self.channels} is not an image",
                             "height and width are at least 1, channels 1 or 3")

    # -- construction helpers ----------------------------------------------------------------------
    @staticmethod
    def for_input(shape: tuple[int, int, int], mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None, input_range: tuple[float, float] | None = None,
                  color: str = "RGB", resize: str = "crop") -> Preprocess:
        """The preprocessing for a model input of ``shape`` (H, W, C), as ``convert`` chooses it: a 1-channel
        input takes grey pixels, normalised ``(x - 127.5) / 128`` unless ``mean``/``std`` say otherwise;
        ``input_range`` instead of ``mean``/``std`` maps 0..255 linearly onto it."""
        h, w, c = shape
        color = "GRAY" if c == 1 else color
        if input_range is not None:
            if mean is not None or std is not None:
                raise InputError("give either --input-range or --mean/--std, not both")
            return Preprocess.from_input_range(*input_range, height=h, width=w, channels=c, color=color,
                                               resize=resize)
        kw: dict[str, Any] = {}
        if mean is not None:
            kw["mean"] = mean
        if std is not None:
            kw["std"] = std
        if c != 3:
            kw.setdefault("mean", (127.5,))
            kw.setdefault("std", (128.0,))
        return Preprocess(height=h, width=w, channels=c, color=color, resize=resize, **kw)

    @staticmethod
    def from_input_range(low: float, high: float, **kw: Any) -> Preprocess:
        """Pixels 0..255 map linearly onto ``low..high`` (e.g. 0 1, or -1 1)."""
        if high <= low:
            raise InputError(f"--input-range {low} {high}: the upper end must be above the lower end")
        std = 255.0 / (high - low)
        mean = -low * std
        ch = kw.get("channels", 3)
        return Preprocess(mean=(mean,) * ch, std=(std,) * ch, **kw)

    @property
    def input_range(self) -> tuple[float, float]:
        """Float range the model sees for pixel values 0..255 (first channel)."""
        return ((0 - self.mean[0]) / self.std[0], (255 - self.mean[0]) / self.std[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "color": self.color,
            "resize": self.resize,
            "letterbox_value": self.letterbox_value,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Preprocess:
        try:
            return Preprocess._from_dict(d)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"malformed preprocessing record ({type(exc).__name__}: {exc})",
                             "re-run convert to write a new summary") from None

    @staticmethod
    def _from_dict(d: dict[str, Any]) -> Preprocess:
        return Preprocess(
            height=int(d["height"]),
            width=int(d["width"]),
            channels=int(d.get("channels", 3)),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            color=d.get("color", "RGB"),
            resize=d.get("resize", "crop"),
            letterbox_value=int(d.get("letterbox_value", 0)),
        )

    # -- step 1: image -> uint8 model-sized tensor ------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """RGB (or grey) uint8 image of any size -> uint8 ``(H, W, C)`` in the model's channel order."""
        img = _as_rgb_uint8(image)
        img = fit(img, self.height, self.width, self.resize, self.letterbox_value)
        if self.color == "BGR":
            img = img[..., ::-1]
        elif self.color == "GRAY":
            import cv2

            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
        return np.ascontiguousarray(img)

    def prepare_files(self, paths: Sequence[Path | str]) -> np.ndarray:
        return np.stack([self.prepare(load_image(p)) for p in paths]) if paths else self.empty()

    def empty(self) -> np.ndarray:
        return np.zeros((0, self.height, self.width, self.channels), np.uint8)

    # -- step 2: uint8 -> float model input --------------------------------------------------------
    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` (or one ``(H, W, C)``) -> float32 model input."""
        x = np.asarray(batch, dtype=np.float32)
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Float model input -> uint8 pixels (clipped), the inverse of :meth:`normalize`."""
        y = np.asarray(x, np.float32) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)

    def nncase_options(self) -> dict[str, Any]:
        """CompileOptions fields that make the kmodel's own preprocessing equal :meth:`normalize`.

        nncase maps the uint8 input onto ``input_range`` and then applies ``(x - mean) / std``;
        with ``input_range=[0, 255]`` that is exactly our ``normalize``.
        """
        return {"input_range": [0.0, 255.0], "mean": list(self.mean), "std": list(self.std)}


def _broadcast(values: Iterable[float], channels: int, what: str) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        return vals * channels
    if len(vals) != channels:
        raise InputError(f"--{what} needs 1 or {channels} values, got {len(vals)}")
    return vals


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"expected uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an image of shape (H, W, 3), got {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img[..., :3]


def fit(img: np.ndarray, height: int, width: int, mode: str = "crop", fill: int = 0) -> np.ndarray:
    """Resize ``img`` to ``height x width``: centre ``crop`` to the aspect ratio first, ``stretch``,
    or ``letterbox`` (keep aspect, pad with ``fill``)."""
    import cv2

    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    if mode == "crop":
        target = width / height
        if w / h > target:
            nw = max(1, round(h * target))
            x0 = (w - nw) // 2
            img = img[:, x0 : x0 + nw]
        else:
            nh = max(1, round(w / target))
            y0 = (h - nh) // 2
            img = img[y0 : y0 + nh]
    if mode in ("crop", "stretch"):
        interp = cv2.INTER_AREA if img.shape[0] > height else cv2.INTER_LINEAR
        return cv2.resize(img, (width, height), interpolation=interp)
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((height, width, img.shape[2]), fill, np.uint8)
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def load_image(path: Path | str) -> np.ndarray:
    """Decode an image file to RGB uint8. Raises InputError naming the file when it cannot."""
    import cv2

    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {p}: {exc.strerror or exc}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"cannot decode image {p}", "is it a valid JPEG/PNG file?")
    return np.ascontiguousarray(img[..., ::-1])


def save_image(path: Path | str, rgb: np.ndarray) -> None:
    """Encode an RGB uint8 image to ``path`` (format from the suffix), atomically."""
    import cv2

    from k210tool.fileio import write_bytes

    ok, buf = cv2.imencode(Path(path).suffix or ".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise InputError(f"cannot encode image for {path}")
    write_bytes(path, buf.tobytes())


def find_images(folder: Path | str) -> list[Path]:
    """All image files under ``folder`` (recursively), sorted for reproducibility."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass
class LoadedImages:
    """Prepared uint8 batch plus the files it came from and the ones that failed to decode."""

    images: np.ndarray
    paths: list[Path]
    skipped: list[Path]


def load_folder(folder: Path | str, pre: Preprocess, limit: int | None = None, *,
                seed: int = 0, reporter: Any = None) -> LoadedImages:
    """Prepare up to ``limit`` images from ``folder`` (a seeded random subset when there are more).

    Undecodable files are skipped and counted; an empty folder or one where nothing decodes is an
    InputError.
    """
    paths = find_images(folder)
    if not paths:
        raise InputError(f"no images (jpg/png/bmp) found in {folder}", "point to a folder of face crops")
    if limit is not None and len(paths) > limit:
        rng = np.random.default_rng(seed)
        paths = sorted(rng.choice(np.array(paths, dtype=object), size=limit, replace=False).tolist())
    good: list[np.ndarray] = []
    used: list[Path] = []
    skipped: list[Path] = []
    for p in _iter_progress(paths, reporter, f"reading images from {folder}"):
        try:
            good.append(pre.prepare(load_image(p)))
            used.append(p)
        except InputError:
            skipped.append(p)
    if not good:
        raise InputError(f"none of the {len(paths)} images in {folder} could be decoded")
    if skipped and reporter is not None:
        reporter.warn(f"skipped {len(skipped)} image(s) that could not be decoded, e.g. {skipped[0]}")
    return LoadedImages(np.stack(good), used, skipped)


def _iter_progress(items: Sequence[Any], reporter: Any, what: str) -> Iterator[Any]:
    if reporter is None:
        yield from items
        return
    with reporter.progress(what, total=len(items)) as bar:
        for item in items:
            yield item
            bar.advance()


def load_array(path: Path | str, pre: Preprocess) -> np.ndarray:
    """A ``.npy`` of images: uint8 (or float in 0..255) ``(N, H, W, C)`` or ``(N, C, H, W)``."""
    p = Path(path)
    try:  # memory-mapped: a header that declares more data than the file holds fails instead of allocating it
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {p} as a .npy array: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not isinstance(arr, np.ndarray):  # np.load opened an .npz archive
        arr.close()
        raise InputError(f"{p} is an .npz archive, not a .npy array", "save one array with np.save")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"{p} has shape {arr.shape}; expected (N, H, W, C) images")
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] not in (1, 3):
        raise InputError(f"{p} has shape {arr.shape}; expected RGB or grey images (N, H, W, 3|1)")
    if arr.shape[0] == 0:
        raise InputError(f"{p} holds no images")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            raise InputError(f"{p} holds NaN or infinite values", "save uint8 RGB pixel images")
        if not np.issubdtype(arr.dtype, np.number) or arr.min() < 0 or arr.max() > 255:
            raise InputError(f"{p} holds {arr.dtype} values outside 0..255", "save uint8 RGB pixel images")
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.stack([pre.prepare(a) for a in arr])
