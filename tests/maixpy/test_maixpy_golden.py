"""Golden files of two generated scripts: a template change shows up as a reviewable diff.

The files end in .golden so linters leave the MicroPython code alone.
Regenerate after an intended change: K210TOOL_REGEN_GOLDEN=1 pytest tests/maixpy/test_maixpy_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from maixpy_factory import face_model, fake_kmodel

from k210tool.boards import get_board
from k210tool.maixpy.render import render_script

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "face_recognition_maix_dock_canmv.py.golden": ("face_recognition", "maix_dock", None, 4),
    "parity_maix_go_canmv_v5.py.golden": ("parity", "maix_go", "canmv_v5", 5),
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_generated_script_matches_golden(golden: str, tmp_path: Path) -> None:
    template, board, fw, version = CASES[golden]
    model = face_model(tmp_path, version, size=1401232)
    det = fake_kmodel(tmp_path / "face_detect.kmodel", 3, size=388776)
    source = render_script(template, get_board(board, fw), model=model, detector=det).source
    path = GOLDEN / golden
    if os.environ.get("K210TOOL_REGEN_GOLDEN") == "1":
        path.write_text(source)
    assert path.is_file(), f"{path} is missing: run with K210TOOL_REGEN_GOLDEN=1"
    assert source == path.read_text(), f"{golden} changed: review the diff, then regenerate"
