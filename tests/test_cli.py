"""The command line as a whole: help that teaches, instant start-up, one error style."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import assert_one_line_error, run_cli

from k210tool.cli import COMMANDS


def test_top_level_help_lists_every_command(capsys) -> None:
    run = run_cli(capsys, "--help")
    assert run.code == 0
    for name in COMMANDS:
        assert name in run.out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(capsys, name: str) -> None:
    run = run_cli(capsys, name, "--help")
    assert run.code == 0, run.err
    assert "not available" not in run.out, f"{name} is not implemented"
    assert "--json" in run.out or name in ("repl", "data"), name
    assert "example" in run.out.lower() or name in ("data",), f"{name} --help has no example"


def test_help_does_not_import_tensorflow() -> None:
    code = ("import sys; from k210tool.cli import main\n"
            "try:\n    main(['convert', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules, 'nncase' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("args, needles", [
    (["convert", "x.h5", "--no-such-option"], ["no such option '--no-such-option'", "k210tool convert --help"]),
    (["convert"], ["missing argument 'MODEL'", "see `k210tool convert --help`"]),
    (["test-board", "-p", "x", "--upload", "bad", "x"], ["invalid value for '--upload'",
                                                         "k210tool test-board --help"]),
    (["no-such-command"], ["no such command", "see `k210tool --help`"]),
])
def test_usage_errors_are_one_line_with_the_help_to_read(capsys, args: list[str], needles: list[str]) -> None:
    """Issue 17: click printed three lines (usage, 'Try ... --help', 'Error: ...'); ours is one, exit code 2."""
    run = run_cli(capsys, *args)
    assert_one_line_error(run, *needles)
    assert len(run.err.strip().splitlines()) == 1 and "Usage:" not in run.err


def test_usage_errors_keep_clicks_form_under_debug(capsys) -> None:
    run = run_cli(capsys, "convert", "--debug")
    assert run.code == 2 and "Usage: k210tool convert" in run.err and "Missing argument 'MODEL'" in run.err


def test_json_errors_are_machine_readable(capsys) -> None:
    import json

    run = run_cli(capsys, "convert", "missing.h5", "--calib", "random", "--json")
    assert_one_line_error(run, "does not exist")
    assert json.loads(run.out)["exit_code"] == 2


def test_boards_lists_every_board_as_json(capsys) -> None:
    import json

    run = run_cli(capsys, "boards", "--json")
    ids = {b["id"] for b in json.loads(run.out)["boards"]}
    assert {"maix_dock", "maix_bit", "maix_go", "maixduino", "maix_amigo", "maix_cube", "kd233"} <= ids


@pytest.mark.parametrize("args, needles", [
    (["--board", "maix_dok"], ["unknown board 'maix_dok'", "did you mean 'maix_dock'"]),
    (["--board", "maix-goo"], ["did you mean 'maix_go'"]),
    (["--firmware", "canmv5"], ["unknown firmware 'canmv5'", "did you mean 'canmv' or 'canmv_v5'?"]),
])
def test_unknown_board_or_firmware_suggests_the_close_name(capsys, tmp_path, args: list[str],
                                                          needles: list[str]) -> None:
    run = run_cli(capsys, "script", "face_recognition", *args, "-o", tmp_path / "main.py")
    assert_one_line_error(run, *needles)
    assert not (tmp_path / "main.py").exists()


def test_every_option_a_message_names_exists() -> None:
    """Issue 17: a hint named `--keep-v5`, which no command has. Every `--option` in a string of the package
    is an option of some command (or of the module's own argparse entry point)."""
    import ast
    import re
    from pathlib import Path

    import click

    import k210tool
    from k210tool.cli import cli

    ctx, known = click.Context(cli), set()

    def collect(cmd: click.Command) -> None:
        known.update(o for p in cmd.params for o in (*p.opts, *p.secondary_opts))
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                collect(cmd.get_command(ctx, name))  # type: ignore[arg-type]

    collect(cli)
    unknown = []
    for path in Path(k210tool.__file__).parent.rglob("*.py"):
        text = path.read_text()
        own = set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]+)\"", text))  # a module's own argparse
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                unknown += [(path.name, opt) for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", node.value)
                            if opt not in known | own | {"--help"}]
    assert not unknown, unknown
