"""`k210tool boards`: list boards and firmware families."""

from __future__ import annotations

from typing import Any

import click

from k210tool.cli.common import CliState, common_options, human_bytes


@click.command()
@common_options
def boards(state: CliState) -> None:
    """List the boards k210tool knows (from boards/*.toml) and the firmware families.

    A board runs one firmware family by default; pass --firmware to any command to say your board runs
    another one (for example canmv_v5 for a CanMV build with kmodel v5 support).
    Add your own board by copying boards/maix_dock.toml, or point K210TOOL_BOARDS at a folder of TOML files.
    """

    def render(res: Any, console: Any) -> None:
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

    from k210tool.boards import list_boards

    state.emit(list_boards(), render)
