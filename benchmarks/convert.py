"""Convert time of the demo MobileFaceNet, per stage (issue 2). Run: .venv/bin/python benchmarks/convert.py

Builds the demo (the paper's MobileFaceNet, 112x112, seeded weights) and converts it as `k210tool convert`
does, once with the default KPU rewrite and once without, printing the measured seconds of every stage.
"""

from __future__ import annotations

import time

from _common import demo_folder, table


def main() -> None:
    from k210tool.commands.convert import CalibrationOptions, ConvertOptions, convert
    from k210tool.report import Reporter

    folder = demo_folder()
    rows = []
    for label, rewrite, firmware in (("rewrite (default), v4", True, None), ("no rewrite, v5", False, "sdk")):
        rep = Reporter()
        start = time.perf_counter()
        result = convert(ConvertOptions(model=folder / "mobilefacenet.h5", output=folder / f"{rewrite}.kmodel",
                                        firmware=firmware, rewrite=rewrite, allow_overflow=True,
                                        calibration=CalibrationOptions(str(folder / "faces"), 64)), rep)
        total = time.perf_counter() - start
        stages = ", ".join(f"{k} {v:.1f}" for k, v in result.summary.stage_seconds.items())
        rows.append([label, f"{total:.1f}", stages, f"v{result.summary.kmodel_version}",
                     f"{result.summary.kmodel_size / 1024:.0f} KB"])
    print("Convert of the demo MobileFaceNet (112x112, 64 calibration images)")
    print(table(rows, ["run", "total s", "stages (s)", "kmodel", "size"]))


if __name__ == "__main__":
    main()
