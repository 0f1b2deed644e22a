"""The convert summary: ``OUT.kmodel.json`` beside every kmodel, and the table ``convert`` prints.

Other commands read it back (:func:`read_summary`): ``compare`` and ``test-board`` for the input shape and
preprocessing, ``script`` for what the board must do before the KPU, ``flash`` for the kmodel version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k210tool.errors import InputError
from k210tool.preprocess import Preprocess

SUMMARY_SUFFIX = ".json"


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    layout: str = ""


@dataclass
class OpCounts:
    kpu_convs: int
    kpu_uploads: int  # CPU -> KPU round trips
    kpu_downloads: int
    cpu_ops: dict[str, int]  # every op of the CPU schedule
    cpu_compute_ops: dict[str, int]  # besides glue (quantize/dequantize/transpose/copy/call)
    problem_ops: dict[str, int]  # Pad/Slice/Binary/TableLookup1D...: what the rewrite removes


@dataclass
class Memory:
    """What the board's firmware allocates to load the kmodel (``compile.kmodel.footprint.board_fit``)."""

    input: int
    output: int
    data: int
    model: int  # the kmodel file, read whole into RAM first
    total: int  # model + working + overhead: what the firmware must find in RAM
    board_limit: int  # RAM the board's firmware leaves for models
    fits: bool
    working: int = 0  # the runtime's working memory (input + output + data)
    overhead: int = 0  # the firmware's allowance for the runtime's own objects (boards/firmware.toml)
    kpu_ram: int = 0  # peak KPU RAM, out of its own 2 MiB (not counted in total)
    reason: str = ""  # board_fit's one-line verdict

    @classmethod
    def from_fit(cls, fit: Any) -> Memory:
        inp, out = fit.parts.get("input", 0), fit.parts.get("output", 0)
        return cls(inp, out, fit.working - inp - out, fit.file, fit.total, fit.limit, fit.fits, fit.working,
                   fit.overhead, fit.kpu_ram, fit.reason)


@dataclass
class Summary:
    kmodel: str
    kmodel_version: int
    kmodel_size: int
    kmodel_sha256: str
    source: str
    source_format: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocess: dict[str, Any]
    quantization: dict[str, Any]
    ops: OpCounts
    memory: Memory
    board: str
    firmware: str
    flash_size: int
    fits_flash: bool
    loads_on: list[str]  # firmware families that load this kmodel version
    board_loads_it: bool
    float_model: str = ""  # the float model the kmodel was compiled from (the rewritten one, if any)
    head_cut: dict[str, Any] | None = None
    rewrite: dict[str, Any] | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    tool: str = ""
    nncase: str = ""
    backend: str = "nncase"  # who compiled it: k210tool (its own KPU backend) or nncase
    kpu: dict[str, Any] | None = None  # k210tool backend: KPU layers, MACs, weight bytes, KPU RAM
    fallback: str | None = None  # why k210tool's backend left the model to nncase
    # 180: the network inside turns its input by 180 degrees (exact stride-2 lowering); the kmodel itself
    # takes the upright image, so nothing outside has to know
    input_rotation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def get_preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)


def summary_path(kmodel: Path | str) -> Path:
    return Path(str(kmodel) + SUMMARY_SUFFIX)


def read_summary(kmodel_or_json: Path | str) -> Summary:
    """Read ``X.kmodel.json`` (given the kmodel or the JSON path)."""
    p = Path(kmodel_or_json)
    if p.suffix != SUMMARY_SUFFIX:
        p = summary_path(p)
    if not p.exists():
        raise InputError(f"no convert summary {p}", "it is written by `k210tool convert`; re-run convert or pass --summary")
    try:
        d = json.loads(p.read_text())
        d["inputs"] = [TensorInfo(**t) for t in d["inputs"]]
        d["outputs"] = [TensorInfo(**t) for t in d["outputs"]]
        d["ops"] = OpCounts(**d["ops"])
        d["memory"] = Memory(**d["memory"])
        summary = Summary(**d)
        _check_values(summary)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise InputError(f"{p} is not a k210tool convert summary ({type(exc).__name__}: {exc})".splitlines()[0],
                         "re-run convert to write it again") from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    summary.get_preprocess()  # malformed preprocessing is an InputError of its own
    return summary


def _check_values(s: Summary) -> None:
    """The fields other commands compute with have the types convert writes (a hand-edited file may not)."""
    if not isinstance(s.kmodel_version, int) or not isinstance(s.kmodel_size, int):
        raise TypeError("kmodel_version and kmodel_size must be integers")
    if not isinstance(s.kmodel_sha256, str) or (s.kmodel_sha256 and len(s.kmodel_sha256) != 64):
        raise ValueError("kmodel_sha256 must be a SHA-256 hex digest")
    for t in (*s.inputs, *s.outputs):
        if not isinstance(t.shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in t.shape):
            raise TypeError(f"shape of {t.name!r} must be a list of integers")
    if not isinstance(s.preprocess, dict) or not isinstance(s.quantization, dict):
        raise TypeError("preprocess and quantization must be objects")
    if not isinstance(s.memory.total, int) or not isinstance(s.memory.board_limit, int):
        raise TypeError("memory figures must be integers")
