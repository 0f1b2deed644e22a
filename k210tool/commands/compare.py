"""``compare``: what quantization (and the KPU rewrite) cost, measured before anything is flashed.

The float Keras model (TensorFlow, batched, cached) and the kmodel (nncase's Simulator or the bit-exact
NumPy interpreter, on every core) run on identical inputs, prepared once by the one preprocessing path
(:meth:`Preprocess.prepare`; the float model gets :meth:`Preprocess.normalize` of the same uint8 pixels).
With ``original`` a third column, the pre-rewrite float model, joins: original float / rewritten float /
kmodel. Figures: fidelity per output (:mod:`k210tool.eval.fidelity`), 10-fold verification and TAR@FAR
per column (:func:`k210tool.eval.verification.verify`), identification top-1 per column. Gates turn
them into a :class:`GateError` (exit code 4) after the report is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import GateError, InputError
from k210tool.eval.datasets import EvalData
from k210tool.eval.fidelity import Fidelity, compare_outputs
from k210tool.eval.identification import IdentificationResult, identify, split_gallery
from k210tool.eval.pairs import PairOptions
from k210tool.eval.verification import VerificationResult, pair_scores, roc_curve, verify
from k210tool.model.load import LoadOptions
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter
from k210tool.sim.engine import ENGINE_CHOICES
from k210tool.sim.kmodelrun import KmodelInfo, read_kmodel_file, resolve_engine, run_kmodel

FLOAT, ORIGINAL, REWRITTEN, KMODEL = "float", "original float", "rewritten float", "kmodel"


@dataclass(frozen=True)
class CompareOptions:
    model: Path  # the float model the kmodel was converted from (after the rewrite, if any)
    kmodel: Path
    data: Path | None = None  # identity folders (or, with ``pairs``, the LFW image folder)
    pairs: Path | None = None  # LFW pairs.txt
    bin: Path | None = None  # insightface verification .bin
    random: int | None = None  # that many random images (fidelity only)
    original: Path | None = None  # the pre-rewrite float model: a third column
    report: Path | None = None  # folder for report.md/.html/.json and the plots
    min_cosine: float | None = None  # gate: mean cosine kmodel vs float, per output
    max_acc_drop: float | None = None  # gate: verification accuracy drop in percentage points
    engine: str = "auto"  # auto | numpy | nncase
    workers: int | None = None  # simulator processes (None: every core)
    load: LoadOptions = field(default_factory=LoadOptions)
    pair_options: PairOptions = field(default_factory=PairOptions)
    limit: int | None = None  # at most this many images from ``data`` (seeded subset)
    gallery: int | None = None  # gallery images per identity (None: half)
    preprocess: Preprocess | None = None  # None: the kmodel's convert summary
    cache_dir: Path | None = None
    use_cache: bool = True
    seed: int = 0


@dataclass
class GateCheck:
    gate: str  # min-cosine | max-acc-drop
    limit: float
    value: float | None  # None: the figure could not be measured
    passed: bool
    what: str


@dataclass
class CompareResult:
    model: str
    kmodel: str
    original: str | None
    kmodel_version: int
    engine: str
    engine_note: str
    workers: int
    columns: list[str]
    data: dict[str, Any]
    preprocess: dict[str, Any]
    fidelity: list[Fidelity]
    verification: dict[str, VerificationResult]
    identification: dict[str, IdentificationResult]
    gates: list[GateCheck]
    float_cache: dict[str, dict[str, int]]
    simulator_images_per_second: float
    report_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass
class CompareArrays:
    """Per-image and per-pair numbers behind the figures: what the plots and report.json show."""

    cosines: dict[str, np.ndarray]  # fidelity label -> per-image cosine
    scores: dict[str, np.ndarray]  # column -> per-pair cosine score
    issame: np.ndarray | None
    roc: dict[str, tuple[np.ndarray, np.ndarray]]  # column -> (fpr, tpr)


def compare(opts: CompareOptions, reporter: Reporter | None = None) -> CompareResult:
    """Run the comparison, write the report (if asked) and apply the gates.

    A violated gate raises :class:`GateError` after the report is written; the error's ``result``
    attribute holds the :class:`CompareResult`.
    """
    rep = reporter or Reporter()
    result, arrays = measure(opts, rep)
    if opts.report is not None:
        from k210tool.eval.report import write_report

        with rep.stage("report"):
            result.report_files = [str(p) for p in write_report(opts.report, result, arrays)]
    failed = [g for g in result.gates if not g.passed]
    if failed:
        err = GateError("; ".join(_gate_text(g) for g in failed),
                        f"report in {opts.report}" if opts.report is not None else None)
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def measure(opts: CompareOptions, rep: Reporter) -> tuple[CompareResult, CompareArrays]:
    """Every figure of the comparison, and the arrays behind them (no files written, no gate raised)."""
    from k210tool.sim.floatrun import FloatRunner

    _check_options(opts)
    info = read_kmodel_file(opts.kmodel, rep)
    resolve_engine(opts.engine, info.version)  # --engine nncase on a v4 kmodel fails here, before slow work
    pre = opts.preprocess or info.preprocess(rep)
    original, model = float_models(opts, info, rep)
    runners = {ORIGINAL: FloatRunner(original, opts.load, pre, cache_dir=opts.cache_dir,
                                     use_cache=opts.use_cache, reporter=rep)} if original else {}
    runners[REWRITTEN if original else FLOAT] = FloatRunner(
        model, opts.load, pre, cache_dir=opts.cache_dir, use_cache=opts.use_cache, reporter=rep)
    with rep.stage("data"):  # before any model load: a bad .bin or an empty folder fails in a second
        data = _load_data(opts, pre, rep)
    for name, runner in runners.items():
        _check_input(info, runner.input_shape(), runner.path, name)
    outputs: dict[str, list[np.ndarray]] = {}
    cache: dict[str, dict[str, int]] = {}
    for name, runner in runners.items():
        with rep.stage(f"{name} model"):
            run = runner.run(data.images, f"{name} model")
        outputs[name], cache[name] = run.outputs, {"cached": run.cached, "computed": run.computed}
    with rep.stage("kmodel"):
        sim = run_kmodel(info, data.images, opts.engine, opts.workers, rep)
    outputs[KMODEL] = sim.outputs
    columns = list(outputs)

    fidelity, cosines = _fidelity(outputs, columns, rep)
    verification, scores, roc = _verification(outputs, columns, data, rep)
    identification = _identification(outputs, columns, data, opts.gallery, rep)
    result = CompareResult(
        model=str(model), kmodel=str(opts.kmodel), original=str(original) if original else None,
        kmodel_version=info.version, engine=sim.engine, engine_note=sim.note, workers=sim.workers, columns=columns,
        data=data.describe(), preprocess=pre.to_dict(), fidelity=fidelity, verification=verification,
        identification=identification, gates=[], float_cache=cache,
        simulator_images_per_second=round(sim.images_per_second, 3),
    )
    result.gates = _gates(opts, result)
    result.warnings = list(rep.warnings)
    result.stage_seconds = {k: round(v, 2) for k, v in rep.stage_seconds.items()}
    return result, CompareArrays(cosines, scores, data.pairs.issame if data.pairs is not None else None, roc)


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------
def _check_options(opts: CompareOptions) -> None:
    """Cheap checks before anything slow: one data source, files that exist, a usable report folder."""
    sources = [name for name, value in (("--data", opts.data if opts.pairs is None else None), ("--pairs", opts.pairs),
                                        ("--bin", opts.bin), ("--random", opts.random)) if value is not None]
    if not sources:
        raise InputError("no images to compare on",
                         "pass --data DIR (identity folders), --bin FILE.bin, --pairs pairs.txt or --random N")
    if len(sources) > 1:
        raise InputError(f"give one image source, not {' and '.join(sources)}",
                         "--data may be combined with --pairs only (as the LFW image folder)")
    for what, path in (("model", opts.model), ("kmodel", opts.kmodel), ("original model", opts.original),
                       ("--bin file", opts.bin), ("--pairs file", opts.pairs)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} {path} does not exist" if not Path(path).exists() else f"{what} {path} is not a file")
    if opts.data is not None and not Path(opts.data).is_dir():
        raise InputError(f"--data {opts.data} is not a folder", "pass a folder of images (one sub-folder per person)")
    if opts.engine not in ENGINE_CHOICES:
        raise InputError(f"unknown engine {opts.engine!r}", f"use one of {', '.join(ENGINE_CHOICES)}")
    if opts.workers is not None and opts.workers < 1:
        raise InputError("--workers must be at least 1")
    if opts.limit is not None and opts.limit < 1:
        raise InputError("--limit must be at least 1")
    if opts.max_acc_drop is not None and opts.random is not None:
        raise InputError("--max-acc-drop needs verification pairs; random images have none",
                         "use --data with identity folders, --bin or --pairs")
    if opts.min_cosine is not None and not -1.0 <= opts.min_cosine <= 1.0:
        raise InputError(f"--min-cosine {opts.min_cosine} is not a cosine", "give a number between -1 and 1")
    if opts.report is not None:
        _check_report_dir(Path(opts.report))


def float_models(opts: CompareOptions, info: KmodelInfo, rep: Reporter) -> tuple[Path | None, Path]:
    """(original, model): the float model(s) to compare the kmodel with.

    ``convert`` keeps the rewritten float model beside the kmodel (``X.rewritten.h5``, the summary's
    ``float_model``): it is what the kmodel was compiled from. When MODEL is the file convert was given and
    the rewrite changed it, MODEL becomes the "original float" column and the rewritten model the second.
    """
    if opts.original is not None:
        if _one_file(Path(opts.original), Path(opts.model)):
            rep.warn(f"MODEL and --original are one file ({Path(opts.model).name}): the two float columns are the "
                     "same model; give --original the model before the rewrite, MODEL the rewritten one")
        return Path(opts.original), Path(opts.model)
    s = info.summary
    if s is None or not s.float_model or not s.source or not _same_file(s.source, opts.model, info.path):
        return None, Path(opts.model)
    rewritten = _find_beside(s.float_model, info.path)
    if rewritten is not None and _same_file(str(rewritten), opts.model, info.path):
        return None, Path(opts.model)  # no rewrite happened: float_model is the source itself
    if rewritten is None:
        rep.warn(f"the kmodel was compiled from the rewritten model {s.float_model}, which is missing: comparing "
                 f"with {Path(opts.model).name}, so the figures include what the rewrite changed")
        return None, Path(opts.model)
    rep.info(f"{Path(opts.model).name} was rewritten for the KPU before compiling: comparing original float, "
             f"rewritten float ({rewritten.name}) and kmodel")
    return Path(opts.model), rewritten


def _find_beside(recorded: str, kmodel: Path) -> Path | None:
    """A path from the summary: as recorded, or under the kmodel's folder (the pair may have been moved)."""
    for candidate in (Path(recorded), kmodel.parent / Path(recorded).name):
        if candidate.is_file():
            return candidate
    return None


