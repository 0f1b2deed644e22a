"""`k210tool convert`: a model file -> a K210 kmodel and its summary."""

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


def preprocess_options(func: Any) -> Any:
    for opt in reversed([
        click.option("--mean", type=str, metavar="M[,M,M]",
                     help="Pixel mean the model subtracts (default 127.5: (x-127.5)/128)."),
        click.option("--std", type=str, metavar="S[,S,S]", help="Pixel std the model divides by (default 128)."),
        click.option("--input-range", nargs=2, type=float, metavar="LO HI",
                     help="Instead of --mean/--std: pixels 0..255 map linearly to LO..HI (e.g. 0 1, -1 1)."),
        click.option("--bgr", is_flag=True, help="The model was trained on BGR images (OpenCV order)."),
        click.option("--resize", type=click.Choice(["crop", "stretch", "letterbox"]), default="crop",
                     show_default=True, help="How images of another size are fitted to the model input."),
    ]):
        func = opt(func)
    return func


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    from k210tool.errors import InputError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise InputError(f"--{what} takes numbers separated by commas, got {text!r}") from None
    if len(values) not in (1, 3):
        raise InputError(f"--{what} takes 1 or 3 numbers, got {len(values)}")
    return values


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Output .kmodel (default: MODEL with .kmodel). The summary goes to OUTPUT.json.")
@click.option("--calib", metavar="DIR|FILE.npy|random",
              help="Calibration data: a folder of face images (recursive), a .npy of uint8 images, or 'random'.")
@click.option("--calib-count", default=100, show_default=True, help="Calibration images to use at most.")
@click.option("--calib-method", default="auto", show_default=True,
              type=click.Choice(["auto", "minmax", "percentile", "no_clip", "l2", "kld_m0", "kld_m1", "kld_m2", "cdf"]),
              help="Activation ranges: minmax/percentile (per channel, k210tool's backend; auto = minmax) or "
                   "nncase's methods when nncase compiles.")
@board_options
@click.option("--kmodel-version", type=click.Choice(["4", "5"]), default=None,
              help="kmodel format (default: what the board's firmware loads; v4 for released MaixPy/CanMV).")
@click.option("--no-rewrite", is_flag=True, help="Compile the model as it is, without the KPU lowering.")
@click.option("--prelu", type=click.Choice(["keep", "relu", "leaky"]), default="keep", show_default=True,
              help="keep: per-channel PReLU runs exactly on the KPU. relu/leaky: APPROXIMATE replacements "
                   "(a trained network loses most of its accuracy; refused below float cosine 0.99).")
@click.option("--approximate", multiple=True, type=click.Choice(["symmetric-stride2", "symmetric-zeropad"]),
              help="Also run this approximate rewrite rule (repeatable; the exact lowering needs none).")
@click.option("--accept-float-loss", is_flag=True,
              help="Write the kmodel even when an approximate rule leaves the float cosine below 0.99.")
@click.option("--backend", type=click.Choice(["auto", "k210tool", "nncase"]), default="auto", show_default=True,
              help="Who compiles: k210tool's own KPU backend (per-channel quantization, PReLU on the KPU), "
                   "nncase 1.9, or auto (k210tool's, nncase for models it cannot express).")
@click.option("--prelu-layout", type=click.Choice(["auto", "mixed", "zones", "split"]), default="auto",
              show_default=True,
              help="k210tool backend: per-channel PReLU as up to 7 slopes per KPU activation table (zones: the "
                   "smallest file) or as relu(v)/relu(-v) channels the next dense layer combines (split: fewer "
                   "KPU layers, bigger weights); mixed: split where a dense layer follows; auto: mixed, or zones "
                   "when mixed does not fit the board.")
@click.option("--dense", type=click.Choice(["auto", "cpu", "kpu"]), default="auto", show_default=True,
              help="k210tool backend: the embedding's dense layer in float on the CPU (exact) or on the KPU "
                   "(uint8 weights: a quarter of the bytes, a second upload, cosine about 0.0004 lower on a real "
                   "MobileFaceNet); auto: the CPU unless the model does not fit the board otherwise.")
@click.option("--allow-overflow", is_flag=True, help="Write the kmodel even if it needs more RAM than the board has.")
@click.option("--keep-dump", type=click.Path(file_okay=False, path_type=Path),
              help="Keep nncase's dump (IR, schedule, KPU ops) in this folder.")
