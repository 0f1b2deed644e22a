"""Wheel installs find boards/ and firmware_templates/ under <prefix>/share/k210tool (k210tool.resources):
setup.cfg's data_files must ship every file of those folders, to the same relative place."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_data_files_ship_every_board_and_template_file() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    shipped: set[str] = set()
    for target, sources in cfg["options.data_files"].items():
        assert target.startswith("share/k210tool/")
        for pattern in (p.strip() for p in sources.replace("\n", ",").split(",") if p.strip()):
            for f in ROOT.glob(pattern):
                assert f.parent.relative_to(ROOT).as_posix() == target.removeprefix("share/k210tool/"), f
                shipped.add(f.relative_to(ROOT).as_posix())
    wanted = {f.relative_to(ROOT).as_posix() for d in ("boards", "firmware_templates") for f in (ROOT / d).rglob("*")
              if f.is_file() and "__pycache__" not in f.parts}
    assert wanted and wanted == shipped, sorted(wanted ^ shipped)
