"""Progress, stages and warnings, decoupled from printing.

Library functions take a ``Reporter`` (default: :class:`Reporter`, which prints nothing and records
warnings and stage times). The CLI passes a :class:`ConsoleReporter`, which draws rich progress bars
on stderr so that stdout stays clean for tables and ``--json``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class Progress:
    """Handle for one progress bar. ``advance`` is cheap and thread-safe enough for our use."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n

    def set_total(self, total: int) -> None:
        self.total = total

    def describe(self, description: str) -> None:
        """Say what the work is doing now (a stage of no known length names its current step)."""


@dataclass
class Reporter:
    """Silent reporter: records stage durations and warnings for the caller's summary."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a named stage (``load``, ``tflite``, ``calibrate``, ``compile``...)."""
        start = time.perf_counter()
        self._stage_started(name)
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + seconds
            self._stage_finished(name, seconds)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Progress]:
        handle = self._make_progress(description, total)
        try:
            yield handle
        finally:
            self._close_progress(handle)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self._show_warning(message)

    def info(self, message: str) -> None:
        self._show_info(message)

    # hooks for subclasses -------------------------------------------------------------------
    def _stage_started(self, name: str) -> None:
        pass

    def _stage_finished(self, name: str, seconds: float) -> None:
        pass

    def _make_progress(self, description: str, total: int | None) -> Progress:
        return Progress(total)

    def _close_progress(self, handle: Progress) -> None:
        pass

    def _show_warning(self, message: str) -> None:
        pass

    def _show_info(self, message: str) -> None:
        pass


class _RichProgress(Progress):
    def __init__(self, bar: Any, task: Any, total: int | None) -> None:
        super().__init__(total)
        self._bar = bar
        self._task = task

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self._bar.update(self._task, advance=n)

    def set_total(self, total: int) -> None:
        super().set_total(total)
        self._bar.update(self._task, total=total)

    def describe(self, description: str) -> None:
        self._bar.update(self._task, description=description)


@dataclass
class ConsoleReporter(Reporter):
    """Draws progress on stderr with rich; ``quiet`` keeps warnings but drops spinners and info."""

    quiet: bool = False

    def __post_init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self._status: Any = None

    def _stage_started(self, name: str) -> None:
        if not self.quiet and self.console.is_terminal:
            self._status = self.console.status(f"{name}...")
            self._status.start()

    def _stage_finished(self, name: str, seconds: float) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if not self.quiet:
            self.console.print(f"[dim]{name}: {seconds:.1f} s[/dim]")

    def _make_progress(self, description: str, total: int | None) -> Progress:
        if self.quiet:
            return Progress(total)
        from rich.progress import Progress as RichProgress

        bar = RichProgress(*progress_columns(total), console=self.console, transient=True)
        bar.start()
        task = bar.add_task(description, total=total)
        return _RichProgress(bar, task, total)

    def _close_progress(self, handle: Progress) -> None:
        if isinstance(handle, _RichProgress):
            handle._bar.stop()

    def _show_warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    def _show_info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, soft_wrap=True)


def progress_columns(total: int | None) -> list[Any]:
    """A bar with its ETA for work of known size; for work of no known progress (``total=None``: nncase's
    compile, whose one opaque step takes most of a minute) a spinner and the elapsed time - an ETA there
    would be a guess (it sat at 0:00:01 for 50 s)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None:
        return [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn()]
