from __future__ import annotations

import ast
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maixpy_factory import HOSTILE

from k210tool.maixpy.check import compile_mpy, mpy_cross_binary
from k210tool.maixpy.literal import PyLiteral, py_literal


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_one_ascii_string_literal(text: str) -> None:
    lit = py_literal(text)
    assert isinstance(lit, PyLiteral)
    assert lit.isascii() and "\n" not in lit and "\r" not in lit
    node = ast.parse(lit, mode="eval").body
    assert isinstance(node, ast.Constant) and node.value == text


def test_micropython_1_11_lexer_reads_the_same_string(tmp_path) -> None:
    # compile with the MicroPython the firmware pins: its .mpy holds each constant as UTF-8 bytes
    import subprocess

    src = tmp_path / "n.py"
    src.write_text(f"NAMES = {py_literal(HOSTILE)}\n")
    subprocess.run([str(mpy_cross_binary("1.11")), "-o", str(tmp_path / "n.mpy"), str(src)], check=True)
    mpy = (tmp_path / "n.mpy").read_bytes()
    for text in HOSTILE:
        assert text.encode("utf-8") in mpy, text


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_any_text_round_trips(text: str) -> None:
    lit = py_literal(text)
    assert lit.isascii() and "\n" not in lit
    assert ast.literal_eval(lit) == text


def test_numbers_containers_and_hex() -> None:
    assert py_literal(0x300000, hex=True) == "0x300000"
    assert py_literal(3145728) == "3145728"
    assert py_literal(-5, hex=True) == "-5"
    assert py_literal(0.1) == "0.1" and py_literal(1e-5) == "1e-05"
    assert py_literal(True) == "True" and py_literal(None) == "None"
    value = {"a": [1, 2.5, (3,)], "b": None, 7: "x"}
    assert ast.literal_eval(py_literal(value)) == value
    assert ast.literal_eval(py_literal((1,))) == (1,)


@pytest.mark.parametrize("bad", [math.nan, math.inf, object(), {1.5: "x"}, b"bytes", "\udcff"])
def test_values_without_a_safe_literal_are_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        py_literal(bad)


def test_numpy_scalars_become_plain_literals() -> None:
    import numpy as np

    assert py_literal(np.float32(0.5)) == "0.5"
    assert py_literal(np.int64(7)) == "7"


def test_literals_compile_on_the_old_micropython() -> None:
    compile_mpy(f"X = {py_literal(HOSTILE)}\nY = {py_literal({'t': 0.25, 'n': None})}\n", "1.11")
