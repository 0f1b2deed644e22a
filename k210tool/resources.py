"""Where the project's data folders (``boards/``, ``firmware_templates/``) are found.

Search order: ``$K210TOOL_<NAME>`` (a folder of your own), the source checkout next to the package
(editable installs, the normal set-up), then ``<prefix>/share/k210tool/<name>`` (wheel installs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from k210tool.errors import K210ToolError

_REPO = Path(__file__).resolve().parent.parent


def data_dirs(name: str) -> list[Path]:
    """All existing folders named ``name`` in search order (user override first)."""
    env = os.environ.get("K210TOOL_" + name.upper())
    candidates = [Path(p) for p in env.split(os.pathsep)] if env else []
    candidates += [_REPO / name, Path(sys.prefix) / "share" / "k210tool" / name]
    return [p for p in candidates if p.is_dir()]


def data_dir(name: str) -> Path:
    dirs = data_dirs(name)
    if not dirs:
        raise K210ToolError(
            f"cannot find the {name}/ folder of k210tool",
            f"set K210TOOL_{name.upper()} to its path or reinstall k210tool",
        )
    return dirs[0]
