"""The tables of a comparison as plain rows of text: one source for the terminal, Markdown and HTML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    text_columns: tuple[int, ...] = (0,)  # left-aligned; the others hold numbers


def compare_tables(r: Any) -> list[Table]:
    """Tables of a :class:`k210tool.commands.compare.CompareResult`: run, fidelity per output, verification,
    identification, gates (those with something to show)."""
    tables = [run_table(r)]
    tables += fidelity_tables(r.fidelity)
    if r.verification:
        tables.append(verification_table(r.columns, r.verification))
    if r.identification:
        tables.append(identification_table(r.columns, r.identification))
    if r.gates:
        tables.append(gates_table(r.gates))
    return tables


def run_table(r: Any) -> Table:
    d = r.data
    data = f"{d['kind']}: {d['source']} ({d['images']} images"
    data += f", {d['identities']} identities" if d["identities"] else ""
    data += f", {d['pairs']} pairs" if d["pairs"] else ""
    skipped = [f"{d['skipped_images']} images" if d["skipped_images"] else "",
               f"{d['skipped_pairs']} pairs" if d["skipped_pairs"] else ""]
    data += f"; skipped {' and '.join(s for s in skipped if s)})" if any(skipped) else ")"
    rows = [["model", r.model]]
    if r.original:
        rows.append(["original model", r.original])
    rows += [
        ["kmodel", f"{r.kmodel} (v{r.kmodel_version})"],
        ["engine", f"{r.engine} ({r.engine_note}), {r.workers} worker(s), "
                   f"{r.simulator_images_per_second:.2f} images/s"],
        ["data", data],
    ]
    if d.get("pair_source"):
        rows.append(["pairs", d["pair_source"]])
    pre = r.preprocess
    rows.append(["preprocessing", f"{pre['height']}x{pre['width']} {pre['color']}, (x - {pre['mean'][0]:g}) / "
                                  f"{pre['std'][0]:g}, resize {pre['resize']}"])
    cache = ", ".join(f"{k}: {v['cached']} cached / {v['computed']} run" for k, v in r.float_cache.items())
    rows.append(["float results", cache])
    return Table("Comparison", ["", ""], rows, (0, 1))


def fidelity_tables(fids: list[Any]) -> list[Table]:
    by_output: dict[str, list[Any]] = {}
    for f in fids:
        by_output.setdefault(f.output, []).append(f)
    tables = []
    for output, group in by_output.items():
        rows = [
            ["cosine mean", *[f"{f.cosine_mean:.5f}" for f in group]],
            ["cosine min", *[f"{f.cosine_min:.5f}" for f in group]],
            ["cosine 1st percentile", *[f"{f.cosine_p1:.5f}" for f in group]],
            ["relative L2 error", *[f"{f.rel_l2:.4%}" for f in group]],
            ["mean abs error", *[f"{f.mae:.5g}" for f in group]],
            ["max abs error", *[f"{f.max_abs:.5g}" for f in group]],
        ]
        if any(f.top1_agreement is not None for f in group):
            rows.append(["top-1 agreement", *[_pct(f.top1_agreement) for f in group]])
        rows.append(["images", *[str(f.images) for f in group]])
        tables.append(Table(f"Fidelity ({output})", ["", *[f.label for f in group]], rows))
    return tables


def verification_table(columns: list[str], ver: dict[str, Any]) -> Table:
    cols = [c for c in columns if c in ver]
    first = ver[cols[0]]
    fars = list(first.tar_at_far)
    rows = [
        ["pairs (genuine / impostor)", *[f"{ver[c].pairs} ({ver[c].genuine} / {ver[c].impostor})" for c in cols]],
        ["accuracy (10-fold)", *[f"{ver[c].accuracy:.2%} ± {ver[c].accuracy_std:.2%}" for c in cols]],
        *[[f"TAR @ FAR={far}", *[_pct(ver[c].tar_at_far[far]) for c in cols]] for far in fars],
        ["best threshold (cosine)", *[f"{ver[c].best_threshold:.4f}" for c in cols]],
        ["accuracy at best threshold", *[f"{ver[c].best_accuracy:.2%}" for c in cols]],
        ["AUC", *[f"{ver[c].auc:.4f}" for c in cols]],
        [f"accuracy drop vs {cols[0]}", *["-" if i == 0 else f"{100 * (first.accuracy - ver[c].accuracy):+.2f} pp"
                                          for i, c in enumerate(cols)]],
    ]
    return Table("Face verification", ["", *cols], rows)


def identification_table(columns: list[str], ident: dict[str, Any]) -> Table:
    cols = [c for c in columns if c in ident]
    first = ident[cols[0]]
    rows = [
        ["identities", *[str(ident[c].identities) for c in cols]],
        ["gallery images / probes", *[f"{ident[c].gallery_images} / {ident[c].probes}" for c in cols]],
        ["top-1 accuracy", *[f"{ident[c].top1:.2%}" for c in cols]],
        [f"top-1 drop vs {cols[0]}", *["-" if i == 0 else f"{100 * (first.top1 - ident[c].top1):+.2f} pp"
                                       for i, c in enumerate(cols)]],
    ]
    return Table("Identification (gallery centroids, top-1)", ["", *cols], rows)


def gates_table(gates: list[Any]) -> Table:
    rows = [[f"--{g.gate}", f"{g.limit:g}", "-" if g.value is None else f"{g.value:.4f}",
             "pass" if g.passed else "FAIL", g.what] for g in gates]
    return Table("Gates", ["gate", "limit", "value", "result", "what"], rows, (0, 3, 4))


def _pct(x: float | None) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    return f"{x:.2%}"
