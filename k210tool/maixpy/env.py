"""The Jinja environment that renders ``firmware_templates/``.

Two guards make generated code safe to run on a board:

- ``StrictUndefined``: a name the template uses but the context lacks is an error, never an empty string;
- a ``finalize`` hook that refuses every ``{{ ... }}`` whose value did not come out of the ``|py`` filter
  (:func:`k210tool.maixpy.literal.py_literal`). So a person's name, a path or a threshold can only ever
  appear as a literal, and forgetting ``|py`` in a template fails the tests instead of shipping.

Shared pieces live in ``firmware_templates/_partials/`` and are pulled in with ``{% include %}`` (includes
share the context; macros would return unchecked strings).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from k210tool.errors import InputError
from k210tool.maixpy.literal import PyLiteral, py_literal

TEMPLATE_SUFFIX = ".py.j2"


class UnescapedValueError(TypeError):
    """A template inserted a value without ``|py`` (a bug in the template, caught at render time)."""


def _only_literals(value: Any) -> Any:
    if isinstance(value, PyLiteral):
        return value
    raise UnescapedValueError(
        f"template inserted {value!r} without the |py filter; every {{{{ }}}} must end in |py"
    )


def template_dirs() -> list[Path]:
    """Template folders in search order: ``$K210TOOL_FIRMWARE_TEMPLATES`` first, then the bundled one."""
    from k210tool.resources import data_dirs

    dirs = data_dirs("firmware_templates")
    if not dirs:
        raise InputError("cannot find the firmware_templates/ folder of k210tool",
                         "set K210TOOL_FIRMWARE_TEMPLATES to its path or reinstall k210tool")
    return dirs


@lru_cache(maxsize=8)
def _environment(dirs: tuple[Path, ...]) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        finalize=_only_literals,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["py"] = py_literal
    return env


def environment() -> Any:
    """The shared environment over the current template folders."""
    return _environment(tuple(template_dirs()))
