"""The one way a value enters generated MicroPython code: as a literal.

Every ``{{ ... }}`` in ``firmware_templates/`` must end in ``|py``; the Jinja environment refuses anything
else (see :mod:`k210tool.maixpy.env`). :func:`py_literal` turns a Python value into source text that the
2019 MicroPython parser (v1.11, the core MaixPy-v1 and CanMV pin) reads back as the same value:

- strings are always double-quoted and pure ASCII: ``\\`` and ``"`` are escaped, control characters become
  ``\\xNN``, everything past ASCII becomes ``\\uXXXX`` / ``\\UXXXXXXXX`` (both firmwares build with
  ``MICROPY_PY_BUILTINS_STR_UNICODE``, whose lexer decodes these escapes to UTF-8). A name can therefore
  never end the literal, start a comment or a new line, whatever it contains;
- ints (optionally hex, for flash addresses), finite floats, bools, None, and lists/tuples/dicts of those.

Anything else is a bug in the caller and raises ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Escapes MicroPython v1.11's lexer understands (py/lexer.c); the rest use \xNN.
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class PyLiteral(str):
    """Source text produced by :func:`py_literal`; the only thing templates may insert."""

    __slots__ = ()


def _quote(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate (undecodable bytes in argv) has no UTF-8 form; the board could not hold it.
            raise ValueError(f"text contains an unpaired surrogate U+{code:04X}; it is not valid Unicode")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _literal(value: Any, hex_ints: bool) -> str:
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()  # numpy scalar -> Python scalar
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return hex(value) if hex_ints and value >= 0 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no MicroPython literal")
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, tuple):
        items = [_literal(v, hex_ints) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, hex_ints) for v in value) + "]"
    if isinstance(value, Mapping):
        parts = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"dict key {k!r} is not a str or int")
            parts.append(f"{_literal(k, hex_ints)}: {_literal(v, hex_ints)}")
        return "{" + ", ".join(parts) + "}"
    raise TypeError(f"cannot write a {type(value).__name__} into a MicroPython script")


def py_literal(value: Any, hex: bool = False) -> PyLiteral:
    """``value`` as MicroPython source text (the ``|py`` filter). ``hex=True`` writes ints as ``0x...``."""
    return PyLiteral(_literal(value, hex))
