"""`k210tool emulate`: serve a virtual Maix board on a pseudo-terminal."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, board_options, common_options


@click.command()
@board_options
@click.option("--fs", "fs_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Host folder holding the board's filesystem (/flash, /sd) [default: a temporary one].")
@click.option("--flash-image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep the emulated SPI flash in this file between runs.")
@click.option("--throttle", is_flag=True, help="Limit the link to the client's baud rate (baud/10 bytes/s).")
@click.option("--fault", "faults", multiple=True, metavar="KIND:PHASE:BYTE[:SECONDS]",
              help="Inject a fault: cut, corrupt or stall at a byte of the rom/stub/isp/repl/any phase, "
                   "e.g. corrupt:stub:3000, cut:repl:500:2, stall:repl:200:1.5. Repeatable.")
@click.option("--silent", type=click.Choice(["isp", "repl", "all"]), default=None,
              help="Never answer in that mode (to test a dead board).")
@click.option("--raw-paste/--no-raw-paste", default=None,
              help="Offer MicroPython's raw-paste mode [default: as the firmware (no for MaixPy/CanMV)].")
@click.option("--link", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also make this symlink to the pseudo-terminal (a stable port name).")
@click.option("--log", "show_log", is_flag=True, help="Print what the board does on stderr.")
@click.option("--camera", type=click.Path(exists=True, path_type=Path), default=None,
              help="Camera frames: a folder of images or a video file (default: $K210TOOL_CAMERA, else a test pattern).")
@click.option("--lcd", "lcd_out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write every lcd.display() frame here as PNG (default: $K210TOOL_LCD).")
@common_options
def emulate(board: str, firmware: str | None, fs_root: Path | None, flash_image: Path | None, throttle: bool,
            faults: tuple[str, ...], silent: str | None, raw_paste: bool | None, link: Path | None,
            show_log: bool, camera: Path | None, lcd_out: Path | None, state: CliState) -> None:
    """Serve a virtual Maix board on a pseudo-terminal until Ctrl-C.

    The board answers the K210 ISP protocol (so kflash can flash it; the emulated flash checks each
    chunk's CRC) and runs a MicroPython raw REPL with a filesystem (so mpremote and k210tool deploy/run
    work). It prints two lines on stdout: the port, and a PYTHONPATH=... assignment. Clients that reset
    the board through DTR/RTS (kflash, k210tool flash) need that PYTHONPATH: a pseudo-terminal has no
    modem lines, and the shim there forwards them to the emulator.

    \b
    Example (two terminals):
      k210tool emulate --board maix_dock --log
      PYTHONPATH=... kflash -p /dev/pts/7 -B dan -b 1500000 face.kfpkg
      PYTHONPATH=... k210tool flash -p /dev/pts/7 --board maix_dock --kmodel face.kmodel
      mpremote connect /dev/pts/7 fs cp main.py :main.py + exec "import main"
      k210tool deploy -p /dev/pts/7 main.py
      k210tool emulate --camera faces/ --lcd lcd_frames/     # generated apps see these frames
    """
    from k210tool.emulator.maixpy import Hardware, maix_registry
    from k210tool.emulator.server import Emulator

    def log(line: str) -> None:
        click.echo(line, err=True)

    if lcd_out is not None:
        lcd_out.mkdir(parents=True, exist_ok=True)
    modules = maix_registry(Hardware(camera=camera, lcd_out=lcd_out))
    emu = Emulator(board, firmware, fs_root=fs_root, flash_image=flash_image, faults=list(faults), silent=silent,
                   modules=modules, raw_paste=raw_paste, throttle=throttle, link=link, log=log if show_log else None)
    emu.start()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if state.as_json:
            click.echo(json.dumps({"port": emu.port, "pythonpath": str(emu.shim_dir), "fs": str(emu.fs_root),
                                   "board": emu.board_info.id, "firmware": emu.board_info.firmware.id}))
        else:
            click.echo(emu.port)
            click.echo(f"PYTHONPATH={emu.shim_dir}")
        sys.stdout.flush()
        if not state.quiet:
            _describe(emu, link, state)
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


def _raise_interrupt(*_args: Any) -> None:
    raise KeyboardInterrupt


def _describe(emu: Any, link: Path | None, state: CliState) -> None:
    b = emu.board_info
    port = str(link) if link else emu.port
    state.reporter.info(
        f"virtual {b.name} running {b.firmware.name} (kflash -B {b.serial.kflash_board}); "
        f"filesystem in {emu.fs_root}; Ctrl-C stops it\n"
        f"  flash: PYTHONPATH={emu.shim_dir} kflash -p {port} -B {b.serial.kflash_board} file.kfpkg\n"
        f"  REPL:  mpremote connect {port}   or   k210tool repl -p {port}")
