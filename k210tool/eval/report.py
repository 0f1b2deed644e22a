"""The comparison report: ``report.md``, ``report.html`` (with PNG plots beside it) and ``report.json``.

``report.json`` holds every figure plus the per-image cosines and per-pair scores behind the plots.
Every file is written atomically; the HTML and Markdown only reference plots that were written.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.eval.tables import Table, compare_tables
from k210tool.fileio import to_jsonable, write_json, write_text

ROC_PNG, COSINE_PNG, SCORES_PNG = "roc.png", "cosine_histogram.png", "score_distributions.png"


def write_report(folder: Path | str, result: Any, arrays: Any) -> list[Path]:
    """Write the report files of ``result`` (a CompareResult) and ``arrays`` (its CompareArrays) into ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out, result, arrays)
    tables = compare_tables(result)
    files = list(plots.values())
    files.append(write_text(out / "report.md", markdown(result, tables, plots)))
    files.append(write_text(out / "report.html", html_page(result, tables, plots)))
    files.append(write_json(out / "report.json", json_document(result, arrays)))
    return files


def write_plots(out: Path, result: Any, arrays: Any) -> dict[str, Path]:
    """The plots the data allows: ROC and score distributions need pairs; the cosine histogram needs a kmodel."""
    from k210tool.eval.plots import plot_cosine_histogram, plot_roc, plot_score_distributions

    plots: dict[str, Path] = {}
    if arrays.roc:
        plots["roc"] = plot_roc(arrays.roc, out / ROC_PNG)
    if arrays.cosines:
        plots["cosine"] = plot_cosine_histogram(arrays.cosines, out / COSINE_PNG)
    if arrays.scores and arrays.issame is not None:
        thresholds = {name: v.best_threshold for name, v in result.verification.items()}
        plots["scores"] = plot_score_distributions(arrays.scores, arrays.issame, thresholds, out / SCORES_PNG)
    for name in {ROC_PNG, COSINE_PNG, SCORES_PNG} - {p.name for p in plots.values()}:
        (out / name).unlink(missing_ok=True)  # a plot of an earlier run would pass for this one's
    return plots


_CAPTIONS = {
    "roc": "ROC of every column (log false-accept axis)",
    "cosine": "Per-image cosine between outputs",
    "scores": "Genuine and impostor pair scores, with the best threshold",
}


def markdown(result: Any, tables: list[Table], plots: dict[str, Path]) -> str:
    lines = [f"# k210tool compare: {Path(result.kmodel).name}", ""]
    lines += _verdict(result) + [""]
    for t in tables:
        lines += [f"## {t.title}", ""]
        header = t.header if any(t.header) else ["what", "value"]
        lines.append("| " + " | ".join(_md(h) for h in header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in t.rows]
        lines.append("")
    for key, path in plots.items():
        lines += [f"![{_CAPTIONS[key]}]({path.name})", ""]
    if result.warnings:
        lines += ["## Warnings", ""] + [f"- {_md(w)}" for w in result.warnings] + [""]
    return "\n".join(lines)


def html_page(result: Any, tables: list[Table], plots: dict[str, Path]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>k210tool compare: {e(Path(result.kmodel).name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;"
        "text-align:left}th{background:#f3f3f3}.fail{color:#b00;font-weight:bold}.pass{color:#070}"
        "img{max-width:100%;border:1px solid #eee;margin:0.5em 0}</style>",
        "</head><body>",
        f"<h1>k210tool compare: {e(Path(result.kmodel).name)}</h1>",
    ]
    parts += [f'<p class="{"pass" if result.passed else "fail"}">{e(line)}</p>' for line in _verdict(result)]
    for t in tables:
        parts.append(f"<h2>{e(t.title)}</h2><table>")
        if any(t.header):
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.header) + "</tr>")
        for row in t.rows:
            cells = "".join(f'<td class="fail">{e(c)}</td>' if c == "FAIL" else f"<td>{e(c)}</td>" for c in row)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
    for key, path in plots.items():
        parts.append(f'<figure><img src="{e(path.name)}" alt="{e(_CAPTIONS[key])}">'
                     f"<figcaption>{e(_CAPTIONS[key])}</figcaption></figure>")
    if result.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in result.warnings) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def json_document(result: Any, arrays: Any) -> dict[str, Any]:
    doc = to_jsonable(result)
    doc["per_image_cosine"] = {k: np.round(v, 7).tolist() for k, v in arrays.cosines.items()}
    if arrays.issame is not None:
        doc["per_pair"] = {"issame": arrays.issame.tolist(),
                           "scores": {k: np.round(v, 7).tolist() for k, v in arrays.scores.items()}}
    return doc


def _verdict(result: Any) -> list[str]:
    if not result.gates:
        return ["No gates were set (--min-cosine, --max-acc-drop)."]
    failed = [g for g in result.gates if not g.passed]
    if not failed:
        return [f"All {len(result.gates)} gate(s) passed."]
    return [f"GATE FAILED: --{g.gate} {g.limit:g}: {g.what} = "
            f"{'not measured' if g.value is None else f'{g.value:.4f}'}" for g in failed]


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
