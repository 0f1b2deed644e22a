"""`k210tool compare`: float model vs simulated kmodel, fidelity and face-verification accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, common_options, load_options_from, model_load_options

_FILE = click.Path(path_type=Path, dir_okay=False)
_DIR = click.Path(path_type=Path, file_okay=False)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("kmodel", type=click.Path(path_type=Path))
@click.option("--data", type=_DIR, help="Folder of face images, one sub-folder per person (pairs and identification "
              "are generated); with --pairs: the LFW image folder.")
@click.option("--pairs", type=_FILE, help="LFW pairs.txt; images under --data (default: the file's folder).")
@click.option("--bin", "bin_file", type=_FILE, metavar="FILE.bin",
              help="insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin), read safely.")
@click.option("--random", "random_count", type=int, metavar="N", help="N random images: fidelity only.")
@click.option("--original", type=_FILE, metavar="ORIG.h5",
              help="The model before the KPU rewrite: adds a third column (original float / rewritten float / kmodel).")
@click.option("--report", type=_DIR, metavar="DIR", help="Write report.md, report.html, report.json and PNG plots here.")
@click.option("--min-cosine", type=float, metavar="X", help="Gate: fail (exit 4) if the mean cosine kmodel vs float "
              "is below X.")
@click.option("--max-acc-drop", type=float, metavar="PP", help="Gate: fail (exit 4) if verification accuracy drops by "
              "more than PP percentage points from the first column to the kmodel.")
@click.option("--engine", type=click.Choice(["auto", "numpy", "nncase"]), default="auto", show_default=True,
              help="kmodel simulator. auto: the NumPy interpreter when it is bit-exact with nncase on the first images "
              "(checked every run), else nncase's Simulator (the reference).")
@click.option("--workers", type=int, metavar="N", help="Simulator processes (default: every core for nncase; one "
              "for the NumPy interpreter, which spreads over the cores with threads).")
@click.option("--limit", type=int, metavar="N", help="Use at most N images of --data (a seeded random subset).")
@click.option("--repeat", type=int, default=5, show_default=True,
              help="Generated pairs: genuine and impostor pairs per identity.")
@click.option("--persons", type=int, metavar="P", help="Generated pairs: P persons x --per-person images, every "
              "genuine pair among them and as many impostor pairs.")
@click.option("--per-person", type=int, metavar="S", help="Images per person with --persons (default 2).")
@click.option("--gallery", type=int, metavar="K", help="Identification: gallery images per identity (default: half).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of image subsets and generated pairs.")
@click.option("--cache-dir", type=_DIR, help="Float result cache (default: $K210TOOL_CACHE_DIR or ~/.cache/k210tool).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the float result cache.")
@model_load_options
@common_options
def compare(model: Path, kmodel: Path, data: Path | None, pairs: Path | None, bin_file: Path | None,
            random_count: int | None, original: Path | None, report: Path | None, min_cosine: float | None,
            max_acc_drop: float | None, engine: str, workers: int | None, limit: int | None, repeat: int,
            persons: int | None, per_person: int | None, gallery: int | None, seed: int, cache_dir: Path | None,
            no_cache: bool, state: CliState, **kw: Any) -> None:
    """Compare MODEL (float .h5/.keras/.tflite/.onnx) with KMODEL, simulated, on identical inputs.

    \b
    A .tflite/.onnx MODEL (or --original) runs in the TFLite interpreter / onnxruntime, as its authors
    run it (the imported Keras model only when a head or --output-layer cut it).

    \b
    The inputs are prepared once, as convert recorded in KMODEL.json (size, colour order, mean/std):
    the kmodel gets the uint8 pixels, the float model their normalised floats. Figures per column:
      fidelity      cosine (mean, min, 1st percentile), relative L2, MAE, max abs error per output,
                    top-1 agreement for classifier outputs
      verification  10-fold accuracy (insightface protocol), TAR @ FAR 1e-3 and 1e-2, best threshold
      identification  top-1 against per-identity centroids (identity folders only)
    Columns: float / kmodel; original float / rewritten float / kmodel when convert rewrote MODEL for
    the KPU (it keeps KMODEL's stem + .rewritten.h5) or with --original ORIG.h5 (MODEL: the rewritten one).

    \b
    Examples:
      k210tool compare face.h5 face.kmodel --data faces/ --report report/
      k210tool compare face_kpu.h5 face.kmodel --bin lfw.bin --original face.h5
      k210tool compare face.h5 face.kmodel --pairs lfw/pairs.txt --data lfw/ --max-acc-drop 1
      k210tool compare face.h5 face.kmodel --data faces/ --min-cosine 0.95 --json   # the exit code is 4 below it
    Exit code 4 when a gate (--min-cosine, --max-acc-drop) fails; the report is written anyway.
    """
    from k210tool.commands.compare import CompareOptions
    from k210tool.commands.compare import compare as run_compare
    from k210tool.errors import GateError
    from k210tool.eval.pairs import PairOptions

    opts = CompareOptions(
        model=model, kmodel=kmodel, data=data, pairs=pairs, bin=bin_file, random=random_count, original=original,
        report=report, min_cosine=min_cosine, max_acc_drop=max_acc_drop, engine=engine, workers=workers,
        load=load_options_from(kw), pair_options=PairOptions(repeat, persons, per_person, seed), limit=limit,
        gallery=gallery, cache_dir=cache_dir, use_cache=not no_cache, seed=seed,
    )
    try:
        result = run_compare(opts, state.reporter)
    except GateError as exc:
        # the figures are the point of a failed gate: show them, then main() fails with the gate's one line
        state.emit(exc.result, render_compare)
        raise
    state.emit(result, render_compare)


def render_compare(r: Any, console: Any) -> None:
    from rich.table import Table as RichTable
    from rich.text import Text

    from k210tool.eval.tables import compare_tables

    for t in compare_tables(r):
        has_header = any(t.header)
        table = RichTable(title=t.title, show_header=has_header, title_justify="left")
        for i, h in enumerate(t.header):
            table.add_column(h, style="bold" if i == 0 else None, justify="left" if i in t.text_columns else "right")
        for row in t.rows:
            table.add_row(*[Text(c, style="red" if c == "FAIL" else "") for c in row])  # Text: no markup in paths
        console.print(table)
    if r.report_files:
        html = next((f for f in r.report_files if f.endswith(".html")), r.report_files[0])
        console.print(f"report: {html}")
