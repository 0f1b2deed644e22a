"""The only module that drives the nncase 1.9 compiler (target ``k210``, uint8, kmodel v5).

The compile runs in a child process (:mod:`k210tool.compile._nncase_worker`): nncase prints from C++,
and segfaults on some inputs (for example when ``input_shape``/layouts are left unset), so the parent
stays alive to turn any failure into a clear :class:`CompileError`. nncase's own dump (memory usage,
CPU schedule, KPU ops) is parsed into a :class:`~k210tool.compile.dump.DumpInfo`.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.compile.dump import DumpInfo, parse_dump
from k210tool.errors import CompileError
from k210tool.fileio import scratch_dir
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

NNCASE_VERSION = "1.9.0.20230322"
_STEP = re.compile(r"^\s*(\d+)(?:\.\d+)*\.\s+(.+?)\.\.\.")


@dataclass(frozen=True)
class NncaseSettings:
    """What the compile needs beyond the model bytes."""

    preprocess: Preprocess
    model_format: str = "tflite"  # tflite | onnx
    model_layout: str = "NHWC"  # layout of the imported model's input
    input_layout: str = "NCHW"  # layout of the kmodel's uint8 input (the K210's planar camera buffer)
    calibrate_method: str = "no_clip"  # no_clip | l2 | kld_m0 | kld_m1 | kld_m2 | cdf
    timeout: float = 1800.0

    def input_shape(self) -> list[int]:
        p = self.preprocess
        if self.input_layout == "NCHW":
            return [1, p.channels, p.height, p.width]
        return [1, p.height, p.width, p.channels]

    def compile_options(self) -> dict[str, Any]:
        """nncase CompileOptions fields. Equal per-channel mean/std become an ``input_range`` (no CPU ops);
        per-channel statistics need nncase's mean/std, which cost a CPU Binary op on the device."""
        p = self.preprocess
        opts: dict[str, Any] = {
            "target": "k210",
            "input_type": "uint8",
            "preprocess": True,
            "input_layout": self.input_layout,
            "model_layout": self.model_layout,
            "output_layout": "NHWC" if self.model_layout == "NHWC" else "NCHW",
            "input_shape": self.input_shape(),
            "quant_type": "uint8",
            "w_quant_type": "uint8",
            "swapRB": False,
        }
        if len(set(p.mean)) == 1 and len(set(p.std)) == 1:
            lo, hi = p.input_range
            opts.update(input_range=[float(lo), float(hi)], mean=[0.0] * 3, std=[1.0] * 3)
        else:
            opts.update(p.nncase_options())
        return opts


@dataclass
class NncaseResult:
    kmodel: bytes
    dump: DumpInfo
    seconds: float
    log: str
    dump_dir: Path | None = None  # kept only when asked


def to_input_layout(batch_nhwc: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2) if layout == "NCHW" else batch_nhwc)


def compile_kmodel(model: bytes, settings: NncaseSettings, calibration: np.ndarray,
                   reporter: Reporter | None = None, keep_dump: Path | None = None) -> NncaseResult:
    """Quantize and compile ``model`` (tflite/onnx bytes) with ``calibration`` (uint8 NHWC, prepared)."""
    rep = reporter or Reporter()
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or len(calibration) == 0:
        raise CompileError("calibration data must be a non-empty uint8 (N, H, W, C) batch")
    with scratch_dir("nncase") as job:
        dump_dir = job / "dump"
        (job / "model.bin").write_bytes(model)
        np.save(job / "calib.npy", to_input_layout(calibration, settings.input_layout))
        (job / "job.json").write_text(json.dumps({
            "options": settings.compile_options(),
            "format": settings.model_format,
            "calibrate_method": settings.calibrate_method,
            "dump_dir": str(dump_dir),
        }))
        start = time.perf_counter()
        log = _run_worker(job, settings.timeout, rep)
        seconds = time.perf_counter() - start
        out = job / "model.kmodel"
        if not out.exists():
            raise CompileError("nncase finished without writing a kmodel", _last_lines(log))
        kmodel = out.read_bytes()
        dump = parse_dump(dump_dir)
        kept = None
        if keep_dump is not None:
            kept = Path(keep_dump)
            if kept.exists():
                shutil.rmtree(kept)
            shutil.copytree(dump_dir, kept)
    return NncaseResult(kmodel, dump, seconds, log, kept)


def _run_worker(job: Path, timeout: float, rep: Reporter) -> str:
    from k210tool.child import Deadline, run_streaming

    cmd = [sys.executable, "-m", "k210tool.compile._nncase_worker", str(job)]
    lines: list[str] = []
    with rep.progress("nncase compile") as bar:  # 8 steps of very unequal length: no known progress, no ETA
        step = 0

        def on_line(line: str) -> None:
            nonlocal step
            lines.append(line)
            m = _STEP.match(line)
            if m and step < int(m.group(1)) <= 8:
                bar.advance(int(m.group(1)) - step)
                step = int(m.group(1))
                bar.describe(f"nncase compile, step {step}/8: {m.group(2)}")

        try:
            code = run_streaming(cmd, timeout, on_line, cwd=job)
        except Deadline:
            raise CompileError(f"nncase did not finish within {timeout:.0f} s (stopped during '{_last_step(lines)}')",
                               "the model may be too large; run `k210tool check MODEL`") from None
    log = "\n".join(lines)
    if code != 0:
        if code < 0:
            raise CompileError(f"nncase crashed (signal {-code}) during '{_last_step(lines)}'",
                               "run `k210tool check MODEL` to see unsupported layers; --debug keeps the log")
        raise CompileError(f"nncase failed during '{_last_step(lines)}': {_error_line(lines)}",
                           "run `k210tool check MODEL` to see unsupported layers")
    return log


def _last_step(lines: list[str]) -> str:
    for line in reversed(lines):
        m = _STEP.match(line)
        if m:
            return m.group(2)
    return "start-up"


def _error_line(lines: list[str]) -> str:
    for line in reversed(lines):
        if any(w in line for w in ("Error", "error", "RuntimeError", "Exception", "not supported")):
            return line.strip()[:200]
    return (lines[-1].strip() if lines else "no output")[:200]


def _last_lines(log: str, n: int = 3) -> str:
    return " | ".join(log.strip().splitlines()[-n:])
