"""Throughput of the serial paths through the emulated link, against the baud-rate limit (baud/10 bytes/s).

Measured, not computed: for each case the emulator runs (throttled to the client's baud rate, or not)
and the wall time of the transfer is taken.

* ``flash``: ``k210tool flash`` (kflash's ISP protocol) writing a kmodel. "programming" is the flash-mode
  program's data phase alone (first to last FLASH_WRITE seen by the emulator); "end to end" includes the
  greeting probe, uploading kflash's 16 KiB loader at 115200 baud, and the board's read-back.
* ``deploy``: ``k210tool deploy`` through the raw REPL (base64 chunks, the board's SHA-256 check).

Usage: .venv/bin/python benchmarks/flash.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

from k210tool.boards import get_board
from k210tool.device.deploy import deploy, plan_files
from k210tool.device.isp import flash
from k210tool.device.kfpkg import plan_flash
from k210tool.device.transport import open_transport
from k210tool.emulator.server import Emulator


def _kmodel(path: Path, size: int) -> Path:
    path.write_bytes(b"LDMK" + struct.pack("<I", 4) + os.urandom(size - 8))
    return path


def bench_flash(tmp: Path, size: int, baud: int, throttle: bool) -> dict[str, float]:
    model = _kmodel(tmp / f"m{size}.kmodel", size)
    plan = plan_flash(get_board("maix_dock"), kmodels=[(model, None)])
    with Emulator("maix_dock", fs_root=tmp / "fs", throttle=throttle) as emu:
        emu.attach_in_process()
        start = time.perf_counter()
        result = flash(emu.port, plan, baud=baud)
        total = time.perf_counter() - start
        writes = [w for w in emu.board.isp.writes if w.status == "ok"]
        started = emu.board.isp.flash_init_time
        assert started is not None and emu.flash.read(plan.regions[0].address, size) == model.read_bytes()
    # programming: from the flash-mode program's FLASH_INIT to the last FLASH_WRITE it stored
    programmed = sum(w.length for w in writes)
    return {"end_to_end": size / total, "programming": programmed / (writes[-1].time - started),
            "attempts": result.attempts}


def bench_deploy(tmp: Path, size: int, baud: int, throttle: bool) -> dict[str, float]:
    blob = tmp / f"blob{size}.bin"
    blob.write_bytes(os.urandom(size))
    with Emulator("maix_dock", fs_root=tmp / "fs", throttle=throttle) as emu, open_transport(emu.port, baud) as t:
        start = time.perf_counter()
        result = deploy(t, plan_files([str(blob)]), soft_reset=False, reboot=False)
        seconds = time.perf_counter() - start
        assert (emu.fs_root / "flash" / blob.name).read_bytes() == blob.read_bytes()
    return {"end_to_end": size / seconds, "file": result.files[0].size / result.files[0].seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller transfers (about 30 s in all)")
    args = parser.parse_args()
    k = 1 if args.quick else 4
    cases = [
        ("flash", 115200, True, 48 * 1024 * k),
        ("flash", 1500000, True, 256 * 1024 * k),
        ("flash", 1500000, False, 1024 * 1024 * k),
        ("deploy", 115200, True, 16 * 1024 * k),
        ("deploy", 115200, False, 64 * 1024 * k),
    ]
    print(f"{'path':7} {'baud':>8} {'link':>10} {'bytes':>9} {'baud/10':>9} {'measured B/s':>13} "
          f"{'of baud/10':>10}  detail")
    with tempfile.TemporaryDirectory(prefix="k210tool-bench-") as d:
        for path, baud, throttle, size in cases:
            tmp = Path(tempfile.mkdtemp(dir=d))
            limit = baud / 10
            if path == "flash":
                m = bench_flash(tmp, size, baud, throttle)
                main_rate, detail = m["programming"], f"end to end {m['end_to_end']:,.0f} B/s"
                if m["attempts"] != 1:
                    detail += f", {m['attempts']:.0f} attempts"
            else:
                m = bench_deploy(tmp, size, baud, throttle)
                main_rate, detail = m["end_to_end"], "file data incl. on-board SHA-256 check"
            link = "throttled" if throttle else "unlimited"
            print(f"{path:7} {baud:>8} {link:>10} {size:>9} {limit:>9,.0f} {main_rate:>13,.0f} "
                  f"{main_rate / limit:>9.0%}  {detail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
