"""The ``k210tool`` command line: a click group whose subcommands are imported only when used.

Each subcommand lives in ``k210tool/cli/<module>.py`` and is a thin layer: parse options, call a library
function that returns a dataclass, render it as a table or ``--json``. Errors the user can act on are
:class:`k210tool.errors.K210ToolError`; :func:`main` prints them as one line and exits non-zero.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Any

import click

from k210tool import __version__

# name -> (module, attribute, one-line help). Order is the order of `k210tool --help`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "convert": ("k210tool.cli.convert", "convert", "Keras/TFLite/ONNX model -> K210 .kmodel (rewrite, calibrate, compile)."),
    "rewrite": ("k210tool.cli.rewrite", "rewrite", "Rewrite a Keras model into KPU-friendly ops and report every change."),
    "check": ("k210tool.cli.check", "check", "Predict KPU/CPU placement, memory and flash fit before compiling."),
    "compare": ("k210tool.cli.compare", "compare", "Float model vs simulated kmodel: fidelity and face-verification accuracy."),
    "inspect": ("k210tool.cli.inspect", "inspect", "Describe a .kmodel (v3/v4/v5): layers, memory, which firmware loads it."),
    "script": ("k210tool.cli.script", "script", "Generate a MaixPy/CanMV script from a template for a board."),
    "boards": ("k210tool.cli.boards", "boards", "List the boards and firmware k210tool knows."),
    "ports": ("k210tool.cli.device", "ports", "List serial ports and guess which are Maix boards."),
    "flash": ("k210tool.cli.device", "flash", "Flash firmware, kmodels or a kfpkg over UART ISP (kflash)."),
    "deploy": ("k210tool.cli.device", "deploy", "Copy files to the board's filesystem over the MicroPython raw REPL."),
    "run": ("k210tool.cli.device", "run", "Run a script on the board and stream its output."),
    "repl": ("k210tool.cli.device", "repl", "Open an interactive MicroPython terminal on the board."),
    "emulate": ("k210tool.cli.emulate", "emulate", "Serve a virtual Maix board on a pseudo-terminal (ISP + raw REPL)."),
    "test-board": ("k210tool.cli.testboard", "test_board", "Run the kmodel on a board and check its outputs against the simulator."),
    "train": ("k210tool.cli.train", "train", "Train MobileFaceNet (softmax then ArcFace) from a TOML config."),
    "distill": ("k210tool.cli.train", "distill", "Fine-tune a rewritten student to reproduce the original teacher."),
    "data": ("k210tool.cli.train", "data", "Prepare face datasets (balance, augment, align)."),
    "demo": ("k210tool.cli.demo", "demo", "Write the bundled demo MobileFaceNet (.h5) and synthetic face images."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs (fast --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, help_text = COMMANDS[cmd_name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            return _not_available(cmd_name, help_text)
        cmd = getattr(mod, attr, None)
        return cmd if isinstance(cmd, click.Command) else _not_available(cmd_name, help_text)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_m, _a, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _not_available(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text + "\n\n(Not available in this build.)",
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: Any) -> None:
        from k210tool.errors import K210ToolError

        raise K210ToolError(f"the {name} command is not available in this version of k210tool")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="k210tool")
def cli() -> None:
    """Take a face-recognition model from Keras onto a Kendryte K210 board.

    \b
    Typical path:
      k210tool convert face.h5 --calib faces/ -o face.kmodel   # rewrite + quantize + compile
      k210tool compare face.h5 face.kmodel --data faces/       # float vs simulated kmodel accuracy
      k210tool script face_recognition --board maix_dock --model face.kmodel -o main.py
      k210tool flash --port /dev/ttyUSB0 --board maix_dock --kmodel face.kmodel
      k210tool deploy --port /dev/ttyUSB0 main.py

    Every command takes --json (machine-readable output on stdout) and --debug (tracebacks).
    Exit codes: 0 ok, 1 internal error, 2 bad input, refused or does not fit the board,
    4 a quality gate failed, 130 interrupted.
    Run `k210tool COMMAND --help` for details and examples.
    """


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KMP_WARNINGS", "0")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, map errors to one-line messages and exit codes."""
    from k210tool.cli.common import Invocation
    from k210tool.errors import K210ToolError

    _quiet_tensorflow()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("K210TOOL_DEBUG") == "1"
    run = Invocation()  # one per call (main() may run many times in one process)
    as_json = "--json" in args

    def fail(message: str, hint: str | None, code: int) -> None:
        _fail(message, hint, code, as_json and not run.emitted)  # one JSON document: the result's, if printed

    try:
        cli.main(args=args, prog_name="k210tool", standalone_mode=False, obj=run)
    except click.exceptions.Abort:
        fail("aborted", None, 130)
    except click.ClickException as exc:
        if debug:  # click's own three-line form: usage, the --help pointer, the error
            exc.show()
            sys.exit(exc.exit_code)
        fail(*_usage_error(exc), exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except K210ToolError as exc:
        if debug:
            raise
        fail(exc.message, exc.hint, exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        fail("interrupted", None, 130)
    except OSError as exc:
        if debug:
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the environment, not a bug: wherever the write was
            fail(f"the disk is full ({exc.filename or 'while writing'})", "free some space and run again", 2)
        fail(f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
             "run again with --debug for the traceback and report it", 1)
    except Exception as exc:  # a bug: say so in one line, traceback only with --debug
        if debug:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
             "run again with --debug for the traceback and report it", 1)
    sys.exit(0)


def _usage_error(exc: click.ClickException) -> tuple[str, str | None]:
    """click's error (missing argument, bad option or choice) as our one line: its message and where help is."""
    import re

    message = exc.format_message().strip().rstrip(".")
    message = re.sub(r"\.\s*\(?Did you mean (.*?)\?\)?$", r"; did you mean \1?", message)  # one sentence
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message, None
    return message, f"see `{ctx.command_path} --help`"


def _fail(message: str, hint: str | None, code: int, as_json: bool) -> None:
    import json

    line = f"k210tool: error: {message}" + (f" ({hint})" if hint else "")
    click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "hint": hint, "exit_code": code}))
    sys.exit(code)