@model_load_options
@preprocess_options
@common_options
def convert(model: Path, output: Path | None, calib: str | None, calib_count: int, calib_method: str, board: str,
            firmware: str | None, kmodel_version: str | None, no_rewrite: bool, prelu: str,
            approximate: tuple[str, ...], accept_float_loss: bool, backend: str, prelu_layout: str, dense: str,
            allow_overflow: bool, keep_dump: Path | None, mean: str | None, std: str | None,
            input_range: tuple[float, float] | None, bgr: bool, resize: str, state: CliState, **kw: Any) -> None:
    """Convert MODEL (.h5, .keras, .tflite, .onnx) into a K210 .kmodel.

    \b
    Steps: load (legacy tf.keras .h5 via tf_keras; float .tflite/.onnx imported into the same Keras
    layers) -> cut the training head (ArcFace/softmax, label inputs, unknown custom classes) -> lower
    exactly for the KPU (TF "same" stride 2 by turning the network 180 degrees; per-channel PReLU kept) ->
    calibrate per channel -> k210tool's KPU backend writes the kmodel (nncase 1.9 compiles what it cannot
    express) -> check it fits the board -> write OUT.kmodel and OUT.kmodel.json atomically. Approximate
    rewrites (--prelu relu|leaky, --approximate) only when asked.

    \b
    Preprocessing: the model is assumed to take (pixel - 127.5) / 128 in RGB order; say otherwise with
    --mean/--std, --input-range or --bgr. The kmodel takes uint8 RGB pixels (NCHW, the K210 camera's
    planar layout) and applies the same normalisation inside.

    \b
    Examples:
      k210tool convert face.h5 --calib faces/ -o face.kmodel
      k210tool convert face.h5 --calib faces/ --board maix_go --firmware canmv --kmodel-version 4
      k210tool convert face.h5 --calib calib.npy --mean 127.5 --std 127.5
      k210tool convert model.tflite --calib random          # no data: accuracy not meaningful
      k210tool convert train_model.h5 --calib faces/ --output-layer embedding --json
    """
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions
    from k210tool.commands.convert import convert as run_convert

    opts = ConvertOptions(
        model=model,
        output=output,
        board=board,
        firmware=firmware,
        calibration=CalibrationOptions(calib, calib_count, method=calib_method),
        mean=parse_floats(mean, "mean"),
        std=parse_floats(std, "std"),
        input_range=input_range,
        color="BGR" if bgr else "RGB",
        resize=resize,
        load=load_options_from(kw),
        rewrite=not no_rewrite,
        prelu=prelu,
        approximate=approximate,
        accept_float_loss=accept_float_loss,
        backend=backend,
        prelu_layout=prelu_layout,
        dense=dense,
        kmodel_version=int(kmodel_version) if kmodel_version else None,
        allow_overflow=allow_overflow,
        keep_dump=keep_dump,
    )
    result = run_convert(opts, state.reporter)
    state.emit(result.summary, render_summary)


def render_summary(s: Any, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"{s.kmodel} (kmodel v{s.kmodel_version}, {human_bytes(s.kmodel_size)})", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    inp, out = s.inputs[0], s.outputs[0]
    t.add_row("source", f"{s.source} ({s.source_format})")
    if s.head_cut:
        t.add_row("head cut", _head_text(s.head_cut))
    if s.rewrite:
        t.add_row("rewrite", _rewrite_text(s.rewrite))
    t.add_row("input", f"{inp.dtype} {inp.shape} {inp.layout}; pixels -> (x - {s.preprocess['mean'][0]:g}) / "
              f"{s.preprocess['std'][0]:g}, {s.preprocess['color']}")
    t.add_row("output", f"{out.dtype} {out.shape}")
    t.add_row("calibration", f"{s.quantization['calibration']} ({s.quantization.get('calibrate_method')})")
    backend = s.backend + (f" (k210tool's backend could not: {s.fallback})" if s.fallback else "")
    t.add_row("compiled by", backend)
    if s.kpu:
        t.add_row("KPU layers", f"{s.kpu['layers']} ({s.kpu['kpu_macs'] / 1e6:.0f} M multiply-adds, "
                  f"{human_bytes(s.kpu['kpu_weight_bytes'])} of weights); CPU {s.kpu['cpu_macs'] / 1e6:.2f} M "
                  f"multiply-adds, {human_bytes(s.kpu['cpu_weight_bytes'])} of float weights")
        for split in s.kpu.get("splits", []):
            t.add_row("split for KPU RAM", split)
    else:
        t.add_row("KPU convs", str(s.ops.kpu_convs))
    t.add_row("KPU uploads", f"{s.ops.kpu_uploads} (CPU -> KPU round trips)")
    cpu = ", ".join(f"{k} x{v}" for k, v in sorted(s.ops.cpu_compute_ops.items())) or "none"
    t.add_row("CPU ops (besides glue)", cpu)
    t.add_row("memory", memory_text(s.memory, f"{s.board}/{s.firmware}"))
    t.add_row("flash", f"{human_bytes(s.kmodel_size)}: {'fits' if s.fits_flash else 'DOES NOT FIT'}")
    t.add_row("loads on", ", ".join(s.loads_on) + ("" if s.board_loads_it else f" (NOT {s.firmware})"))
    t.add_row("time", ", ".join(f"{k} {v:.1f} s" for k, v in s.stage_seconds.items()))
    console.print(t)
    console.print(f"summary: {s.kmodel}.json")


def _head_text(h: dict[str, Any]) -> str:
    removed = ", ".join(h["removed_layers"])  # all of them: the user must see exactly what is gone
    extra = f"; dropped input {', '.join(h['removed_inputs'])}" if h["removed_inputs"] else ""
    return f"output {h['output']!r} ({h['reason']}); removed {removed or 'nothing'}{extra}"


def _rewrite_text(r: dict[str, Any]) -> str:
    changes = r.get("changes", [])
    if not changes:
        return "no change needed"
    counts: dict[str, int] = {}
    for c in changes:
        counts[c["rule"]] = counts.get(c["rule"], 0) + 1
    parts = ", ".join(f"{k} x{v}" for k, v in counts.items())
    cos = r.get("cosine")
    return parts + (f"; float cosine vs original {cos:.5f}" if cos is not None else "")
