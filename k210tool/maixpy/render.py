"""Render a template of ``firmware_templates/`` into a MicroPython script for one board and firmware.

:func:`render_script` checks what the board can run (MicroPython at all, the kmodel versions its firmware
loads, flash placement), renders with the guarded environment of :mod:`k210tool.maixpy.env`, then lints
and compiles the result for that firmware (:mod:`k210tool.maixpy.check`). :func:`write_script` writes it
atomically. Nothing is written when any step fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k210tool import __version__
from k210tool.boards import Board, read_toml
from k210tool.errors import DoesNotFitError, FirmwareError, InputError
from k210tool.fileio import check_output_path, write_text
from k210tool.maixpy import parity
from k210tool.maixpy.check import check_source
from k210tool.maixpy.env import TEMPLATE_SUFFIX, UnescapedValueError, environment, template_dirs
from k210tool.maixpy.models import Location, ScriptModel, check_flash_region, describe_model
from k210tool.report import Reporter

# YOLOv2 anchors of the face detector MaixPy ships (face_model_at_0x300000.kfpkg, its face demo).
FACE_DETECTOR_ANCHORS = (1.889, 2.5245, 2.9465, 3.94056, 3.99987, 5.3658, 5.155437, 6.92275, 6.718375, 9.01025)
# sensor.set_framesize names -> pixels (OpenMV/MaixPy framesize table)
FRAME_SIZES = {"QQVGA": (160, 120), "QVGA": (320, 240), "VGA": (640, 480), "HQVGA": (240, 160),
               "CIF": (352, 288), "QCIF": (176, 144), "B128X128": (128, 128), "B240X240": (240, 240)}
_FLASH_ALIGN = 0x10000
# Where a script looks for the face detector when no --detector file is given.
DEFAULT_DETECTOR_PATH = "/sd/face_detect.kmodel"


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    description: str
    needs: tuple[str, ...]
    path: Path
    detector: bool = False  # runs a face detector (--detector FILE, or one already on the board)


@dataclass(frozen=True)
class ScriptOptions:
    """Settings the templates read (each CLI flag of `k210tool script` maps to one)."""

    threshold: float = 0.5  # cosine above which face_recognition names a face
    shots: int = 3  # enroll: embeddings per person
    auto_enroll: bool = False  # enroll: capture without the button
    frames: int = 0  # face_recognition/enroll: stop after N frames (0 = never)
    db_path: str = "/flash/k210tool_faces.json"
    iterations: int = 100  # benchmark
    inputs_dir: str = "/sd/k210tool_parity"  # parity
    margin: float = 0.0  # grow the detector's box by this fraction before cropping
    det_threshold: float = 0.5
    nms: float = 0.3
    anchors: tuple[float, ...] = FACE_DETECTOR_ANCHORS
    button_pin: int | None = None  # default: the board's boot_button

    def validate(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold {self.threshold} is not a cosine similarity", "use a value in -1..1")
        for flag, value, low in (("--shots", self.shots, 1), ("--iterations", self.iterations, 1),
                                 ("--frames", self.frames, 0)):
            if value < low:
                raise InputError(f"{flag} must be at least {low}, got {value}")
        if not 0.0 <= self.margin <= 2.0:
            raise InputError(f"--margin {self.margin} must be between 0 and 2")
        for flag, value in (("--det-threshold", self.det_threshold), ("--nms", self.nms)):
            if not 0.0 < value < 1.0:
                raise InputError(f"{flag} {value} must be between 0 and 1")
        if len(self.anchors) < 2 or len(self.anchors) % 2:
            raise InputError("--anchors needs pairs of numbers (w h w h ...)")
        for flag, path in (("--db", self.db_path), ("--inputs", self.inputs_dir)):
            if not path.startswith("/") or any(ord(c) < 0x20 for c in path):
                raise InputError(f"{flag} {path!r} must be an absolute path on the board, e.g. /sd/...")


@dataclass(frozen=True)
class Placement:
    """A file the user puts on the board before running the script."""

    what: str
    file: str
    location: str
    size: int
    how: str


@dataclass
class RenderedScript:
    template: str
    board: str
    firmware: str
    kpu_api: str
    micropython_version: str
    lines: int
    sha256: str
    mpy_size: int
    placements: list[Placement]
    warnings: list[str]
    next_steps: list[str] = field(default_factory=list)
    output: str | None = None
    source: str = field(default="", repr=False)


def list_templates() -> list[TemplateInfo]:
    """Templates declared in ``templates.toml`` of each template folder (user folder first wins)."""
    found: dict[str, TemplateInfo] = {}
    for folder in reversed(template_dirs()):
        index = folder / "templates.toml"
        if not index.is_file():
            continue
        for name, entry in read_toml(index).items():
            path = folder / f"{name}{TEMPLATE_SUFFIX}"
            if path.is_file():
                found[name] = TemplateInfo(name, str(entry.get("description", "")),
                                           tuple(entry.get("needs", [])), path, bool(entry.get("detector")))
    return sorted(found.values(), key=lambda t: t.name)


def get_template(name: str) -> TemplateInfo:
    templates = {t.name: t for t in list_templates()}
    if name not in templates:
        raise InputError(f"unknown template {name!r}",
                         f"choose one of: {', '.join(templates)} (k210tool script --list)")
    return templates[name]


def require_micropython(board: Board) -> None:
    fw = board.firmware
    if not fw.micropython or not fw.kpu_api:
        raise FirmwareError(
            f"board {board.id} runs {fw.name}, which has no MicroPython: generated scripts cannot run on it",
            "flash a MicroPython firmware and say so with --firmware canmv (kmodel v3/v4) or canmv_v5 (v5)")


def _check_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not name.strip():
            raise InputError("--names: a name is empty", "give every person a name")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
            raise InputError(f"--names: {name!r} is not valid Unicode", "check the terminal's encoding")
        if name in out:
            raise InputError(f"--names: {name!r} is given twice", "names must be unique")
        out.append(name)
    return out


def _model_context(m: ScriptModel, api: str, warnings: list[str]) -> dict[str, Any]:
    if m.input_chw is None or m.preprocess is None:
        raise InputError(f"{m.file}: the convert summary has no input description", "re-run k210tool convert")
    if not m.output_shapes:
        raise InputError(f"{m.file}: the convert summary lists no outputs", "re-run k210tool convert")
    outputs = list(m.output_sizes)
    whc = m.output_whc()
    if api == "canmv" and len(outputs) > 1:
        warnings.append(f"{m.file.name} has {len(outputs)} outputs; CanMV releases return output 0 only")
        outputs, whc = outputs[:1], whc[:1]
    c, h, w = m.input_chw
    pre = m.preprocess
    return {
        "file": m.file.name, "where": m.location.value, "size": m.size, "version": m.kmodel_version,
        "c": c, "h": h, "w": w, "outputs": outputs, "output_whc": whc,
        "color": pre.color, "resize": pre.resize, "letterbox_value": pre.letterbox_value,
        "mean": list(pre.mean), "std": list(pre.std),
    }


def _detector_context(d: ScriptModel, frame: tuple[int, int]) -> dict[str, Any]:
    h, w = (d.input_chw[1], d.input_chw[2]) if d.input_chw else (frame[1], frame[0])
    return {"file": d.file.name if d.size else "", "where": d.location.value, "size": d.size,
            "version": d.kmodel_version, "w": w, "h": h, "layer_w": math.ceil(w / 32), "layer_h": math.ceil(h / 32)}


def _align(n: int) -> int:
    return (n + _FLASH_ALIGN - 1) // _FLASH_ALIGN * _FLASH_ALIGN


def _placement(board: Board, m: ScriptModel, what: str) -> Placement:
    loc = m.location
    if not m.size:  # a detector already on the board: nothing k210tool can place
        return Placement(what, "", str(loc), 0,
                         f"put a YOLOv2 face detector kmodel at {loc} (e.g. the one in MaixPy's "
                         "face_model_at_0x300000.kfpkg), or pass --detector FILE")
    if loc.address is not None:
        check_flash_region(board, loc.address, m.size, f"the {what} {m.file.name}")
        family = "" if board.firmware.id == _default_firmware(board) else f" --firmware {board.firmware.id}"
        how = f"k210tool flash -p PORT --board {board.id}{family} --kmodel {m.file}@0x{loc.address:X}"
    else:
        how = f"k210tool deploy -p PORT {m.file}:{loc.path}"
    return Placement(what, str(m.file), str(loc), m.size, how)


def _default_firmware(board: Board) -> str:
    from k210tool.boards import all_boards

    known = all_boards().get(board.id)
    return known.firmware.id if known else board.firmware.id


def _detector_on_board(board: Board, at: Location | None, warnings: list[str]) -> ScriptModel:
    """A detector the user put on the board: assumed to be MaixPy's v3 YOLOv2 face detector."""
    loc = at or Location(path=DEFAULT_DETECTOR_PATH)
    if loc.address is not None:
        check_flash_region(board, loc.address, 1, "the face detector")
    if loc.address is not None and board.firmware.kpu_api == "canmv":
        raise InputError("CanMV releases need the size of a kmodel they load from flash",
                         "pass the detector file with --detector det.kmodel, or a board path with --detector-at")
    warnings.append(f"no --detector given: the script loads a face detector from {loc}; it must be a YOLOv2 "
                    "region-layer kmodel with a 320x240-style input (MaixPy's face detector is kmodel v3, "
                    "which every MicroPython firmware loads)")
    return ScriptModel(Path(Path(DEFAULT_DETECTOR_PATH).name), 0, 3, loc, None, (), None)