def _one_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _same_file(recorded: str, given: Path, kmodel: Path) -> bool:
    found = _find_beside(recorded, kmodel)
    try:
        return found is not None and Path(given).is_file() and found.samefile(given)
    except OSError:
        return False


def _check_report_dir(path: Path) -> None:
    import os

    if path.exists() and not path.is_dir():
        raise InputError(f"--report {path} is a file", "give a folder for the report")
    parent = path if path.exists() else path.parent
    if not parent.exists() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot write the report to {path}", "its parent folder must exist and be writable")


def _check_input(info: KmodelInfo, shape: tuple[int, ...], path: Path, column: str) -> None:
    if tuple(shape) != tuple(info.input_hwc):
        h, w, c = info.input_hwc
        raise InputError(f"the kmodel takes {h}x{w}x{c} images but {path.name} ({column}) takes "
                         f"{'x'.join(str(d) for d in shape)}", "compare the kmodel with the model it was converted from")


def _load_data(opts: CompareOptions, pre: Preprocess, rep: Reporter) -> EvalData:
    from k210tool.eval import datasets

    if opts.random is not None:
        return datasets.random_images(opts.random, pre, opts.seed)
    if opts.bin is not None:
        return datasets.from_bin(opts.bin, pre, rep)
    if opts.pairs is not None:
        return datasets.from_lfw(opts.pairs, opts.data, pre, rep)
    assert opts.data is not None
    return datasets.from_folders(opts.data, pre, opts.pair_options, opts.limit, opts.seed, rep)


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------
def _fidelity(outputs: dict[str, list[np.ndarray]], columns: list[str],
              rep: Reporter) -> tuple[list[Fidelity], dict[str, np.ndarray]]:
    kmodel = outputs[KMODEL]
    floats = [c for c in columns if c != KMODEL]
    for name in floats:
        if len(outputs[name]) != len(kmodel):
            raise InputError(f"the kmodel has {len(kmodel)} output(s), the {name} model {len(outputs[name])}",
                             "compare the kmodel with the model it was converted from")
    # the kmodel against the model it was compiled from first: that is what the gate checks
    pairs = [(floats[-1], KMODEL)] + ([(ORIGINAL, REWRITTEN), (ORIGINAL, KMODEL)] if ORIGINAL in outputs else [])
    results: list[Fidelity] = []
    cosines: dict[str, np.ndarray] = {}
    for ref, test in pairs:
        for j, (r, t) in enumerate(zip(outputs[ref], outputs[test], strict=True)):
            name = f"output {j}"
            if r[0].size != t[0].size:
                if test == KMODEL and ref != ORIGINAL:
                    raise InputError(f"{name}: the kmodel gives {t[0].size} values per image, the {ref} model "
                                     f"{r[0].size}", "compare the kmodel with the model it was converted from")
                rep.warn(f"{name}: {test} and {ref} differ in size ({t[0].size} vs {r[0].size}); not compared")
                continue
            fid, cos = compare_outputs(r, t, output=name, reference_name=ref, test_name=test)
            results.append(fid)
            cosines[f"{fid.label} ({name})" if len(outputs[ref]) > 1 else fid.label] = cos
    return results, cosines


