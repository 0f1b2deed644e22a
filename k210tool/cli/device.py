"""`k210tool ports | flash | deploy | run | repl`: talk to a board over USB serial (or to `k210tool emulate`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, common_options, human_bytes

PORT_HELP = "Serial port: /dev/ttyUSB0, COM3, the path `k210tool emulate` printed, or a pyserial URL."


def _port_option(func: Any) -> Any:
    return click.option("--port", "-p", required=True, metavar="PORT", help=PORT_HELP)(func)


# --- ports ------------------------------------------------------------------------------------------------
@click.command()
@common_options
def ports(state: CliState) -> None:
    """List serial ports with their USB VID:PID and guess which are Maix boards.

    \b
    A CH340 (1a86:7523) is a Dock, Bit or KD233; an FT2232/CH552 (0403:6010) is a Go, Maixduino,
    Amigo or Cube - those show two ports and the K210 is on the second one.
    The emulator's pseudo-terminal is not a USB device and is not listed.

    \b
    Example:
      k210tool ports
      k210tool ports --json
    """
    from k210tool.device.ports import list_ports

    found = list_ports()

    def render(rows: list[Any], console: Any) -> None:
        from rich.table import Table

        if not rows:
            console.print("no serial ports found (is the board plugged in? `dmesg | tail` shows new ports)")
            return
        t = Table(title="Serial ports")
        for col in ("port", "USB id", "description", "chip", "likely board", "note"):
            t.add_column(col)
        for p in rows:
            t.add_row(p.device, p.usb_id, p.description, p.chip or "-", ", ".join(p.boards) or "-", p.note)
        console.print(t)

    state.emit(found, render)


# --- flash ------------------------------------------------------------------------------------------------
@click.command()
@click.option("--port", "-p", default=None, metavar="PORT", help=PORT_HELP)
@click.option("--board", "-B", default="maix_dock", show_default=True, metavar="BOARD",
              help="Target board (k210tool boards lists them).")
@click.option("--firmware", "firmware", default=None, metavar="FW",
              help="Firmware family the board runs, if not its default (maixpy, canmv, canmv_v5, sdk), as in "
                   "every other command. (An existing file here is read as --firmware-image, the old spelling.)")
@click.option("--firmware-family", "family", default=None, hidden=True)  # the old spelling of --firmware
@click.option("--firmware-image", "image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, metavar="FILE",
              help="Firmware image (.bin) to write at 0x0 (stored with the SHA-256 header the boot ROM checks).")
@click.option("--kmodel", "kmodels", multiple=True, metavar="FILE[@ADDR]",
              help="kmodel to write, at the board's kmodel address unless @ADDR is given. Repeatable.")
@click.option("--kfpkg", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A kfpkg (zip + flash-list.json) to write; combined with --firmware-image/--kmodel if given.")
@click.option("--kfpkg-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the combined kfpkg here (kflash/kflash_gui can flash it). Without --port: "
                   "only write it.")
@click.option("--baud", "-b", type=int, default=None, help="ISP baud rate [default: the board's, 1500000].")
@click.option("--readback/--no-readback", default=None,
              help="Make the board hash its flash over the REPL after flashing [default: when it runs MicroPython].")
@click.option("--attempts", default=2, show_default=True, help="Whole-flash attempts before giving up.")
@common_options
def flash(port: str | None, board: str, firmware: str | None, family: str | None, image: Path | None,
          kmodels: tuple[str, ...],
          kfpkg: Path | None, kfpkg_out: Path | None, baud: int | None, readback: bool | None, attempts: int,
          state: CliState) -> None:
    """Flash firmware, kmodels or a kfpkg over the K210's UART ISP (through the kflash package).

    Before anything is sent the regions are checked against the board: no overlaps, nothing past the
    end of the flash, no kmodel inside an area the firmware reserves, no kmodel version the firmware
    cannot load. Then k210tool resets the board into its ISP ROM (bounded retries with the board's
    DTR/RTS sequence), runs kflash, and verifies: a chunk the ISP program rejected fails the attempt,
    and a MicroPython board hashes what is in its flash.

    \b
    Examples:
      k210tool flash -p /dev/ttyUSB0 --board maix_dock --kmodel face.kmodel
      k210tool flash -p /dev/ttyUSB0 --board maix_go --firmware-image maixpy.bin --kmodel face.kmodel@0x500000
      k210tool flash --board maix_dock --kmodel face.kmodel --kfpkg-out face.kfpkg   # build only
    """
    from k210tool.boards import get_board
    from k210tool.device.kfpkg import plan_flash, split_kmodel_arg, write_kfpkg
    from k210tool.errors import InputError

    family, image = _family_and_image(firmware, family, image, state)
    target = get_board(board, family)
    plan = plan_flash(target, firmware=image, kmodels=[split_kmodel_arg(k) for k in kmodels], kfpkg=kfpkg)
    if kfpkg_out is not None:
        write_kfpkg(plan.regions, kfpkg_out)
        state.reporter.info(f"wrote {kfpkg_out}")
    if port is None:
        if kfpkg_out is None:
            raise InputError("no --port given", "give --port to flash, or --kfpkg-out to only build the kfpkg")
        state.emit({"kfpkg": str(kfpkg_out), "regions": [_region_row(r) for r in plan.regions]},
                   lambda res, console: console.print(f"wrote {res['kfpkg']} ({len(res['regions'])} regions)"))
        return
    from k210tool.device.isp import flash as do_flash

    result = do_flash(port, plan, baud=baud, readback=readback, attempts=attempts, reporter=state.reporter)

    def render(res: Any, console: Any) -> None:
        from rich.table import Table

        t = Table(title=f"Flashed {res.board} on {res.port}")
        for col in ("file", "kind", "address", "size", "sha256", "verified"):
            t.add_column(col)
        for r in res.regions:
            t.add_row(r.name, r.kind, f"0x{r.address:06x}", human_bytes(r.size), r.sha256[:16], r.verified)
        console.print(t)
        console.print(f"{human_bytes(sum(r.size for r in res.regions))} in {res.seconds:.1f} s "
                      f"({human_bytes(res.bytes_per_second)}/s) at {res.baud} baud, kflash -B {res.kflash_board}, "
                      f"attempt {res.attempts}")

    state.emit(result, render)


def _family_and_image(firmware: str | None, family: str | None, image: Path | None,
                      state: CliState) -> tuple[str | None, Path | None]:
    """``--firmware`` is the family, as everywhere; a file there is the old spelling of ``--firmware-image``
    (a family id is never taken for a file). ``--firmware-family`` is the old spelling of ``--firmware``."""
    from k210tool.boards import all_firmware
    from k210tool.errors import InputError

    if firmware is not None and firmware not in all_firmware() and Path(firmware).is_file():
        if image is not None:
            raise InputError(f"--firmware {firmware} is a file and --firmware-image is given too",
                             "give the image once, as --firmware-image FILE")
        state.reporter.warn(f"--firmware {firmware}: read as --firmware-image (--firmware names the family now)")
        return family, Path(firmware)
    if firmware is not None and family is not None and firmware != family:
        raise InputError(f"--firmware {firmware} and --firmware-family {family} disagree",
                         "give the family once, as --firmware FW")
    return firmware or family, image


def _region_row(r: Any) -> dict[str, Any]:
    return {"name": r.name, "kind": r.kind, "address": r.address, "size": r.size, "sha256": r.sha256}


# --- deploy -----------------------------------------------------------------------------------------------
@click.command()
@_port_option
@click.argument("files", nargs=-1, required=True, metavar="FILE[:/board/path]...")
@click.option("--dest", default="/flash", show_default=True, help="Board folder for files without :/path.")
@click.option("--baud", type=int, default=115200, show_default=True, help="REPL baud rate.")
@click.option("--soft-reset/--no-soft-reset", default=True, show_default=True,
              help="Soft-reset the board before copying (stops the running app and frees its memory).")
@click.option("--reboot/--no-reboot", default=True, show_default=True,
              help="Soft-reset into the app (boot.py, main.py) after copying.")
@click.option("--attempts", default=3, show_default=True, help="Attempts per file.")
@common_options
def deploy(port: str, files: tuple[str, ...], dest: str, baud: int, soft_reset: bool, reboot: bool, attempts: int,
           state: CliState) -> None:
    """Copy files to the board's filesystem over the MicroPython raw REPL, verified on the board.

    Each file goes in chunks to a temporary name; the board checksums it (SHA-256) and only a match
    renames it into place, so an interrupted copy never leaves a damaged file behind.

    \b
    Examples:
      k210tool deploy -p /dev/ttyUSB0 main.py
      k210tool deploy -p /dev/ttyUSB0 main.py face.kmodel:/sd/face.kmodel --no-reboot
    """
    from k210tool.device.deploy import deploy as do_deploy
    from k210tool.device.deploy import plan_files
    from k210tool.device.transport import open_transport

    plan = plan_files(list(files), dest)
    with open_transport(port, baud) as transport:
        result = do_deploy(transport, plan, soft_reset=soft_reset, reboot=reboot, attempts=attempts,
                           reporter=state.reporter)

    def render(res: Any, console: Any) -> None:
        from rich.table import Table

        t = Table(title=f"Deployed to {res.port}")
        for col in ("board path", "size", "checksum (by the board)", "attempts", "seconds"):
            t.add_column(col)
        for f in res.files:
            t.add_row(f.remote, human_bytes(f.size), f.checksum[:23], str(f.attempts), f"{f.seconds:.1f}")
        console.print(t)
        console.print(f"{len(res.files)} file(s) verified in {res.seconds:.1f} s "
                      f"({human_bytes(res.bytes_per_second)}/s)" + ("; board soft-reset into the app" if res.rebooted
                                                                     else ""))

    state.emit(result, render)


# --- run --------------------------------------------------------------------------------------------------
@dataclass
class RunOutput:
    port: str
    script: str
    output: str
    traceback: str
    seconds: float
    interrupted: bool


@click.command()
@_port_option
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--baud", type=int, default=115200, show_default=True, help="REPL baud rate.")
@click.option("--soft-reset/--no-soft-reset", default=True, show_default=True,
              help="Soft-reset the board first (a clean interpreter, as at boot).")
@click.option("--timeout", type=float, default=None,
              help="Give up when the board is silent this many seconds [default: wait; Ctrl-C interrupts].")
@common_options
def run(port: str, script: Path, baud: int, soft_reset: bool, timeout: float | None, state: CliState) -> None:
    """Run a script on the board (not saved there) and stream its output; exit 1 if it raised.

    Ctrl-C interrupts the script on the board.

    \b
    Example:
      k210tool run -p /dev/ttyUSB0 probe.py
    """
    from k210tool.device.deploy import run_script
    from k210tool.device.transport import open_transport

    captured = bytearray()

    def on_output(data: bytes) -> None:
        captured.extend(data)
        if not state.as_json:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    with open_transport(port, baud) as transport:
        res = run_script(transport, script.read_bytes(), on_output=on_output, soft_reset=soft_reset,
                         timeout=timeout)
    out = RunOutput(res.port, str(script), captured.decode("utf-8", "replace"), res.traceback, res.seconds,
                    res.interrupted)
    if state.as_json:
        state.emit(out)
    elif res.traceback:
        click.echo(res.traceback.replace("\r\n", "\n").rstrip("\n"), err=True)
    if res.traceback:
        sys.exit(1)


# --- repl -------------------------------------------------------------------------------------------------
@click.command()
@_port_option
@click.option("--baud", type=int, default=115200, show_default=True, help="REPL baud rate.")
@click.option("--linger", type=float, default=1.0, show_default=True,
              help="With piped input: seconds of board silence before leaving.")
def repl(port: str, baud: int, linger: float) -> None:
    """Open an interactive terminal on the board's MicroPython REPL (Ctrl-] leaves).

    Ctrl-C interrupts the running program, Ctrl-D soft-resets the board. With piped stdin the input is
    sent and the answer printed.

    \b
    Examples:
      k210tool repl -p /dev/ttyUSB0
      echo "print(1+1)" | k210tool repl -p /dev/ttyUSB0
    """
    from k210tool.device.terminal import terminal
    from k210tool.device.transport import open_transport

    with open_transport(port, baud) as transport:
        if sys.stdin.isatty():
            click.echo(f"--- {port} at {baud} baud; Ctrl-] to leave ---", err=True)
        terminal(transport, linger=linger)