def _overlap_check(m: ScriptModel, d: ScriptModel) -> None:
    a, b = m.location.address, d.location.address
    if a is not None and b is not None and b < a + m.size and a < b + max(d.size, 1):
        raise InputError(f"the detector at 0x{b:X} overlaps the model at 0x{a:X}-0x{a + m.size:X}",
                         "move one of them with --model-at / --detector-at")


def _load_models(tpl: TemplateInfo, board: Board, model: Path | None, summary: Path | None,
                 detector: Path | None, model_at: Location | None, detector_at: Location | None,
                 warnings: list[str]) -> tuple[ScriptModel | None, ScriptModel | None]:
    if "model" in tpl.needs and model is None:
        raise InputError(f"the {tpl.name} template needs --model face.kmodel",
                         "see `k210tool script --list` for what each template needs")
    m = d = None
    if model is not None and "model" in tpl.needs:
        m = describe_model(model, model_at or Location(address=board.kmodel_address), summary)
        board.require_kmodel_version(m.kmodel_version)
    if tpl.detector and detector is None:
        d = _detector_on_board(board, detector_at, warnings)
    elif tpl.detector and detector is not None:
        if m is not None and m.location.address is not None:  # flash, right after the model
            default = Location(address=_align(m.location.address + m.size))
        else:
            default = Location(address=board.kmodel_address)
        d = describe_model(detector, detector_at or default, summary_required=False)
        board.require_kmodel_version(d.kmodel_version)
    if m is not None and d is not None:
        _overlap_check(m, d)
    return m, d


