"""`k210tool inspect`: describe a .kmodel (v3, v4 or v5) and say which firmware loads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from k210tool.cli.common import CliState, common_options, human_bytes

if TYPE_CHECKING:
    from k210tool.compile.kmodel.inspect import InspectResult


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--words", is_flag=True, help="Include every KPU layer word decoded into named fields (with --json).")
@click.option("--limit", type=int, default=None, metavar="N", help="Show only the first N layers in the table.")
@common_options
def inspect(model: str, words: bool, limit: int | None, state: CliState) -> None:
    """Describe MODEL.kmodel: version, inputs/outputs, memory, every layer with its placement and KPU
    settings, and which firmware families load it.

    \b
    Reads kmodel v3 (nncase 0.1), v4 (nncase 0.2) and v5 (nncase 1.x; CPU bytecode decoded for nncase 1.9).
    Examples:
      k210tool inspect face.kmodel
      k210tool inspect face.kmodel --json --words > face.json
    """
    from k210tool.compile.kmodel.inspect import inspect_kmodel

    result = inspect_kmodel(model, with_words=words)
    state.emit(result, lambda r, console: _render(r, console, limit))


def _render(r: InspectResult, console: Any, limit: int | None) -> None:
    from rich.table import Table

    console.print(f"[bold]{r.path}[/bold]: kmodel v{r.version}, {human_bytes(r.size)}, "
                  f"{r.kpu_layers} KPU convolutions, {r.cpu_layers} CPU ops")
    for kind, tensors in (("input", r.inputs), ("output", r.outputs)):
        for t in tensors:
            console.print(f"  {kind} {t['name']}: {t['dtype']} {list(t['shape'])}")
    console.print("  memory: " + ", ".join(f"{k} {human_bytes(v)}" for k, v in r.memory.items()))
    table = Table(title="Layers")
    for col in ("#", "op", "on", "settings", "where"):
        table.add_column(col, overflow="fold")
    shown = r.layers if limit is None else r.layers[:limit]
    for row in shown:
        table.add_row(str(row.index), row.op, row.placement, row.summary, row.where)
    console.print(table)
    if len(shown) < len(r.layers):
        console.print(f"  ... {len(r.layers) - len(shown)} more layers (drop --limit to see them)")
    if r.loads_on:
        console.print("loads on: " + "; ".join(f"{n} ({i})" for i, n in zip(r.loads_on, r.loads_on_names, strict=True)))
    else:
        console.print("loads on: no firmware k210tool knows (its kmodel version, or its memory: `k210tool boards`)")
    for note in r.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