def _verification(outputs: dict[str, list[np.ndarray]], columns: list[str], data: EvalData,
                  rep: Reporter) -> tuple[dict[str, VerificationResult], dict[str, np.ndarray], dict[str, Any]]:
    if data.pairs is None:
        return {}, {}, {}
    p = data.pairs
    results: dict[str, VerificationResult] = {}
    scores: dict[str, np.ndarray] = {}
    roc: dict[str, Any] = {}
    for name in columns:
        emb = outputs[name][0].reshape(len(data.images), -1)  # the embedding: the first output
        try:
            results[name] = verify(emb[p.left], emb[p.right], p.issame)
        except InputError as exc:
            rep.warn(f"no verification figures: {exc.message}")
            return {}, {}, {}
        scores[name] = pair_scores(emb[p.left], emb[p.right])
        roc[name] = roc_curve(scores[name], p.issame)
    for warning in next(iter(results.values())).warnings if results else []:  # the same for every column
        rep.warn(warning)
    return results, scores, roc


def _identification(outputs: dict[str, list[np.ndarray]], columns: list[str], data: EvalData, gallery: int | None,
                    rep: Reporter) -> dict[str, IdentificationResult]:
    if data.identities is None:
        return {}
    try:
        split = split_gallery(data.identities, gallery)
    except InputError as exc:
        rep.warn(f"no identification figures: {exc.message}")
        return {}
    return {name: identify(outputs[name][0].reshape(len(data.images), -1), split) for name in columns}