def _check_loads(board: Board, models: list[ScriptModel]) -> None:
    """Refuse kmodels the board's firmware cannot load - all of them at once, as the templates load them.

    ``board_fit`` is the verdict convert, flash and the emulated firmware give too. A detector already on the
    board is unknown (not counted); a kmodel k210tool cannot read beyond its header is judged on its size."""
    from k210tool.compile.kmodel.footprint import board_fit

    in_use = 0
    for m in models:
        if not m.size:
            continue
        fit = board_fit(m.file.read_bytes(), board.firmware, in_use)
        if not fit.fits:
            what = m.file.name + (" (loaded beside the other kmodel)" if in_use else "")
            raise DoesNotFitError(f"{what} cannot load on {board.id}: {fit.reason}",
                                  "convert it for this board (k210tool convert --board), or choose a board or "
                                  "firmware with more memory")
        in_use += fit.total


def build_context(tpl: TemplateInfo, board: Board, m: ScriptModel | None, d: ScriptModel | None,
                  names: list[str], options: ScriptOptions, warnings: list[str]) -> dict[str, Any]:
    """Everything a template sees. Values reach the code only through ``|py``."""
    fw = board.firmware
    cam = board.camera
    if cam.framesize not in FRAME_SIZES:
        raise InputError(f"board {board.id}: unknown camera framesize {cam.framesize!r}",
                         f"use one of {', '.join(FRAME_SIZES)} in {board.source}")
    frame = FRAME_SIZES[cam.framesize]
    button = options.button_pin if options.button_pin is not None else board.pins.get("boot_button")
    if "names" in tpl.needs and not options.auto_enroll and button is None:
        raise InputError(f"board {board.id} names no boot_button pin", "pass --button PIN or --auto-enroll")
    model_ctx = _model_context(m, fw.kpu_api, warnings) if m else None
    return {
        "k210tool_version": __version__, "template": tpl.name, "api": fw.kpu_api,
        "board": {"id": board.id, "name": board.name},
        "fw": {"id": fw.id, "name": fw.name, "micropython_version": fw.micropython_version or "unknown"},
        "lcd": {"width": board.lcd.width, "height": board.lcd.height, "rotation": board.lcd.rotation,
                "invert": board.lcd.invert, "lcd_type": board.lcd.lcd_type},
        "camera": {"pixformat": cam.pixformat, "framesize": cam.framesize, "hmirror": cam.hmirror,
                   "vflip": cam.vflip, "width": frame[0], "height": frame[1]},
        "button_pin": button if button is not None else -1,
        "model": model_ctx,
        "detector": _detector_context(d, frame) if d else None,
        "names": names,
        "opt": dataclasses.asdict(options),
        "frame": {"magic": parity.MAGIC, "format": parity.FORMAT_VERSION, "chunk": parity.CHUNK_FLOATS,
                  "mode": parity.input_mode(fw.kpu_api, model_ctx["c"] if model_ctx else 3)},
    }


