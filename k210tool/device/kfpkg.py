"""Flash regions and kfpkg files (a zip with ``flash-list.json``, as kflash and kflash_gui read them).

``flash-list.json`` is ``{"version": "0.1.0", "files": [{"address": 3145728, "bin": "m.kmodel",
"sha256Prefix": false}]}``. Two readers constrain how it is written: kflash 1.1.6 rewrites every
``"address": <value>,`` line with a regular expression (so the address must be a JSON integer on its own
line, followed by another key) and then parses it with ``int(x, 0)``; kflash_gui looks every zip member
up in ``files`` (so the zip holds nothing else). ``sha256Prefix: true`` makes kflash store
``flags | length | image | sha256`` - what the boot ROM checks for a firmware image at 0; kmodels and
data are stored raw.

:func:`plan_flash` checks a set of regions against the board before anything is sent: overlaps,
regions past the end of the flash, kmodels inside areas the firmware reserves, kmodel versions the
firmware cannot load, and kmodels too big for the memory it leaves for models.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from k210tool.boards import Board
from k210tool.device.ispproto import FIRMWARE_HEADER, FIRMWARE_TRAILER
from k210tool.errors import DoesNotFitError, InputError
from k210tool.fileio import atomic_open

SECTOR = 0x1000
KINDS = ("firmware", "kmodel", "data")


def kmodel_version(data: bytes, name: str = "kmodel") -> int:
    """The kmodel format version (3, 4, 5), with the file's name in the error."""
    from k210tool.compile.kmodel import KmodelError
    from k210tool.compile.kmodel import kmodel_version as version_of

    try:
        return version_of(data)
    except KmodelError as exc:
        raise InputError(f"{name}: {exc.message}", exc.hint) from None


@dataclass(frozen=True)
class Region:
    """One file to put into flash at ``address``."""

    address: int
    data: bytes = field(repr=False)
    name: str
    kind: str = "data"
    sha256_prefix: bool = False

    @property
    def stored(self) -> bytes:
        """The bytes that end up in flash (kflash adds the firmware header and SHA-256 trailer)."""
        if not self.sha256_prefix:
            return self.data
        head = bytes([0x02]) + struct.pack("<I", len(self.data)) + self.data  # flags: DIO, no AES
        return head + hashlib.sha256(head).digest()

    @property
    def size(self) -> int:
        return len(self.data) + (FIRMWARE_HEADER + FIRMWARE_TRAILER if self.sha256_prefix else 0)

    @property
    def end(self) -> int:
        return self.address + self.size

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self) -> str:
        return f"{self.name} ({self.kind}, 0x{self.address:06x}-0x{self.end:06x})"


@dataclass(frozen=True)
class FlashPlan:
    board: Board
    regions: tuple[Region, ...]

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.regions)


def parse_address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise InputError(f"bad flash address {text!r}", "write it like 0x300000") from None
    if value < 0:
        raise InputError(f"bad flash address {text!r}", "addresses are >= 0")
    return value


def split_kmodel_arg(spec: str) -> tuple[Path, int | None]:
    """``m.kmodel`` or ``m.kmodel@0x300000``."""
    if "@" in spec:
        path, addr = spec.rsplit("@", 1)
        return Path(path), parse_address(addr)
    return Path(spec), None


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    if path.stat().st_size > MAX_MEMBER:
        raise InputError(f"{what} {path} is larger than any K210 flash ({MAX_MEMBER:,} bytes)")
    data = path.read_bytes()
    if not data:
        raise InputError(f"{what} {path} is empty")
    return data


def plan_flash(board: Board, *, firmware: Path | None = None, kmodels: list[tuple[Path, int | None]] = (),
               kfpkg: Path | None = None) -> FlashPlan:
    """Collect the regions to flash and validate them against ``board`` (raises before any I/O to it)."""
    regions: list[Region] = []
    if kfpkg is not None:
        regions += read_kfpkg(kfpkg)
    if firmware is not None:
        regions.append(Region(0, _read(firmware, "firmware"), _unique(firmware.name, regions), "firmware", True))
    for path, address in kmodels:
        data = _read(path, "kmodel")
        regions.append(Region(board.kmodel_address if address is None else address, data,
                              _unique(path.name, regions), "kmodel"))
    if not regions:
        raise InputError("nothing to flash", "give --firmware, --kmodel or --kfpkg")
    validate_regions(board, regions)
    return FlashPlan(board, tuple(sorted(regions, key=lambda r: r.address)))


def _unique(name: str, regions: list[Region]) -> str:
    taken = {r.name for r in regions}
    base, n, candidate = name, 1, name
    while candidate in taken:
        n += 1
        stem, dot, ext = base.rpartition(".")
        candidate = f"{stem}-{n}.{ext}" if dot else f"{base}-{n}"
    return candidate


