"""Shared pieces of the subcommands: common options, the context object, output rendering."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


def model_load_options(func: Any) -> Any:
    """Options shared by every command that loads a Keras model (convert, rewrite, check, compare)."""
    for opt in reversed([
        click.option("--output-layer", metavar="NAME", help="Use this layer's output as the embedding "
                     "(default: found automatically; training heads are cut off)."),
        click.option("--keep-head", is_flag=True, help="Do not cut a trailing softmax/classifier."),
        click.option("--input-size", nargs=2, type=int, metavar="H W",
                     help="Fix the input size when the model leaves it open."),
        click.option("--custom-objects", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Python file defining custom layer classes the embedding needs."),
        click.option("--trust-lambda", is_flag=True, help="Allow Lambda layers (they run code stored in the file)."),
    ]):
        func = opt(func)
    return func


def load_options_from(kw: dict[str, Any]) -> Any:
    """The :func:`model_load_options` values popped from a command's keyword arguments."""
    from k210tool.model.load import LoadOptions

    size = kw.pop("input_size", None)
    return LoadOptions(
        output_layer=kw.pop("output_layer", None),
        keep_head=kw.pop("keep_head", False),
        input_size=tuple(size) if size else None,
        custom_objects=kw.pop("custom_objects", None),
        trust_lambda=kw.pop("trust_lambda", False),
    )


def memory_text(m: Any, where: str) -> str:
    """The fit as the firmware's loader counts it: the file, working memory and overhead against the limit."""
    return (f"{human_bytes(m.total)} = kmodel file {human_bytes(m.model)} + working memory {human_bytes(m.working)} + "
            f"firmware overhead {human_bytes(m.overhead)}, of the {human_bytes(m.board_limit)} {where} leaves for "
            f"models: {'fits' if m.fits else 'DOES NOT FIT'}" + (f"; KPU RAM {human_bytes(m.kpu_ram)} of its own 2.00 MB"
                                                                 if m.kpu_ram else ""))


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
