"""Shared bits of the benchmark scripts: a scratch folder with the demo model and faces."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def demo_folder(kpu_form: bool = False) -> Path:
    """Build (once per run) the demo model and synthetic faces in a temporary folder."""
    from k210tool.commands.demo import make_demo

    root = Path(tempfile.mkdtemp(prefix="k210tool-bench-"))
    make_demo(root, identities=16, per_identity=4,
              activation="relu" if kpu_form else "prelu", stride2_padding="symmetric" if kpu_form else "same")
    return root


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
