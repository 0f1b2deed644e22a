"""The console reporter: what a progress display shows for work of known and of unknown length."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import SpinnerColumn, TimeElapsedColumn, TimeRemainingColumn

from k210tool.report import ConsoleReporter, progress_columns


def test_work_of_no_known_progress_shows_a_spinner_and_the_elapsed_time_not_an_eta() -> None:
    """Issue 17: nncase's compile sat at `ETA 0:00:01` for 50 s (8 steps, one of them most of the time)."""
    opaque = progress_columns(None)
    assert any(isinstance(c, SpinnerColumn) for c in opaque) and any(isinstance(c, TimeElapsedColumn) for c in opaque)
    assert not any(isinstance(c, TimeRemainingColumn) for c in opaque)
    assert any(isinstance(c, TimeRemainingColumn) for c in progress_columns(10))


def test_an_opaque_stage_names_its_current_step() -> None:
    out = io.StringIO()
    rep = ConsoleReporter()
    rep.console = Console(file=out, force_terminal=True, width=100)
    with rep.progress("nncase compile") as bar:
        bar.advance()
        bar.describe("nncase compile, step 1/8: import graph")
        task = bar._bar.tasks[0]  # type: ignore[attr-defined]
        assert task.description.endswith("step 1/8: import graph") and task.total is None
    assert "ETA" not in out.getvalue()