def _gates(opts: CompareOptions, r: CompareResult) -> list[GateCheck]:
    gates: list[GateCheck] = []
    if opts.min_cosine is not None:
        main = [f for f in r.fidelity if f.test == KMODEL and f.reference != ORIGINAL]
        for f in main:
            gates.append(GateCheck("min-cosine", opts.min_cosine, f.cosine_mean, f.cosine_mean >= opts.min_cosine,
                                   f"mean cosine {f.label} ({f.output})"))
    if opts.max_acc_drop is not None:
        reference = r.columns[0]
        if KMODEL in r.verification and reference in r.verification:
            drop = 100.0 * (r.verification[reference].accuracy - r.verification[KMODEL].accuracy)
            gates.append(GateCheck("max-acc-drop", opts.max_acc_drop, drop, drop <= opts.max_acc_drop,
                                   f"verification accuracy drop, {reference} -> kmodel (percentage points)"))
        else:
            gates.append(GateCheck("max-acc-drop", opts.max_acc_drop, None, False,
                                   "verification accuracy drop: no verification figures to check"))
    return gates


def _gate_text(g: GateCheck) -> str:
    if g.value is None:
        return f"--{g.gate} {g.limit:g} cannot be checked: {g.what}"
    op = "below" if g.gate == "min-cosine" else "above"
    return f"{g.what} is {g.value:.4f}, {op} --{g.gate} {g.limit:g}"

