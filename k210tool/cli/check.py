"""`k210tool check`: predict KPU placement, round trips, memory and flash fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import (
    CliState,
    board_options,
    common_options,
    human_bytes,
    load_options_from,
    memory_text,
    model_load_options,
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@board_options
@click.option("--no-rewrite", is_flag=True,
              help="Check the model as it is (nncase's view, without the exact lowering convert applies).")
@click.option("--prelu", type=click.Choice(["keep", "relu", "leaky"]), default="keep", show_default=True,
              help="As convert's --prelu (relu/leaky: approximate).")
@click.option("--approximate", multiple=True, type=click.Choice(["symmetric-stride2", "symmetric-zeropad"]),
              help="As convert's --approximate.")
@click.option("--backend", type=click.Choice(["auto", "k210tool", "nncase"]), default="auto", show_default=True,
              help="As convert's --backend.")
@click.option("--compile", "do_compile", is_flag=True,
              help="Also compile with nncase where check does not already (--no-rewrite, or a prediction that does "
                   "not fit) and show nncase's measured figures.")
@click.option("--all-layers", is_flag=True, help="List every layer, not only those off the KPU.")
@model_load_options
@common_options
def check(model: Path, board: str, firmware: str | None, no_rewrite: bool, prelu: str, approximate: tuple[str, ...],
          backend: str, do_compile: bool, all_layers: bool, state: CliState, **kw: Any) -> None:
    """What runs on the KPU and what on the CPU (and why), the KPU<->CPU round trips, memory against the
    board's limit, and whether the kmodel fits flash - for the model as `convert` compiles it.

    \b
    With k210tool's KPU backend (the default for the models it can express) the kmodel is generated for real
    on synthetic faces, in seconds: the figures are a kmodel's, only its calibration images differ from
    yours. Otherwise nncase's placement is predicted per layer and, when the prediction fits, nncase compiles
    it as convert would (the board's kmodel version): the figures are that kmodel's, and what convert would
    stop on (an op with no kmodel v4 form) is an error here too. A model too big for the board is refused
    before any compile, as convert refuses it. Exit code 2 when it cannot fit or convert would refuse it.

    \b
    Examples:
      k210tool check face.h5                      # as convert will compile it
      k210tool check face.h5 --no-rewrite         # the model as it is, nncase alone (exit 2 when it does not fit)
      k210tool check face.h5 --board maix_go --firmware canmv --json   # MaixPy leaves 2 MiB: too small
    """
    from k210tool.commands.check import CheckOptions
    from k210tool.commands.check import check as run_check
    from k210tool.errors import DoesNotFitError

    result = run_check(CheckOptions(model, board, firmware, load_options_from(kw), not no_rewrite, prelu, approximate,
                                    backend, do_compile), state.reporter)
    state.emit(result.to_dict() if state.as_json else result, lambda r, c: _render(r, c, all_layers))
    if result.refused:
        raise DoesNotFitError(result.refused)
    if result.problem:
        from k210tool.errors import K210ToolError

        raise K210ToolError(f"convert would refuse {model}: {result.problem}", result.problem_hint)
    if not result.fits:
        if not result.fits_memory and (result.fit or (result.measured or {}).get("fit")):
            fit = result.fit or result.measured["fit"]  # type: ignore[index]
            raise DoesNotFitError(f"{model} does not load on {result.board}: {fit['reason']}",
                                  "see the table above for what takes the room; a board with more RAM, or fewer "
                                  "channels")
        what = "memory" if not result.fits_memory else "flash"
        raise DoesNotFitError(f"{model} does not fit {result.board} ({what}: {human_bytes(result.memory_estimate)} "
                              f"of {human_bytes(result.board_limit)})",
                              "see the table above for what takes the room; a board with more RAM, or fewer channels")


def _render(r: Any, console: Any, all_layers: bool) -> None:
    from rich.table import Table

    kind = {"k210tool": "generated kmodel", "nncase (compiled)": "predicted; figures of the compiled kmodel"}.get(
        r.backend, "prediction")
    t = Table(title=f"{r.model}: KPU placement ({kind}, {r.backend})")
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
    if r.fallback:
        console.print(f"k210tool's KPU backend cannot express it ({r.fallback}): nncase would compile it")
    if r.refused:
        console.print(f"KPU RAM: DOES NOT FIT: {r.refused}")
    for split in (r.kpu or {}).get("splits", []):
        console.print(f"split to fit KPU RAM: {split}")
    where = f"{r.board}/{r.firmware}"
    if r.fit:  # a kmodel was generated: its figures, as convert, script, flash and the board count them
        console.print(f"memory: {_memory_text(r.fit, where)}")
        console.print(f"kmodel: {human_bytes(r.kmodel_estimate)} of {human_bytes(r.flash_room)} flash: "
                      f"{'fits' if r.fits_flash else 'DOES NOT FIT'}")
    else:
        console.print(f"memory estimate: {human_bytes(r.memory_estimate)} of {human_bytes(r.board_limit)} ({where}): "
                      f"{'fits' if r.fits_memory else 'DOES NOT FIT'} - a prediction of nncase's compile, not a "
                      "kmodel's figure" + ("" if r.measured else " (--compile measures it)"))
        console.print(f"kmodel estimate: {human_bytes(r.kmodel_estimate)} of {human_bytes(r.flash_room)} flash: "
                      f"{'fits' if r.fits_flash else 'DOES NOT FIT'}")
    if r.problem:
        console.print(f"[red]convert would refuse it:[/red] {r.problem}")
    if r.measured:
        m = r.measured
        console.print(f"nncase measured: {m['kpu_convs']} KPU convs, {m['kpu_uploads']} uploads, CPU ops "
                      f"{m['cpu_compute_ops']}, kmodel v{m['kmodel_version']}; memory "
                      f"{_memory_text(m['fit'], where)}")
    for tip in r.suggestions:
        console.print(f"- {tip}")


def _memory_text(fit: dict[str, Any], where: str) -> str:
    """convert's memory line for a board_fit result (check keeps it as a dict: its JSON output)."""
    from types import SimpleNamespace

    from k210tool.compile.summary import Memory

    return memory_text(Memory.from_fit(SimpleNamespace(**fit)), where)