def render_source(tpl: TemplateInfo, context: dict[str, Any]) -> str:
    """Render only (no checks); a value without ``|py`` or a missing name raises."""
    import jinja2

    try:
        return environment().get_template(tpl.path.name).render(**context)
    except jinja2.UndefinedError as exc:
        raise InputError(f"template {tpl.name} uses something k210tool does not provide: {exc.message}",
                         "fix the template") from None
    except UnescapedValueError as exc:
        raise InputError(f"template {tpl.name}: {exc}", "write {{ value|py }} so values become literals") from None
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"template {exc.filename or tpl.name} line {exc.lineno}: {exc.message}",
                         "fix the template") from None


def render_script(template: str, board: Board, *, model: Path | None = None, summary: Path | None = None,
                  detector: Path | None = None, names: Sequence[str] = (), model_at: Location | None = None,
                  detector_at: Location | None = None, options: ScriptOptions | None = None,
                  reporter: Reporter | None = None) -> RenderedScript:
    """Render, lint and compile ``template`` for ``board``; raise before anything is written."""
    reporter = reporter or Reporter()
    options = options or ScriptOptions()
    options.validate()
    tpl = get_template(template)
    require_micropython(board)
    checked_names = _check_names(names)
    if "names" in tpl.needs and not checked_names:
        raise InputError(f"the {tpl.name} template needs --names (one per person to enrol)")
    warnings: list[str] = []
    m, d = _load_models(tpl, board, model, summary, detector, model_at, detector_at, warnings)
    placements = [_placement(board, x, what) for x, what in ((m, "model"), (d, "detector")) if x]
    _check_loads(board, [x for x in (m, d) if x])
    context = build_context(tpl, board, m, d, checked_names, options, warnings)
    with reporter.stage("render"):
        source = render_source(tpl, context)
    with reporter.stage("check"):
        check = check_source(source, board.firmware, f"{tpl.name}.py")
    for w in warnings:
        reporter.warn(w)
    steps = [p.how for p in placements]
    return RenderedScript(
        tpl.name, board.id, board.firmware.id, board.firmware.kpu_api,
        board.firmware.micropython_version, source.count("\n"), hashlib.sha256(source.encode()).hexdigest(),
        check.mpy.mpy_size if check.mpy else 0, placements, warnings, steps, None, source)


def write_script(result: RenderedScript, path: str | Path) -> RenderedScript:
    """Write the script atomically and return the result with ``output`` and the deploy step set."""
    out = check_output_path(path)
    write_text(out, result.source)
    return dataclasses.replace(result, output=str(out),
                               next_steps=[*result.next_steps, f"k210tool deploy -p PORT {out}"])
