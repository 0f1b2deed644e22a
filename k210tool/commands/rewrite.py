"""Library side of ``k210tool rewrite``: load, rewrite, measure, save.

The saved model is the float function the kmodel computes, on upright images: the original with the
approximate rules asked for (``--prelu relu|leaky``, ``--approximate``) - what to distill, or compare against.
The report also lists the exact lowering ``convert`` adds (the 180-degree turn of TF "same" stride 2), which
changes nothing the model computes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from k210tool.compile.calibration_source import (
    CalibrationOptions,
    calibration_images,
    check_calibration_source,
)
from k210tool.fileio import check_output_path
from k210tool.model.load import LoadOptions, load_model
from k210tool.model.rewrite import RewriteOptions, RewriteReport, rewrite_loaded, save_model
from k210tool.model.rules import RULES
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter


@dataclass(frozen=True)
class RewriteCommandOptions:
    model: Path
    output: Path
    prelu: str = "keep"
    approximate: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    calib: str | None = None
    calib_count: int = 64
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class RewriteResult:
    model: str
    output: str
    report: RewriteReport
    head_cut: str | None


def list_rule_table() -> list[dict[str, str]]:
    return [{"name": r.name, "matches": r.matches, "produces": r.produces, "exact": r.exact} for r in RULES]


def measurement_images(source: str | None, pre: Preprocess, count: int, reporter: Reporter) -> tuple[np.ndarray, str]:
    """Float model inputs to measure a rewrite on: the user's images, or synthetic faces."""
    if source is not None:
        cal = CalibrationOptions(source, count)
        check_calibration_source(cal)
        images, desc = calibration_images(cal, pre, reporter)
        return pre.normalize(images), desc
    from k210tool.train.data.synthetic import prepared_faces

    n = max(1, min(count, 32))
    return pre.normalize(prepared_faces(pre, n, first_seed=9000)), f"{n} synthetic faces (pass --calib for your own images)"


def run_rewrite(opts: RewriteCommandOptions, reporter: Reporter | None = None) -> RewriteResult:
    rep = reporter or Reporter()
    check_output_path(opts.output, [opts.model, opts.load.custom_objects, opts.calib])
    with rep.stage("load"):
        loaded = load_model(opts.model, opts.load, rep)
    pre = Preprocess.for_input(loaded.input_shape)
    images, desc = measurement_images(opts.calib, pre, opts.calib_count, rep)
    with rep.stage("rewrite"):
        report = rewrite_loaded(loaded, RewriteOptions(prelu=opts.prelu, approximate=opts.approximate, only=opts.only,
                                                         skip=opts.skip), rep, images, desc)
    with rep.stage("save"):
        # the float model the kmodel will compute, taking the upright image: the approximate rules' result (the
        # exact lowering - the 180-degree turn - is convert's business and changes nothing it computes)
        save_model(loaded.reference_model if loaded.reference_model is not None else loaded.original_model,
                   opts.output)
    return RewriteResult(str(opts.model), str(opts.output), report,
                         loaded.head_cut.describe() if loaded.head_cut else None)
