"""`k210tool check`: predict KPU placement, round trips, memory and flash fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, board_options, common_options, human_bytes
from k210tool.cli.convert import load_options_from, model_load_options


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@board_options
@click.option("--rewritten", is_flag=True, help="Check the model as convert compiles it (after the KPU rewrite).")
@click.option("--prelu", type=click.Choice(["keep", "relu", "leaky"]), default="keep", show_default=True,
              help="With --rewritten: what PReLU becomes.")
@click.option("--compile", "do_compile", is_flag=True,
              help="Also compile with nncase (random calibration) and show its measured figures beside the prediction.")
@click.option("--all-layers", is_flag=True, help="List every layer, not only those off the KPU.")
@model_load_options
@common_options
def check(model: Path, board: str, firmware: str | None, rewritten: bool, prelu: str, do_compile: bool,
          all_layers: bool, state: CliState, **kw: Any) -> None:
    """Predict, per layer, what runs on the KPU and what falls back to the CPU (and why), the KPU<->CPU
    round trips, the memory estimate against the board's limit, and whether the kmodel fits flash.

    Exit code 2 when the model cannot fit the board.

    \b
    Examples:
      k210tool check face.h5                      # the model as it is
      k210tool check face.h5 --rewritten          # as convert will compile it
      k210tool check face.h5 --board maix_go --compile --json
    """
    from k210tool.check import CheckOptions
    from k210tool.check import check as run_check
    from k210tool.errors import DoesNotFitError

    result = run_check(CheckOptions(model, board, firmware, load_options_from(kw), rewritten, prelu, do_compile),
                       state.reporter)
    state.emit(result.to_dict() if state.as_json else result, lambda r, c: _render(r, c, all_layers))
    if not result.fits:
        what = "memory" if not result.fits_memory else "flash"
        raise DoesNotFitError(f"{model} does not fit {result.board} ({what})",
                              "see the table above; `k210tool convert` rewrites the model by default")


def _render(r: Any, console: Any, all_layers: bool) -> None:
    from rich.table import Table

    t = Table(title=f"{r.model}: KPU placement (prediction)")
    for col in ("layer", "class", "where", "why", "output", "MACs"):
        t.add_column(col)
    for p in r.layers:
        if not all_layers and p.placement in ("fused", "glue", "removed"):
            continue
        if not all_layers and p.placement == "KPU" and not p.upload:
            continue
        where = p.placement + (" (upload)" if p.upload else "")
        style = "red" if p.placement == "CPU" else None
        t.add_row(p.layer, p.class_name, where, p.reason, str(p.output_shape[1:]), f"{p.macs:,}", style=style)
    console.print(t)
    cpu = ", ".join(f"{k} x{v}" for k, v in sorted(r.cpu_ops.items())) or "none"
    console.print(f"KPU layers: {r.kpu_layers}   KPU uploads (round trips): {r.kpu_uploads}   CPU ops: {cpu}")
    console.print(f"memory estimate: {human_bytes(r.memory_estimate)} of {human_bytes(r.board_limit)} "
                  f"({r.board}/{r.firmware}): {'fits' if r.fits_memory else 'DOES NOT FIT'}")
    console.print(f"kmodel estimate: {human_bytes(r.kmodel_estimate)} of {human_bytes(r.flash_room)} flash: "
                  f"{'fits' if r.fits_flash else 'DOES NOT FIT'}")
    if r.measured:
        m = r.measured
        console.print(f"nncase measured: {m['kpu_convs']} KPU convs, {m['kpu_uploads']} uploads, memory "
                      f"{human_bytes(m['memory_total'])}, kmodel {human_bytes(m['kmodel_size'])}, CPU ops "
                      f"{m['cpu_compute_ops']}")
    for tip in r.suggestions:
        console.print(f"- {tip}")
