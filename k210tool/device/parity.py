"""The board side of ``k210tool test-board``: put the kmodel and the input vectors on the board, run the parity
script over the raw REPL, and say in one :class:`~k210tool.errors.DeviceError` line when the board could not.

Everything written is verified by the board (SHA-256 computed on the board); the script itself and the format
of its output are :mod:`k210tool.maixpy.parity`'s. The operation around it (inputs, reference engine,
comparison, gate) is :mod:`k210tool.commands.testboard`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import DeviceError, InputError
from k210tool.maixpy.models import Location, parse_location
from k210tool.report import Reporter


def model_location(board: Any, kmodel_name: str, upload: str, model_at: str | None, inputs_dir: str) -> Location:
    """Where the board holds the kmodel for the run: ``model_at``, else the board's kmodel address in flash
    (``upload="flash"``) or ``inputs_dir/KMODEL_NAME`` on its filesystem; refused when it does not suit the
    upload mode."""
    if model_at:
        loc = parse_location(model_at)
    elif upload == "flash":
        loc = Location(address=board.kmodel_address)
    else:
        loc = Location(path=f"{inputs_dir.rstrip('/')}/{kmodel_name}")
    if upload == "deploy" and loc.path is None:
        raise InputError("--upload deploy puts the kmodel on the board's filesystem: --model-at must be a path",
                         "use --upload flash for a flash address")
    if upload == "flash" and loc.address is None:
        raise InputError("--upload flash needs a flash address for --model-at", "e.g. --model-at 0x300000")
    if upload == "skip" and not model_at:
        raise InputError("--upload skip needs --model-at: where the board holds the kmodel",
                         "e.g. --model-at 0x300000 after k210tool flash, or a board path")
    return loc


_CLEAN = """\
import uos
try:
    uos.stat(%(d)r)
except OSError:
    _p = ''
    for _c in %(d)r.strip('/').split('/'):
        _p += '/' + _c
        try:
            uos.stat(_p)
        except OSError:
            uos.mkdir(_p)
for _n in uos.listdir(%(d)r):
    if _n.endswith('.bin'):
        uos.remove(%(d)r + '/' + _n)
"""


def _file_sha256(repl: Any, path: str, size: int) -> str | None:
    """SHA-256 of a board file, computed by the board; None when there is no such file of that size."""
    from k210tool.device.deploy import board_checksum

    try:
        algo, n, digest = board_checksum(repl, path, size)
    except DeviceError:
        return None
    return digest if algo == "sha256" and n == size else None


def _flash_sha256(transport: Any, address: int, data: bytes) -> str:
    """SHA-256 of ``len(data)`` bytes of the board's flash at ``address``, computed by the board."""
    from k210tool.device.isp import readback_digests
    from k210tool.device.kfpkg import Region

    return str(readback_digests(transport, (Region(address, data, "kmodel", "kmodel"),))[0])


def upload_files(transport: Any, files: list[tuple[str, bytes]], inputs_dir: str, model: tuple[Any, bytes],
                 copy_model: bool, reporter: Reporter) -> list[str]:
    """Clear old inputs, put the kmodel in place (or check it is there), write the inputs; everything is
    verified by the board."""
    import hashlib

    from k210tool.device.deploy import write_file
    from k210tool.device.rawrepl import RawRepl

    done: list[str] = []
    loc, data = model
    held = _flash_sha256(transport, loc.address, data) if loc.address is not None else None
    repl = RawRepl(transport)
    repl.enter(soft_reset=True)
    repl.exec(_CLEAN % {"d": inputs_dir.rstrip("/")}, timeout=30)
    if loc.address is None:
        held = _file_sha256(repl, loc.path, len(data))
    same = held == hashlib.sha256(data).hexdigest()
    if same:
        reporter.info(f"the board holds this kmodel at {loc} (same SHA-256)" + (": not copied again" if copy_model else ""))
    elif copy_model:
        write_file(repl, loc.path, data, local=loc.path, reporter=reporter)
        done.append(loc.path)
    else:
        raise DeviceError(f"the kmodel on the board at {loc} is not this one (its SHA-256 differs)",
                          "put it there with --upload flash (flash address) or --upload deploy (board path)")
    with reporter.progress("upload inputs", total=len(files)) as bar:
        for path, payload in files:
            write_file(repl, path, payload, local=path)
            done.append(path)
            bar.advance(1)
    repl.exit()
    return done


