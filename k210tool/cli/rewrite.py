"""`k210tool rewrite`: the KPU rewrite alone, saved as a Keras model, with its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, common_options, load_options_from, model_load_options


@click.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Rewritten model: .h5 (legacy tf.keras, loads anywhere) or .keras.")
@click.option("--prelu", type=click.Choice(["keep", "relu", "leaky"]), default="keep", show_default=True,
              help="keep: PReLU stays (the KPU backend runs it exactly); relu/leaky: APPROXIMATE replacements.")
@click.option("--approximate", multiple=True, type=click.Choice(["symmetric-stride2", "symmetric-zeropad"]),
              help="Also run this approximate rule (repeatable).")
@click.option("--only", "only", multiple=True, metavar="RULE", help="Apply only these rules (repeatable).")
@click.option("--skip", multiple=True, metavar="RULE", help="Do not apply these rules (repeatable).")
@click.option("--calib", "calib", metavar="DIR|FILE.npy",
              help="Images to measure the float cost on (default: 32 synthetic faces).")
@click.option("--calib-count", default=64, show_default=True, help="Images to measure on at most.")
@click.option("--list-rules", is_flag=True, help="List the rules and exit.")
@model_load_options
@common_options
def rewrite(model: Path | None, output: Path | None, prelu: str, approximate: tuple[str, ...], only: tuple[str, ...],
            skip: tuple[str, ...], calib: str | None, calib_count: int, list_rules: bool, state: CliState,
            **kw: Any) -> None:
    """Rewrite MODEL into KPU-friendly ops and report every change and its float cost.

    \b
    Rules (in order; `--list-rules` shows what each matches and produces, and whether it is exact):
      dropout, prelu*, symmetric-stride2*, symmetric-zeropad*, rotate180, dense-to-conv, fold-batchnorm
    (* approximate: only with --prelu relu|leaky or --approximate). The training head is cut first (see
    `k210tool convert --help`). The report gives, per rule and for the whole model, the cosine between the
    original and the rewritten float embeddings; exact rules stay at >= 0.9999. `k210tool convert` runs the
    same rewrite by default. The saved model is the float function the kmodel computes, on upright images:
    the original with the approximate rules you asked for (rotate180 changes nothing it computes, so it is
    left to convert).

    \b
    Examples:
      k210tool rewrite --list-rules
      k210tool rewrite face.h5 -o face_kpu.h5 --calib faces/
      k210tool rewrite face.h5 -o face_kpu.h5 --prelu leaky --json
    """
    from k210tool.commands.rewrite import RewriteCommandOptions, list_rule_table, run_rewrite

    if list_rules:
        state.emit(list_rule_table(), _render_rules)
        return
    if model is None or output is None:
        raise click.UsageError("give MODEL and -o OUT.h5 (or --list-rules)")
    opts = RewriteCommandOptions(model, output, prelu=prelu, approximate=approximate, only=only or None, skip=skip,
                                 calib=calib, calib_count=calib_count, load=load_options_from(kw))
    state.emit(run_rewrite(opts, state.reporter), render_rewrite)


def _render_rules(rows: Any, console: Any) -> None:
    from rich.table import Table

    t = Table(title="KPU rewrite rules (applied in this order)")
    for col in ("rule", "matches", "produces", "exact"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["matches"], r["produces"], r["exact"])
    console.print(t)


def render_rewrite(r: Any, console: Any) -> None:
    from rich.table import Table

    rep = r.report
    t = Table(title=f"rewrite of {r.model} -> {r.output}")
    for col in ("rule", "changes", "exact", "float cosine (mean / min)"):
        t.add_column(col)
    for rr in rep.rules:
        cos = "-" if rr.cosine_mean is None else f"{rr.cosine_mean:.6f} / {rr.cosine_min:.6f}"
        t.add_row(rr.rule, str(rr.changes), "yes" if rr.exact else "no", cos)
    if rep.cosine is not None:
        t.add_row("whole model", str(len(rep.changes)), "yes" if rep.exact else "no",
                  f"{rep.cosine:.6f} / {rep.cosine_min:.6f}", style="bold")
    console.print(t)
    for c in rep.changes:
        console.print(f"  {c.rule:18s} {c.layer}: {c.detail}{'' if c.exact else '  [not exact]'}")
    if r.head_cut:
        console.print(f"head cut: {r.head_cut}")
    console.print(f"measured on {rep.images}")
    for step in rep.next_steps:
        console.print(f"next: {step}")
