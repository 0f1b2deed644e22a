"""`k210tool boards`: list boards and firmware families."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from k210tool.cli.common import CliState, common_options, human_bytes


@dataclass
class BoardRow:
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
    from k210tool.boards import all_boards, all_firmware

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


@click.command()
@common_options
def boards(state: CliState) -> None:
    """List the boards k210tool knows (from boards/*.toml) and the firmware families.

    A board runs one firmware family by default; pass --firmware to any command to say your board runs
    another one (for example canmv_v5 for a CanMV build with kmodel v5 support).
    Add your own board by copying boards/maix_dock.toml, or point K210TOOL_BOARDS at a folder of TOML files.
    """

    def render(res: BoardsResult, console: Any) -> None:
        from rich.table import Table

        t = Table(title="Boards")
        for col in ("board", "name", "firmware", "kmodel", "RAM for model", "flash", "kflash -B", "LCD", "camera"):
            t.add_column(col)
        for b in res.boards:
            t.add_row(b.id, b.name, b.firmware, "v" + "/v".join(map(str, b.kmodel_versions)),
                      human_bytes(b.model_memory), human_bytes(b.flash_size), b.kflash_board, b.lcd, b.camera)
        console.print(t)
        f = Table(title="Firmware families")
        for col in ("firmware", "name", "loads kmodel", "get it"):
            f.add_column(col)
        for fid, fw in res.firmware.items():
            f.add_row(fid, fw["name"], "v" + "/v".join(map(str, fw["kmodel_versions"])), fw["download"])
        console.print(f)

    state.emit(list_boards(), render)
