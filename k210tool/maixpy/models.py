"""What a script template needs to know about a kmodel: its version, size, input and outputs, the
preprocessing it was converted with, and where it will live on the board.

The facts come from the convert summary ``MODEL.kmodel.json`` written next to the kmodel (or ``--summary``);
the kmodel version is also read from the file header (``k210tool.compile.kmodel.kmodel_version``) and
the two must agree.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k210tool.boards import Board
from k210tool.errors import DoesNotFitError, InputError
from k210tool.preprocess import Preprocess


def read_kmodel_header(path: Path) -> tuple[int, int]:
    """(version, size in bytes) of the kmodel at ``path``."""
    from k210tool.compile.kmodel import KmodelError, kmodel_version

    try:
        with path.open("rb") as fh:
            head = fh.read(8)
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read kmodel {path}: {exc.strerror or exc}") from None
    try:
        return kmodel_version(head), size
    except KmodelError as exc:
        raise InputError(f"{path}: {exc.message}", exc.hint) from None


def summary_path_for(model: Path) -> Path:
    return model.with_name(model.name + ".json")


def load_summary(model: Path, summary: Path | None = None, required: bool = True) -> dict[str, Any] | None:
    """The convert summary of ``model`` (``MODEL.kmodel.json`` beside it, or ``summary``)."""
    path = summary or summary_path_for(model)
    if not path.is_file():
        if not required and summary is None:
            return None
        raise InputError(
            f"no convert summary for {model} (looked for {path})",
            "run `k210tool convert` to write the kmodel and its .kmodel.json, or pass --summary FILE",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the convert summary {path}: {exc}",
                         "re-run k210tool convert to rewrite it") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a convert summary (expected a JSON object)")
    return data


@dataclass(frozen=True)
class Location:
    """Where a kmodel lives on the board: a raw flash address or a path on the board's filesystem."""

    address: int | None = None
    path: str | None = None

    @property
    def value(self) -> int | str:
        return self.address if self.address is not None else str(self.path)

    def __str__(self) -> str:
        return f"flash 0x{self.address:X}" if self.address is not None else str(self.path)


def parse_location(text: str) -> Location:
    """``0x300000`` / ``3145728`` -> flash address; ``/sd/face.kmodel`` -> board filesystem path."""
    t = text.strip()
    if t.startswith("/"):
        if any(ord(c) < 0x20 for c in t):
            raise InputError(f"board path {t!r} contains control characters")
        return Location(path=t)
    try:
        return Location(address=int(t, 0))
    except ValueError:
        raise InputError(f"bad on-board location {text!r}",
                         "give a flash address (0x300000) or an absolute board path (/sd/face.kmodel)") from None


def check_flash_region(board: Board, address: int, size: int, what: str) -> None:
    """Refuse a kmodel placed past the board's flash or over what the firmware reserves."""
    if address < 0 or address + size > board.flash_size:
        raise DoesNotFitError(
            f"{what} at 0x{address:X} ({size} bytes) runs past the {board.flash_size // 0x100000} MiB flash "
            f"of {board.id}", "choose a lower address or put it on the filesystem (/sd/...)")
    for region in board.firmware.flash_reserved:
        if region.overlaps(address, size):
            raise InputError(
                f"{what} at 0x{address:X}-0x{address + size:X} overlaps the {region.what} "
                f"(0x{region.start:X}-0x{region.end:X}) of {board.firmware.name}",
                "choose a free flash address or a filesystem path")


@dataclass(frozen=True)
class ScriptModel:
    """A kmodel as a template sees it."""

    file: Path
    size: int
    kmodel_version: int
    location: Location
    input_chw: tuple[int, int, int] | None  # from the summary; None when the model has none
    output_shapes: tuple[tuple[int, ...], ...]
    preprocess: Preprocess | None

    @property
    def output_sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.output_shapes)

    def output_whc(self) -> list[tuple[int, int, int]]:
        """Output shapes as MaixPy's set_outputs(task, i, w, h, ch) wants them."""
        out = []
        for shape in self.output_shapes:
            dims = [d for d in shape[1:]] if len(shape) > 1 else list(shape)
            if len(dims) == 3:  # C, H, W
                out.append((dims[2], dims[1], dims[0]))
            else:
                out.append((1, 1, math.prod(dims) if dims else 1))
        return out


def _input_chw(data: dict[str, Any], pre: Preprocess | None, name: str) -> tuple[int, int, int] | None:
    inputs = data.get("inputs") or []
    if not inputs:
        return (pre.channels, pre.height, pre.width) if pre else None
    first = inputs[0]
    shape = [int(d) for d in first.get("shape", [])]
    layout = str(first.get("layout", "NCHW")).upper()
    dtype = str(first.get("dtype", "uint8")).lower()
    if dtype != "uint8" or len(shape) != 4 or layout not in ("NCHW", "NHWC"):
        raise InputError(
            f"{name} takes {dtype} {layout} {shape}; board scripts feed uint8 NCHW images",
            "convert with k210tool convert (uint8 input, preprocessing inside the kmodel)")
    chw = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if pre is not None and chw != (pre.channels, pre.height, pre.width):
        raise InputError(f"{name}: the summary's input {chw} disagrees with its preprocess "
                         f"{pre.channels}x{pre.height}x{pre.width}", "re-run k210tool convert")
    return chw


def describe_model(file: Path, location: Location, summary: Path | None = None,
                   summary_required: bool = True) -> ScriptModel:
    """Read ``file``'s header and convert summary into a :class:`ScriptModel`."""
    if not file.is_file():
        raise InputError(f"kmodel {file} does not exist")
    version, size = read_kmodel_header(file)
    data = load_summary(file, summary, required=summary_required) or {}
    name = str(summary or summary_path_for(file))
    try:
        return _script_model(file, version, size, location, data, name, summary_required)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise InputError(f"{name} is malformed ({type(exc).__name__}: {exc})".splitlines()[0],
                         "re-run k210tool convert to rewrite it") from None


def _script_model(file: Path, version: int, size: int, location: Location, data: dict[str, Any], name: str,
                  summary_required: bool) -> ScriptModel:
    if "kmodel_version" in data and int(data["kmodel_version"]) != version:
        raise InputError(f"{name} says kmodel v{data['kmodel_version']} but {file} is v{version}",
                         "the summary belongs to another kmodel: re-run k210tool convert or pass --summary")
    if "kmodel_size" in data and int(data["kmodel_size"]) != size:
        raise InputError(f"{name} describes a {data['kmodel_size']}-byte kmodel but {file} has {size} bytes",
                         "the summary belongs to another kmodel: re-run k210tool convert or pass --summary")
    if data.get("kmodel_sha256") and data["kmodel_sha256"] != hashlib.sha256(file.read_bytes()).hexdigest():
        raise InputError(f"{name} was written for another kmodel than {file} (their SHA-256 differ)",
                         "the pair was not replaced together: re-run k210tool convert or pass --summary")
    pre = Preprocess.from_dict(data["preprocess"]) if "preprocess" in data else None
    if summary_required and pre is None:
        raise InputError(f"{name} has no preprocess entry", "re-run k210tool convert to rewrite the summary")
    outputs = tuple(tuple(int(d) for d in o.get("shape", [])) for o in data.get("outputs", []))
    return ScriptModel(file, size, version, location, _input_chw(data, pre, name), outputs, pre)
