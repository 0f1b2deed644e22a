"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``), read safely.

The format is a pickle of ``(bins, issame_list)``: ``bins`` holds 2 x pairs encoded images (JPEG/PNG bytes),
``issame_list`` one bool per pair. These files come from the internet, and unpickling runs whatever the
file says, so they are read with :class:`RestrictedUnpickler`: it admits only the containers, bytes, bools
and NumPy arrays the format uses, and anything else is an :class:`InputError` before any object is built.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(latin-1 text, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode of {type(text).__name__} with {encoding!r} is not allowed")
    return text.encode("latin1")


def _from_text(kind: type) -> Any:
    """``bytes``/``bytearray`` as pickles call them: from nothing or from text/bytes - never ``bytes(10**10)``,
    which would allocate what the file only declares."""

    def build(*args: Any) -> Any:
        if len(args) > 2 or (args and not isinstance(args[0], (str, bytes, bytearray))):
            raise pickle.UnpicklingError(f"{kind.__name__}() from {type(args[0]).__name__} is not allowed")
        return kind(*args)

    return build


class _ArrayType:
    """Stands for ``numpy.ndarray`` in a pickle: usable only as ``_reconstruct``'s first argument (calling
    ``ndarray(shape)`` directly would allocate whatever shape the file declares)."""


def _numpy_globals(limit: int) -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _ArrayType:
            raise pickle.UnpicklingError("only plain NumPy arrays are allowed")
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise pickle.UnpicklingError(f"bad array shape {shape!r}")
        size = np.dtype(dtype).itemsize * int(np.prod(dims, dtype=object))
        if size > limit:  # the data must come from the file: an array cannot hold more than the file
            raise pickle.UnpicklingError(f"an array of {size:,} bytes in a {limit:,}-byte file")
        return ma._reconstruct(np.ndarray, dims, dtype)

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    allowed[("numpy", "ndarray")] = _ArrayType
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except bytes/containers/bools and plain NumPy arrays, and every
    construction that would allocate more than the file holds (``limit``: the file's size)."""

    def __init__(self, file: Any, *, limit: int, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = {
            ("_codecs", "encode"): _codecs_encode,
            ("builtins", "bytes"): _from_text(bytes),
            ("builtins", "bytearray"): _from_text(bytearray),
            ("__builtin__", "bytearray"): _from_text(bytearray),
            ("builtins", "list"): list,
            ("builtins", "tuple"): tuple,
            ("builtins", "bool"): bool,
            **_numpy_globals(limit),
        }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@dataclass
class VerificationSet:
    name: str
    images: list[bytes]  # encoded images, pair i = images[2i], images[2i+1]
    issame: np.ndarray

    @property
    def pairs(self) -> int:
        return len(self.issame)


def load_bin(path: Path | str, max_bytes: int = 4 << 30) -> VerificationSet:
    """Read a verification ``.bin`` without executing anything it contains."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError(f"{p} is {size} bytes, larger than a verification set should be")
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), limit=len(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise InputError(f"{p} is not a safe verification .bin: {exc}", "only insightface-style .bin files are read") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError, OverflowError,
            RecursionError) as exc:
        raise InputError(f"{p} is not a valid verification .bin ({type(exc).__name__}: {exc})") from None
    return _validate(p, obj)


def _validate(p: Path, obj: Any) -> VerificationSet:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise InputError(f"{p} does not hold (images, issame): found {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple, np.ndarray)):
        raise InputError(f"{p} does not hold (images, issame) lists")
    images: list[bytes] = []
    seen: dict[int, bytes] = {}  # a pickle may list one object many times: convert it once, share the bytes
    for item in bins:
        if id(item) in seen:
            images.append(seen[id(item)])
            continue
        if isinstance(item, np.ndarray) and item.dtype == np.uint8:
            images.append(item.tobytes())
        elif isinstance(item, (bytes, bytearray)):
            images.append(bytes(item))
        else:
            raise InputError(f"{p}: image entries must be encoded bytes, found {type(item).__name__}")
        seen[id(item)] = images[-1]
    same = np.asarray([bool(s) for s in issame], bool)
    if len(images) != 2 * len(same):
        raise InputError(f"{p}: {len(images)} images for {len(same)} pairs (expected {2 * len(same)})")
    if len(same) == 0:
        raise InputError(f"{p} holds no pairs")
    return VerificationSet(p.stem, images, same)


def decode(encoded: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8."""
    import cv2

    img = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError("an image in the verification set cannot be decoded")
    return np.ascontiguousarray(img[..., ::-1])


def write_bin(path: Path | str, images: list[np.ndarray], issame: list[bool] | np.ndarray, fmt: str = ".png") -> Path:
    """Write RGB images (2 per pair) as an insightface-style ``.bin`` (atomically)."""
    import cv2

    from k210tool.fileio import write_bytes

    encoded = []
    for img in images:
        ok, buf = cv2.imencode(fmt, np.ascontiguousarray(np.asarray(img)[..., ::-1]))
        if not ok:
            raise InputError("cannot encode an image for the .bin")
        encoded.append(buf.tobytes())
    payload = pickle.dumps((encoded, [bool(s) for s in issame]), protocol=2)
    return write_bytes(path, payload)