def validate_regions(board: Board, regions: list[Region] | tuple[Region, ...]) -> None:
    size = board.flash_size
    for r in regions:
        if r.address < 0:
            raise InputError(f"{r.name} has a negative flash address ({r.address})", "addresses are >= 0")
        if r.address % SECTOR:
            raise InputError(f"{r.describe()} does not start on a 4 KiB flash sector",
                             f"use a multiple of 0x1000, e.g. 0x{(r.address // SECTOR + 1) * SECTOR:x}")
        if r.end > size:
            raise DoesNotFitError(f"{r.describe()} ends past the board's {size // (1024 * 1024)} MiB flash "
                                  f"(0x{size:x})", "choose a lower address or a smaller file")
        if r.kind == "kmodel":
            board.require_kmodel_version(kmodel_version(r.data, r.name))
            _require_loads(board, r)
            for reserved in board.firmware.flash_reserved:
                if reserved.overlaps(r.address, r.size):
                    raise InputError(
                        f"kmodel {r.describe()} overlaps the {reserved.what} "
                        f"(0x{reserved.start:06x}-0x{reserved.end:06x}) of {board.firmware.name}",
                        f"flash it at 0x{board.kmodel_address:x} (the board's default) or another free area")
    ordered = sorted(regions, key=lambda r: r.address)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.address < a.end:
            raise InputError(f"{a.describe()} and {b.describe()} overlap", "move one of them")


def _require_loads(board: Board, r: Region) -> None:
    """Refuse a kmodel the board's firmware cannot load (``board_fit``: the verdict convert and the emulated
    firmware give). One k210tool cannot read beyond its header is judged on its file size."""
    from k210tool.compile.kmodel.footprint import board_fit

    fit = board_fit(r.data, board.firmware)
    if not fit.fits:
        raise DoesNotFitError(f"kmodel {r.name} cannot load on {board.id}: {fit.reason}",
                              "convert it for this board (k210tool convert --board), or flash a firmware that "
                              "leaves more memory (--firmware)")


def write_kfpkg(regions: list[Region] | tuple[Region, ...], path: str | Path) -> Path:
    """Write a kfpkg that both kflash and kflash_gui accept (atomically)."""
    names = [r.name for r in regions]
    if len(set(names)) != len(names) or any("/" in n or "\\" in n or n == "flash-list.json" for n in names):
        raise InputError("kfpkg member names must be unique plain file names", f"got {names}")
    listing = {"version": "0.1.0",
               "files": [{"address": r.address, "bin": r.name, "sha256Prefix": r.sha256_prefix} for r in regions]}
    with atomic_open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for r in regions:
            zf.writestr(r.name, r.data)
        zf.writestr("flash-list.json", json.dumps(listing, indent=4))
    return Path(path)


MAX_MEMBER = 16 << 20  # the largest K210 flash: no member of a kfpkg can be bigger
MAX_LISTING = 1 << 20


def read_kfpkg(path: str | Path) -> list[Region]:
    """The regions of a kfpkg. Sizes are checked against what the zip declares before anything is
    unpacked (and reading stops at the declared size), so a zip bomb costs no memory."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            listing = json.loads(_member(zf, "flash-list.json", MAX_LISTING, path))
            entries = listing["files"]
            if not isinstance(entries, list):
                raise InputError(f"{path}: files in flash-list.json must be a list")
            regions = [_region(zf, entry, path) for entry in entries]
    except FileNotFoundError:
        raise InputError(f"kfpkg {path} does not exist") from None
    except zipfile.BadZipFile:
        raise InputError(f"{path} is not a kfpkg (not a zip file)") from None
    except KeyError as exc:
        raise InputError(f"{path}: flash-list.json or a file it lists is missing ({exc})",
                         "a kfpkg needs flash-list.json with files: [{address, bin, sha256Prefix}]") from None
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: bad flash-list.json ({exc})") from None
    except (OSError, RuntimeError, NotImplementedError, EOFError, zlib.error) as exc:  # unreadable, encrypted, odd
        raise InputError(f"cannot read kfpkg {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not regions:
        raise InputError(f"{path} lists no files to flash")
    return regions


def _region(zf: zipfile.ZipFile, entry: object, path: Path) -> Region:
    if not isinstance(entry, dict):
        raise InputError(f"{path}: every entry of files in flash-list.json must be an object")
    name = entry["bin"]
    if not isinstance(name, str) or not posixpath.basename(name) or name.endswith("/"):
        raise InputError(f"{path}: bin {name!r} in flash-list.json is not a file name")
    address = entry["address"]
    if isinstance(address, str):
        address = parse_address(address)
    elif not isinstance(address, int) or isinstance(address, bool):
        raise InputError(f"{path}: address of {name} must be an integer, got {address!r}")
    if address < 0:
        raise InputError(f"{path}: address of {name} is negative ({address})", "addresses are >= 0")
    prefix = entry.get("sha256Prefix")
    if not isinstance(prefix, bool):
        raise InputError(f"{path}: sha256Prefix of {name} must be true or false")
    data = _member(zf, name, MAX_MEMBER, path)
    kind = "firmware" if prefix else ("kmodel" if _looks_like_kmodel(name, data) else "data")
    return Region(address, data, posixpath.basename(name), kind, prefix)


def _member(zf: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise InputError(f"{path}: {name} unpacks to {info.file_size:,} bytes, more than the {limit:,} a K210 "
                         "kfpkg can hold", "is this really a kfpkg?")
    with zf.open(info) as fh:
        return fh.read(limit + 1)[:limit]


def _looks_like_kmodel(name: str, data: bytes) -> bool:
    return name.endswith(".kmodel") or data[:4] == b"LDMK"
