"""Names of people reach the generated code only as string constants, whatever they contain."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from maixpy_factory import HOSTILE, face_model, fake_kmodel

from k210tool.boards import get_board
from k210tool.maixpy.check import compile_mpy
from k210tool.maixpy.render import render_script

BENIGN = [f"person{i}" for i in range(len(HOSTILE))]


class _Blank(ast.NodeTransformer):
    """Replace every constant equal to one of ``texts`` by a placeholder, to compare code shapes."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = set(texts)
        self.seen: list[str] = []

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if node.value in self.texts:
            self.seen.append(node.value)
            return ast.copy_location(ast.Constant("<name>"), node)
        return node


def _shape(source: str, names: list[str]) -> tuple[str, list[str]]:
    blank = _Blank(names)
    tree = blank.visit(ast.parse(source))
    return ast.dump(tree), blank.seen


@pytest.mark.parametrize("fw", ["maixpy", "canmv", "canmv_v5"])
def test_hostile_names_change_nothing_but_string_constants(fw: str, tmp_path: Path) -> None:
    version = 5 if fw == "canmv_v5" else 4
    model = face_model(tmp_path, version)
    det = fake_kmodel(tmp_path / "det.kmodel", version)
    board = get_board("maixduino", fw)
    hostile = render_script("enroll", board, model=model, detector=det, names=HOSTILE).source
    benign = render_script("enroll", board, model=model, detector=det, names=BENIGN).source
    shape_h, seen_h = _shape(hostile, HOSTILE)
    shape_b, seen_b = _shape(benign, BENIGN)
    assert shape_h == shape_b  # same program, only the name constants differ
    assert sorted(seen_h) == sorted(HOSTILE)  # each name is exactly one constant, in the NAMES list
    compile_mpy(hostile, "1.11")


def test_hostile_board_paths_and_file_names_stay_literals(tmp_path: Path) -> None:
    folder = tmp_path / 'we"ird\nname'
    folder.mkdir()
    model = face_model(folder, 4, name='face"""\n#x')
    det = fake_kmodel(folder / "det\n.kmodel", 4)
    from k210tool.maixpy.models import parse_location
    from k210tool.maixpy.render import ScriptOptions

    r = render_script("face_recognition", get_board("maix_dock"), model=model, detector=det,
                      model_at=parse_location('/sd/a"b.kmodel'),
                      options=ScriptOptions(db_path="/flash/{{ x }}'.json"))
    tree = ast.parse(r.source)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert '/sd/a"b.kmodel' in strings and "/flash/{{ x }}'.json" in strings
    # file names appear only in comments, escaped like a literal: no raw newline ends the comment
    assert 'face"""\n#x' not in r.source and '"face\\"\\"\\"\\n#x.kmodel"' in r.source
    compile_mpy(r.source, "1.11")