def run_parity(transport: Any, source: str, vectors: int, timeout: float, reporter: Reporter) -> str:
    """Run the parity script; its output. A silent board or a script that raised: one DeviceError line."""
    from k210tool.device.deploy import run_script
    from k210tool.maixpy.parity import MAGIC

    out = bytearray()
    with reporter.progress("run on the board", total=vectors) as bar:
        seen = [0]

        def on_output(chunk: bytes) -> None:
            out.extend(chunk)
            done = out.count(f"{MAGIC}time ".encode()) + out.count(f"{MAGIC}err ".encode())
            if done > seen[0]:
                bar.advance(done - seen[0])
                seen[0] = done

        try:
            result = run_script(transport, source, on_output=on_output, timeout=timeout)
        except DeviceError as exc:
            raise DeviceError(f"the board stopped answering after {seen[0]} of {vectors} vectors: {exc.message}",
                              "check the cable and power; press RESET and run test-board again") from None
    if result.traceback:
        last = result.traceback.strip().splitlines()[-1] if result.traceback.strip() else "an error"
        raise DeviceError(f"the parity script failed on the board: {last}",
                          "k210tool run -p PORT parity.py shows the whole traceback")
    return out.decode("utf-8", "replace")


def board_failure(run: Any) -> None:
    """Raise one DeviceError when the board produced no usable outputs."""
    problems = run.problems()
    if not problems:
        return
    messages = set(run.errors.values())
    if run.errors and len(messages) == 1 and len(run.errors) == run.vectors:
        message = messages.pop()
        hint = "see `k210tool boards` for what the firmware loads and the memory it leaves"
        if "AttributeError" in message or "ImportError" in message:  # the script's KPU API is another firmware's
            hint = ("the board's firmware lacks the KPU API the script uses: is it running the firmware that "
                    "--firmware names (`k210tool boards` lists each board's default)?")
        raise DeviceError(f"the board could not run the kmodel: {message}", hint)
    raise DeviceError(f"parity output from the board is not usable: {problems[0]}"
                      + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                      "run test-board again; corrupted frames point at the serial link")


def upload_and_flash(port: str, baud: int, board: Any, kmodel: Path, loc: Location, data: bytes, fed: np.ndarray,
                     inputs_dir: str, upload: str, reporter: Reporter) -> list[str]:
    """Flash the kmodel over ISP (``upload="flash"``), then over the raw REPL: put it in place or check it is
    there, and write the inputs. What was written, for the result."""
    from k210tool.device.transport import open_transport
    from k210tool.maixpy import parity

    done: list[str] = []
    if upload == "flash":
        from k210tool.device.isp import flash
        from k210tool.device.kfpkg import plan_flash

        with reporter.stage("flash"):
            flash(port, plan_flash(board, kmodels=[(kmodel, loc.address)]), reporter=reporter)
        done.append(f"flash 0x{loc.address:X}")
    folder = inputs_dir.rstrip("/")
    files = [(f"{folder}/{parity.input_file_name(i)}", parity.input_file_bytes(x)) for i, x in enumerate(fed)]
    with reporter.stage("upload"), open_transport(port, baud) as transport:
        done += upload_files(transport, files, folder, (loc, data), upload == "deploy", reporter)
    return done


def run_on_board(port: str, baud: int, source: str, vectors: int, timeout: float, reporter: Reporter) -> str:
    """Open the port and run the parity script (:func:`run_parity`)."""
    from k210tool.device.transport import open_transport

    with reporter.stage("run"), open_transport(port, baud) as transport:
        return run_parity(transport, source, vectors, timeout, reporter)
