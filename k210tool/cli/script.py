"""`k210tool script`: render a MaixPy/CanMV application from firmware_templates/ for a board."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, board_options, common_options
from k210tool.maixpy.render import FACE_DETECTOR_ANCHORS, ScriptOptions

_DEFAULTS = ScriptOptions()
_FILE = click.Path(dir_okay=False, path_type=Path)


@dataclass
class TemplateList:
    templates: list[dict[str, Any]]


def _read_names(names: tuple[str, ...], names_file: Path | None) -> list[str]:
    from k210tool.errors import InputError

    out = list(names)
    if names_file is not None:
        try:
            text = names_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read --names-file {names_file}: {exc}", "save it as UTF-8 text") from None
        out += [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    return out


def _anchors(text: str | None) -> tuple[float, ...]:
    from k210tool.errors import InputError

    if text is None:
        return FACE_DETECTOR_ANCHORS
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise InputError(f"--anchors {text!r}: expected numbers like '1.889 2.5245 2.9465 3.94056'") from None


def _render_list(res: TemplateList, console: Any) -> None:
    from rich.table import Table

    t = Table(title="Script templates")
    for col in ("template", "needs", "what it does"):
        t.add_column(col)
    for row in res.templates:
        needs = [f"--{n}" for n in row["needs"]] + (["[--detector]"] if row["detector"] else [])
        t.add_row(row["name"], " ".join(needs), row["description"])
    console.print(t)


def _render_result(res: Any, console: Any) -> None:
    where = f"wrote {res.output}" if res.output else "rendered"
    console.print(f"{where}: {res.template} for {res.board} ({res.firmware}, kmodel API {res.kpu_api}), "
                  f"{res.lines} lines")
    console.print(f"checked: MicroPython {res.micropython_version} dialect lint OK, "
                  f"mpy-cross {res.micropython_version} OK ({res.mpy_size} bytes of bytecode)")
    for p in res.placements:
        if p.file:
            console.print(f"{p.what}: {p.file} -> {p.location} ({p.size} bytes)")
        else:
            console.print(f"{p.what}: expected on the board at {p.location}")
    if res.next_steps:
        console.print("next:")
        for step in res.next_steps:
            console.print(f"  {step}")


@click.command()
@click.argument("template", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the templates and what each needs.")
@board_options
@click.option("--model", type=_FILE, help="The face kmodel (its convert summary MODEL.kmodel.json is read too).")
@click.option("--summary", type=_FILE, help="Convert summary of --model, if not MODEL.kmodel.json beside it.")
@click.option("--detector", type=_FILE, help="Face detector kmodel (YOLOv2 region layer, e.g. MaixPy's face model).")
@click.option("--names", multiple=True, metavar="NAME", help="A person to enrol (repeat the option, in order).")
@click.option("--names-file", type=_FILE, help="UTF-8 text file with one name per line.")
@click.option("--model-at", metavar="ADDR|PATH",
              help="Where the kmodel lives on the board: flash address (default: the board's kmodel address) "
                   "or a board path such as /sd/face.kmodel.")
@click.option("--detector-at", metavar="ADDR|PATH",
              help="Where the detector lives (default: flash, right after the model).")
@click.option("--threshold", type=float, default=_DEFAULTS.threshold, show_default=True,
              help="Cosine similarity above which a face is named.")
@click.option("--shots", type=int, default=_DEFAULTS.shots, show_default=True, help="enroll: shots per person.")
@click.option("--auto-enroll", is_flag=True, help="enroll: capture without the button, one shot per frame.")
@click.option("--frames", type=int, default=_DEFAULTS.frames, show_default=True,
              help="face_recognition/enroll: stop after N camera frames (0 = never).")
@click.option("--db", "db_path", default=_DEFAULTS.db_path, show_default=True,
              help="Board path of the enrolled-faces file.")
@click.option("--iterations", type=int, default=_DEFAULTS.iterations, show_default=True,
              help="benchmark: inferences to time.")
@click.option("--inputs", "inputs_dir", default=_DEFAULTS.inputs_dir, show_default=True,
              help="parity: board folder of NNNN.bin input files.")
@click.option("--margin", type=float, default=_DEFAULTS.margin, show_default=True,
              help="Grow the detector's box by this fraction before cropping the face.")
@click.option("--det-threshold", type=float, default=_DEFAULTS.det_threshold, show_default=True,
              help="Detector confidence threshold.")
@click.option("--nms", type=float, default=_DEFAULTS.nms, show_default=True, help="Detector NMS threshold.")
@click.option("--anchors", default=None, metavar="'W H W H ...'",
              help="Detector YOLOv2 anchors (default: those of MaixPy's face detector).")
@click.option("--button", "button_pin", type=int, default=None, metavar="PIN",
              help="enroll: button pin (default: the board's boot button).")
@click.option("-o", "--output", type=_FILE, help="Write the script here (atomically); default: print it.")
@common_options
def script(template: str | None, list_only: bool, board: str, firmware: str | None, model: Path | None,
           summary: Path | None, detector: Path | None, names: tuple[str, ...], names_file: Path | None,
           model_at: str | None, detector_at: str | None, threshold: float, shots: int, auto_enroll: bool,
           frames: int, db_path: str, iterations: int, inputs_dir: str, margin: float, det_threshold: float,
           nms: float, anchors: str | None, button_pin: int | None, output: Path | None, state: CliState) -> None:
    """Generate a MicroPython script for a board from a template (face_recognition, enroll, benchmark,
    parity). The script is checked before it is written: a MicroPython-dialect lint for the board's
    firmware and a compile with that firmware's mpy-cross version.

    \b
    Examples:
      k210tool script --list
      k210tool script face_recognition --board maix_dock --model face.kmodel --detector det.kmodel -o main.py
      k210tool script enroll --board maix_dock --model face.kmodel --detector det.kmodel \\
          --names Alice --names Bob -o enroll.py
      k210tool script benchmark --board maix_go --firmware canmv_v5 --model face.kmodel -o bench.py
    """
    from k210tool.boards import get_board
    from k210tool.errors import InputError
    from k210tool.fileio import check_output_path
    from k210tool.maixpy.models import parse_location
    from k210tool.maixpy.render import list_templates, render_script, write_script

    if list_only:
        rows = [{"name": t.name, "needs": list(t.needs), "detector": t.detector, "description": t.description}
                for t in list_templates()]
        state.emit(TemplateList(rows), _render_list)
        return
    if not template:
        raise InputError("which template?", "give one, e.g. `k210tool script face_recognition ...` "
                         "(k210tool script --list shows them)")
    if output is not None:
        check_output_path(output)
    target = get_board(board, firmware)
    options = ScriptOptions(threshold=threshold, shots=shots, auto_enroll=auto_enroll, frames=frames,
                            db_path=db_path, iterations=iterations, inputs_dir=inputs_dir, margin=margin,
                            det_threshold=det_threshold, nms=nms, anchors=_anchors(anchors),
                            button_pin=button_pin)
    result = render_script(
        template, target, model=model, summary=summary, detector=detector,
        names=_read_names(names, names_file),
        model_at=parse_location(model_at) if model_at else None,
        detector_at=parse_location(detector_at) if detector_at else None,
        options=options, reporter=state.reporter)
    if output is not None:
        result = write_script(result, output)
        state.emit(result, _render_result)
    elif state.as_json:
        state.emit(result)
    else:
        click.echo(result.source, nl=False)
