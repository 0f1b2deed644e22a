"""List serial ports and guess which ones are Maix boards from their USB VID:PID.

The guesses come from ``boards/*.toml`` (``[serial] usb = [{vid, pid, chip}]``): a CH340 (1a86:7523) is
a Dock, Bit or KD233; an FT2232 or a CH552 emulating one (0403:6010) is a Go, Maixduino, Amigo or Cube.
Those show two ports; the K210's UART is the second interface (the first goes to JTAG), which is also
the one kflash picks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from k210tool.boards import all_boards


@dataclass
class PortInfo:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    chip: str = ""
    boards: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "-"


def _interface_number(location: str | None) -> int | None:
    # pyserial's location looks like "1-1.2:1.1": the number after the last '.' of the part after ':'
    if not location or ":" not in location:
        return None
    tail = location.rsplit(":", 1)[1]
    try:
        return int(tail.rsplit(".", 1)[-1])
    except ValueError:
        return None


def guess(vid: int | None, pid: int | None) -> tuple[str, list[str]]:
    """(chip, board ids) for a USB id; ("", []) when no known board uses it."""
    chip, boards = "", []
    for board in all_boards().values():
        for usb in board.serial.usb:
            if usb.vid == vid and usb.pid == pid:
                chip = chip or usb.chip
                boards.append(board.id)
    return chip, sorted(set(boards))


def list_ports() -> list[PortInfo]:
    from serial.tools import list_ports as lp

    found = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        chip, boards = guess(p.vid, p.pid)
        note = ""
        if boards and p.vid == 0x0403 and p.pid == 0x6010:
            iface = _interface_number(p.location)
            note = ("K210 UART (second interface)" if iface == 1 else
                    "first interface (JTAG side): the K210 UART is the other port" if iface == 0 else "")
        found.append(PortInfo(p.device, p.description or "", p.vid, p.pid, p.serial_number, chip, boards, note))
    return found
