"""Apply the KPU rewrite rules to a loaded model and report every change with its float cost.

The cost of a rule is measured, not assumed: the original and the rewritten float models embed the same
images (the calibration images in ``convert``) and the report gives the cosine between their embeddings,
per rule (that rule alone) and for the whole rewrite. Exact rules must stay at >= 0.9999.

Approximate rules run only when asked for, and first: the float model they leave (the *reference*) is what
the kmodel is compiled from, up to the exact lowering that follows, so it is what ``compare`` measures the
kmodel against. A graph turned by the exact stride-2 lowering takes its input turned by 180 degrees; the
measurements feed it turned images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.eval.fidelity import per_image_cosine
from k210tool.model.graph import Graph, annotate_shapes, build_model
from k210tool.model.rules import RULES, Change, Rule, RuleOptions
from k210tool.report import Reporter

EXACT_COSINE = 0.9999


@dataclass(frozen=True)
class RewriteOptions:
    prelu: str = "keep"  # keep (exact: the KPU backend runs per-channel PReLU) | relu | leaky (approximate)
    approximate: tuple[str, ...] = ()  # approximate rules asked for by name (symmetric-stride2, ...)
    only: tuple[str, ...] | None = None  # apply only these rules
    skip: tuple[str, ...] = ()


@dataclass
class RuleResult:
    rule: str
    changes: int
    exact: bool  # every change this rule made is exact
    cosine_mean: float | None
    cosine_min: float | None
    claim: str  # when the rule is exact in general


@dataclass
class RewriteReport:
    changes: list[Change]
    rules: list[RuleResult]
    cosine: float | None  # whole rewrite, mean over the images
    cosine_min: float | None
    images: str
    exact: bool
    next_steps: list[str] = field(default_factory=list)
    input_rotation: int = 0  # 180: the rewritten graph takes its input turned (done inside the kmodel)
    reference_cosine: float | None = None  # the float reference (approximate rules only) vs the original

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def selected_rules(opts: RewriteOptions) -> list[Rule]:
    """The exact rules, plus the approximate ones asked for (``--prelu relu|leaky``, ``--approximate``)."""
    names = [r.name for r in RULES]
    approximate = {r.name for r in RULES if r.approximate}
    for n in (opts.only or ()) + tuple(opts.skip) + tuple(opts.approximate):
        if n not in names:
            raise InputError(f"unknown rewrite rule {n!r}", f"rules: {', '.join(names)}")
    for n in opts.approximate:
        if n not in approximate:
            raise InputError(f"rule {n!r} is exact and always runs", f"approximate rules: {', '.join(sorted(approximate))}")
    if opts.prelu not in ("relu", "leaky", "keep"):
        raise InputError(f"--prelu {opts.prelu!r}: use keep, relu or leaky")
    wanted = set(opts.approximate) | ({"prelu"} if opts.prelu != "keep" else set())
    return [r for r in RULES if (opts.only is None or r.name in opts.only) and r.name not in opts.skip
            and (r.default or r.name in wanted)]


def rewrite_graph(graph: Graph, rules: list[Rule], opts: RewriteOptions) -> tuple[Graph, Any, list[Change]]:
    """Apply ``rules`` in order, each until it changes nothing; returns graph, built model, changes."""
    g = graph.copy()
    rule_opts = RuleOptions(prelu=opts.prelu)
    changes: list[Change] = []
    model = None
    for rule in rules:
        for _ in range(20):  # a rule never needs more passes; the bound guards against a rule bug
            made = rule.apply(g, rule_opts)
            if not made:
                break
            changes.extend(made)
            model = build_model(g)
            annotate_shapes(g, model)
    if model is None:
        model = build_model(g)
        annotate_shapes(g, model)
    return g, model, changes


def _embed(model: Any, images: np.ndarray, rotation: int = 0, batch: int = 32) -> np.ndarray:
    if rotation == 180:
        images = np.ascontiguousarray(images[:, ::-1, ::-1])
    outs = [np.asarray(model(images[i : i + batch], training=False)) for i in range(0, len(images), batch)]
    return np.concatenate(outs).reshape(len(images), -1)


@dataclass
class Rewritten:
    """A rewrite's result: the lowered graph and model, and the float reference the kmodel is measured
    against (the model after the approximate rules; None when none ran, i.e. the original)."""

    graph: Graph
    model: Any
    report: RewriteReport
    reference_graph: Graph | None = None
    reference_model: Any = None


def rewrite(graph: Graph, original_model: Any, images: np.ndarray | None, opts: RewriteOptions,
            images_desc: str = "", reporter: Reporter | None = None) -> Rewritten:
    """Rewrite ``graph``; measure on ``images`` (float model input, upright) when given."""
    rep = reporter or Reporter()
    rules = selected_rules(opts)
    approx = [r for r in rules if r.approximate]
    new_graph, new_model, changes = rewrite_graph(graph, rules, opts)
    ref_graph = ref_model = None
    if approx and any(c.rule in {r.name for r in approx} for c in changes):
        ref_graph, ref_model, _ = rewrite_graph(graph, approx, opts)
    base = _embed(original_model, images) if images is not None and len(images) else None
    results: list[RuleResult] = []
    for rule in rules:
        mine = [c for c in changes if c.rule == rule.name]
        if not mine:
            continue
        cmean = cmin = None
        if base is not None:
            if len(rules) == 1 or len({c.rule for c in changes}) == 1:
                alone, rotation = new_model, new_graph.input_rotation
            else:
                g1, alone, _ = rewrite_graph(graph, [rule], opts)
                rotation = g1.input_rotation
            cos = per_image_cosine(base, _embed(alone, images, rotation))  # type: ignore[arg-type]
            cmean, cmin = float(cos.mean()), float(cos.min())
        results.append(RuleResult(rule.name, len(mine), all(c.exact for c in mine), cmean, cmin, rule.exact))
    whole_mean = whole_min = ref_cos = None
    if base is not None and changes:
        cos = per_image_cosine(base, _embed(new_model, images, new_graph.input_rotation))  # type: ignore[arg-type]
        whole_mean, whole_min = float(cos.mean()), float(cos.min())
        if ref_model is not None:
            ref_cos = float(per_image_cosine(base, _embed(ref_model, images)).mean())  # type: ignore[arg-type]
    exact = all(c.exact for c in changes)
    report = RewriteReport(changes, results, whole_mean, whole_min, images_desc, exact,
                           input_rotation=new_graph.input_rotation, reference_cosine=ref_cos)
    report.next_steps = _next_steps(report)
    for r in results:
        if r.exact and r.cosine_min is not None and r.cosine_min < EXACT_COSINE:
            rep.warn(f"rule {r.rule} should be exact but its float cosine is {r.cosine_min:.6f}")
    return Rewritten(new_graph, new_model, report, ref_graph, ref_model)


def _next_steps(report: RewriteReport) -> list[str]:
    if not report.changes:
        return ["nothing to rewrite: the model is already in KPU-friendly form"]
    if report.exact:
        return ["every change is exact: the rewritten model computes the same embedding"]
    steps = ["some changes are approximations (see 'exact'); measure their cost on faces with "
             "`k210tool compare REWRITTEN.h5 MODEL.kmodel --original ORIGINAL.h5 --data FACES`"]
    if report.cosine is not None and report.cosine < 0.99:
        steps.append(f"the float embedding moved (cosine {report.cosine:.4f}): leave the approximate rules out "
                     "(convert is exact without them), or try to recover it with `k210tool distill --teacher "
                     "ORIGINAL.h5 --student REWRITTEN.h5 --data FACES`")
    else:
        steps.append("if verification accuracy drops, fine-tune with `k210tool distill --teacher ORIGINAL.h5 "
                     "--student REWRITTEN.h5 --data FACES`")
    return steps


def rewrite_loaded(loaded: Any, opts: RewriteOptions, reporter: Reporter | None = None,
                   images: np.ndarray | None = None, images_desc: str = "") -> RewriteReport:
    """Rewrite a :class:`~k210tool.model.load.LoadedModel` in place (its model and graph are replaced by the
    lowered ones); the original stays as ``loaded.original_model`` and the float reference (after the
    approximate rules, when any ran) as ``loaded.reference_model``."""
    if loaded.graph is None:
        raise InputError(f"{loaded.path} is a {loaded.format} file: only Keras models can be rewritten",
                         "rewrite the Keras model before exporting it")
    done = rewrite(loaded.graph, loaded.model, images, opts, images_desc, reporter)
    loaded.original_model = loaded.model
    loaded.model = done.model
    loaded.graph = done.graph
    loaded.reference_model = done.reference_model
    return done.report


def save_model(model: Any, path: Path) -> Path:
    """Save a rewritten model atomically: ``.h5`` (legacy, what tf_keras users load) or ``.keras``."""
    from k210tool.model.save import save_model_atomic

    return save_model_atomic(model, path)
