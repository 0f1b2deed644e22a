"""`k210tool test-board`: run the kmodel on a board (or `k210tool emulate`) and check it against the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, board_options, common_options


@click.command()
@click.option("--port", "-p", required=True, metavar="PORT",
              help="Serial port: /dev/ttyUSB0, COM3, the path `k210tool emulate` printed, or a pyserial URL.")
@click.argument("kmodel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "float_model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The float Keras model (.h5/.keras) the kmodel was converted from: compare with it too (with "
                   "the KMODEL-stem.rewritten.h5 convert kept beside the kmodel instead, when it compiled that one).")
@click.option("--vectors", type=int, default=None, help="Number of seeded random test inputs [default: 4].")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Use the images of this folder instead (prepared with the summary's preprocessing).")
@click.option("--max-inputs", type=int, default=32, show_default=True, help="At most this many images of --data.")
@board_options
@click.option("--summary", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The convert summary [default: KMODEL.json].")
@click.option("--upload", type=click.Choice(["auto", "deploy", "flash", "skip"]), default="auto", show_default=True,
              help="How the kmodel reaches the board: its filesystem over the REPL (deploy: slow for big models, "
                   "1.5 MB takes minutes), its flash over ISP (flash: overwrites the board's kmodel address), or "
                   "already there (skip: checked by the board's SHA-256; needs --model-at). auto: what --model-at "
                   "names, else flash for a kmodel over 256 KB on a serial port, deploy otherwise.")
@click.option("--model-at", default=None, metavar="PATH|ADDR",
              help="Board path (deploy) or flash address (flash) of the kmodel "
                   "[default: INPUTS_DIR/NAME, or the board's kmodel address].")
@click.option("--inputs-dir", default="/sd/k210tool_parity", show_default=True,
              help="Board folder for the input files (its old .bin files are removed).")
@click.option("--min-cosine", type=float, default=0.999, show_default=True,
              help="Fail when a vector's cosine with the simulator is lower.")
@click.option("--max-abs", type=float, default=None, help="Fail when a value differs from the simulator by more.")
@click.option("--exact", is_flag=True, help="Fail unless every output is bit-identical to the simulator's.")
@click.option("--float-min-cosine", type=float, default=0.9, show_default=True,
              help="With --model: fail when a vector's cosine with the float model is lower.")
@click.option("--engine", type=click.Choice(["auto", "nncase", "numpy"]), default="auto", show_default=True,
              help="Reference engine: nncase's Simulator (v5), k210tool's NumPy interpreter (v4, v5); auto picks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds of silence after which the board counts as gone.")
@click.option("--baud", type=int, default=115200, show_default=True, help="REPL baud rate.")
@common_options
def test_board(port: str, kmodel: Path, float_model: Path | None, vectors: int | None, data: Path | None,
               max_inputs: int, board: str, firmware: str | None, summary: Path | None, upload: str,
               model_at: str | None, inputs_dir: str, min_cosine: float, max_abs: float | None, exact: bool,
               float_min_cosine: float, engine: str, seed: int, timeout: float, baud: int, state: CliState) -> None:
    """Run KMODEL on the board and compare its outputs with nncase's Simulator.

    Uploads the kmodel and the test inputs (seeded random images, or --data images prepared with the
    model's preprocessing), runs the `parity` script on the board, reads its checksummed output and
    compares every vector with the simulator run on the same bytes (and with the float model, --model):
    cosine, max abs difference, bit-identity and the board's latency per inference. Exit code 4 when a
    vector is outside the tolerances, 2 when the board fails or stops answering.

    \b
    Examples:
      k210tool test-board -p /dev/ttyUSB0 face.kmodel
      k210tool test-board -p /dev/ttyUSB0 face.kmodel --model face.h5 --data faces/ --max-inputs 8
      k210tool test-board -p /dev/ttyUSB0 face.kmodel --upload skip --model-at 0x300000   # after k210tool flash
      k210tool test-board -p /dev/pts/7 face.kmodel --firmware canmv_v5 --exact   # k210tool emulate --firmware canmv_v5
    """
    from k210tool.commands.testboard import BoardTestOptions, check_gate, run_board_test

    opts = BoardTestOptions(port=port, kmodel=kmodel, board=board, firmware=firmware, summary=summary,
                            float_model=float_model, vectors=vectors, data=data, max_inputs=max_inputs, seed=seed,
                            upload=upload, model_at=model_at, inputs_dir=inputs_dir, min_cosine=min_cosine,
                            max_abs=max_abs, exact=exact, float_min_cosine=float_min_cosine, engine=engine,
                            timeout=timeout, baud=baud)
    result = run_board_test(opts, reporter=state.reporter)
    state.emit(result, _render)
    check_gate(result)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _render(res: Any, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"{res.kmodel} (kmodel v{res.kmodel_version}) on {res.board}/{res.firmware} at {res.port}")
    cols = ["#", "input", "latency ms", "cosine", "max abs diff", "identical"]
    if res.float_model:
        cols += ["cosine float", "max abs float"]
    for col in cols:
        t.add_column(col)
    for v in res.vectors:
        row = [str(v.index), v.source, _fmt(v.latency_ms, ".2f"), f"{v.cosine:.6f}", f"{v.max_abs:.3g}",
               "yes" if v.identical else "no"]
        if res.float_model:
            row += [_fmt(v.float_cosine, ".4f"), _fmt(v.float_max_abs, ".3g")]
        t.add_row(*row)
    console.print(t)
    lat = res.mean_latency_ms
    console.print(f"reference: {res.reference}; inputs fed as {res.input_mode}; "
                  f"{res.identical}/{len(res.vectors)} vectors bit-identical; min cosine {res.min_cosine:.6f}; "
                  f"max abs diff {res.worst_max_abs:.3g}; mean latency {_fmt(lat, '.2f')} ms; {res.seconds:.1f} s")
    console.print("PASS" if res.passed else f"FAIL: {len(res.failures)} problem(s)")
