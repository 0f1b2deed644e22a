"""Apply the KPU rewrite rules to a loaded model and report every change with its float cost.

The cost of a rule is measured, not assumed: the original and the rewritten float models embed the same
images (the calibration images in ``convert``) and the report gives the cosine between their embeddings,
per rule (that rule alone) and for the whole rewrite. Exact rules must stay at >= 0.9999.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.model.graph import Graph, annotate_shapes, build_model
from k210tool.model.rules import RULES, Change, Rule, RuleOptions
from k210tool.report import Reporter

EXACT_COSINE = 0.9999


@dataclass(frozen=True)
class RewriteOptions:
    prelu: str = "relu"  # relu | leaky | keep
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def selected_rules(opts: RewriteOptions) -> list[Rule]:
    names = [r.name for r in RULES]
    for n in (opts.only or ()) + tuple(opts.skip):
        if n not in names:
            raise InputError(f"unknown rewrite rule {n!r}", f"rules: {', '.join(names)}")
    if opts.prelu not in ("relu", "leaky", "keep"):
        raise InputError(f"--prelu {opts.prelu!r}: use relu, leaky or keep")
    return [r for r in RULES if (opts.only is None or r.name in opts.only) and r.name not in opts.skip]


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


def _embed(model: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    outs = [np.asarray(model(images[i : i + batch], training=False)) for i in range(0, len(images), batch)]
    return np.concatenate(outs).reshape(len(images), -1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)


def rewrite(graph: Graph, original_model: Any, images: np.ndarray | None, opts: RewriteOptions,
            images_desc: str = "", reporter: Reporter | None = None) -> tuple[Graph, Any, RewriteReport]:
    """Rewrite ``graph``; measure on ``images`` (float model input) when given."""
    rep = reporter or Reporter()
    rules = selected_rules(opts)
    new_graph, new_model, changes = rewrite_graph(graph, rules, opts)
    base = _embed(original_model, images) if images is not None and len(images) else None
    results: list[RuleResult] = []
    for rule in rules:
        mine = [c for c in changes if c.rule == rule.name]
        if not mine:
            continue
        cmean = cmin = None
        if base is not None:
            if len(rules) == 1 or len({c.rule for c in changes}) == 1:
                alone = new_model
            else:
                alone = rewrite_graph(graph, [rule], opts)[1]
            cos = _cosines(base, _embed(alone, images))  # type: ignore[arg-type]
            cmean, cmin = float(cos.mean()), float(cos.min())
        results.append(RuleResult(rule.name, len(mine), all(c.exact for c in mine), cmean, cmin, rule.exact))
    whole_mean = whole_min = None
    if base is not None and changes:
        cos = _cosines(base, _embed(new_model, images))  # type: ignore[arg-type]
        whole_mean, whole_min = float(cos.mean()), float(cos.min())
    exact = all(c.exact for c in changes)
    report = RewriteReport(changes, results, whole_mean, whole_min, images_desc, exact)
    report.next_steps = _next_steps(report)
    for r in results:
        if r.exact and r.cosine_min is not None and r.cosine_min < EXACT_COSINE:
            rep.warn(f"rule {r.rule} should be exact but its float cosine is {r.cosine_min:.6f}")
    return new_graph, new_model, report


def _next_steps(report: RewriteReport) -> list[str]:
    if not report.changes:
        return ["nothing to rewrite: the model is already in KPU-friendly form"]
    if report.exact:
        return ["every change is exact: the rewritten model computes the same embedding"]
    steps = ["some changes are approximations (see 'exact'); measure the cost on faces with "
             "`k210tool compare ORIGINAL.h5 MODEL.kmodel --original ORIGINAL.h5 --data FACES`"]
    if report.cosine is not None and report.cosine < 0.99:
        steps.append(f"the float embedding moved (cosine {report.cosine:.4f}): recover it with `k210tool distill --teacher "
                     "ORIGINAL.h5 --student REWRITTEN.h5 --data FACES`")
    else:
        steps.append("if verification accuracy drops, fine-tune with `k210tool distill --teacher ORIGINAL.h5 "
                     "--student REWRITTEN.h5 --data FACES`")
    return steps


def rewrite_loaded(loaded: Any, opts: RewriteOptions, reporter: Reporter | None = None,
                   images: np.ndarray | None = None, images_desc: str = "") -> RewriteReport:
    """Rewrite a :class:`~k210tool.model.load.LoadedModel` in place (its model and graph are replaced);
    the original model stays available as ``loaded.original_model``."""
    if loaded.graph is None:
        raise InputError(f"{loaded.path} is a {loaded.format} file: only Keras models can be rewritten",
                         "rewrite the Keras model before exporting it")
    graph, model, report = rewrite(loaded.graph, loaded.model, images, opts, images_desc, reporter)
    loaded.original_model = loaded.model
    loaded.model = model
    loaded.graph = graph
    return report


def save_model(model: Any, path: Path) -> Path:
    """Save a rewritten model atomically: ``.h5`` (legacy, what tf_keras users load) or ``.keras``."""
    from k210tool.model.save import save_model_atomic

    return save_model_atomic(model, path)
