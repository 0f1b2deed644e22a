"""Shared pieces of the subcommands: common options, the context object, output rendering."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from k210tool.report import ConsoleReporter

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Invocation:
    """One run of the command line (``main`` passes it as click's ``obj``): what ``main`` must know after the
    command ended, whichever way it ended."""

    emitted: bool = False  # a result was printed: an error after it must not print a second JSON document


@dataclass
class CliState:
    """What every command receives: output mode and a reporter that draws on stderr."""

    as_json: bool = False
    debug: bool = False
    quiet: bool = False
    reporter: ConsoleReporter = field(default_factory=ConsoleReporter)
    invocation: Invocation = field(default_factory=Invocation)

    def emit(self, result: Any, render: Callable[[Any, Any], None] | None = None) -> None:
        """Print ``result`` as JSON (``--json``) or through ``render(result, console)``."""
        from k210tool.fileio import to_jsonable

        self.invocation.emitted = True
        if self.as_json:
            click.echo(json.dumps(to_jsonable(result), indent=2))
            return
        if render is not None:
            render(result, stdout_console())


def common_options(func: F) -> F:
    """Add --json/--debug/--quiet and pass a :class:`CliState` as the ``state`` keyword."""

    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
    @click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress output (warnings still shown).")
    def wrapper(*args: Any, as_json: bool, debug: bool, quiet: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        invocation = ctx.obj if ctx is not None and isinstance(ctx.obj, Invocation) else Invocation()
        state = CliState(as_json, debug, quiet or as_json, ConsoleReporter(quiet=quiet or as_json), invocation)
        return func(*args, state=state, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def board_options(func: F) -> F:
    """--board and --firmware, validated against boards/ (see `k210tool boards`)."""
    func = click.option(
        "--firmware",
        default=None,
        metavar="FW",
        help="Firmware the board runs, if not its default (maixpy, maixpy_minimum, canmv, canmv_v5, sdk).",
    )(func)
    func = click.option(
        "--board", "-B", default="maix_dock", show_default=True, metavar="BOARD",
        help="Target board (k210tool boards lists them).",
    )(func)
    return func


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def stdout_console() -> Any:
    """A rich console on stdout; wide when piped so tables are not squeezed."""
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)
