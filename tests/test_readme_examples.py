"""Issue 17: every example in the README and in ``--help`` runs as written on the demo.

The README's ``sh`` blocks and every command's ``--help`` examples are read from the files themselves (a new
example is tested without touching this file). They run as a user runs them: ``python -m k210tool`` in a
folder holding what the examples name (``face.h5`` is the demo MobileFaceNet, ``faces/`` its faces), with
``/dev/ttyUSB0`` (and the emulator's ``/dev/pts/7``) replaced by an emulated board's port. The examples that
need data the demo does not have (a detector kmodel, a firmware image, LFW) or run for long (training,
distillation, the emulator itself) are parsed against the command's options instead of run.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest

from k210tool.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
PORTS = ("/dev/ttyUSB0", "/dev/pts/7")
# what the demo folder cannot run, and why: these are parsed against the command's options instead
NOT_RUN = {
    "repl": "interactive terminal",
    "emulate": "a board that runs until stopped",
    "train": "trains for hours",
    "distill": "trains",
    "data": "writes a large dataset",
    "det.kmodel": "needs a face detector kmodel",
    "maixpy.bin": "needs a firmware image",
    "lfw": "needs LFW",
    "lfw.bin": "needs LFW",
    "build/demo/mobilefacenet.h5": "the same model as face.h5",
    "runs/a/model.h5": "a trained model",
    "--upload skip": "needs the kmodel flashed at the address of another example",
    "face.kmodel:/sd/face.kmodel": "copies a 2.7 MB kmodel over the raw REPL: minutes (flash takes seconds)",
}


EXIT_CODES: dict[str, int] = {}  # an example whose comment says "exit N" must exit with N


def _examples(text: str, record: bool = True) -> list[str]:
    """``k210tool ...`` command lines of shell examples (continuation lines joined, comments dropped)."""
    lines, out = text.replace("\\\n", " ").splitlines(), []
    for line in lines:
        line = line.strip().removeprefix("$ ")
        if line.startswith("k210tool "):
            command = " ".join(shlex.split(line, comments=True)[1:]) if "#" in line else line[len("k210tool "):]
            code = re.search(r"#.*\bexit (\d+)", line)
            if code and record:  # the examples that run (docs' are parsed only)
                EXIT_CODES[command] = int(code.group(1))
            out.append(command)
    return out


def readme_examples() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return list(dict.fromkeys(ex for b in blocks for ex in _examples(b)))


def docs_examples() -> list[str]:
    """docs/*.md: the ``k210tool COMMAND`` lines of ``sh`` and plain blocks, and the ``$ k210tool`` lines of
    ``text`` transcripts (their other lines are output, as are the apps' ``k210tool ready ...`` log lines)."""
    out: list[str] = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for kind, block in re.findall(r"```(sh|text|)\n(.*?)```", page.read_text(), re.S):
            lines = block.replace("\\\n", " ").splitlines()
            if kind == "text":
                lines = [ln for ln in lines if ln.lstrip().startswith("$ k210tool")]
            out += [ex for ex in _examples("\n".join(lines), record=False) if ex.split()[0] in COMMANDS]
    return list(dict.fromkeys(out))


def help_examples() -> list[str]:
    out: list[str] = []
    root = click.Context(cli, info_name="k210tool")
    for name in sorted(COMMANDS):
        cmd = cli.get_command(root, name)
        assert cmd is not None, name
        section = cmd.get_help(click.Context(cmd, info_name=name, parent=root)).split("Options:")[0]
        out += [ex for ex in _examples(section) if not ex.startswith(("backend", "-"))]
    return list(dict.fromkeys(out))


def _not_run(example: str) -> str | None:
    """Why ``example`` is parsed rather than run, or None (a key matches a word, a folder or a phrase)."""
    words = shlex.split(example)
    for key, why in NOT_RUN.items():
        if key in words or any(w.startswith(key + "/") for w in words) or (" " in key and key in example):
            return why
    return None


def _parses(example: str) -> None:
    """The command exists, every option is one of its options and its required arguments are given."""
    args = shlex.split(example)
    ctx = click.Context(cli)
    cmd = cli.get_command(ctx, args[0])
    assert cmd is not None, f"no command {args[0]!r} in: k210tool {example}"
    rest = args[1:]
    if isinstance(cmd, click.Group):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no subcommand {rest[0]!r} in: k210tool {example}"
        cmd, rest = sub, rest[1:]
    sub_ctx = click.Context(cmd, info_name=args[0])
    parser = cmd.make_parser(sub_ctx)
    opts, positional, _order = parser.parse_args(rest)  # click.NoSuchOption for an option the command lacks
    required = [p for p in cmd.params if isinstance(p, click.Argument) and p.required]
    given = {name for name, value in opts.items() if value not in (None, ()) and not repr(value).endswith("UNSET")}
    assert {p.name for p in required} <= given, f"missing arguments in: k210tool {example}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A folder with what the examples name, and a started emulated maix_dock (CanMV release)."""
    from k210tool.commands.demo import make_demo
    from k210tool.emulator.maixpy import Hardware, maix_registry
    from k210tool.emulator.server import Emulator
    from k210tool.model.load import load_model
    from k210tool.preprocess import load_image
    from k210tool.tfutil import import_tf, import_tf_keras

    here = tmp_path_factory.mktemp("readme")
    demo = make_demo(here / "demo", identities=8, per_identity=4)
    shutil.copy(demo.model, here / "face.h5")
    shutil.copytree(demo.faces, here / "faces")
    images = sorted((here / "faces").rglob("*.png")) + sorted((here / "faces").rglob("*.jpg"))
    np.save(here / "calib.npy", np.stack([load_image(p) for p in images]))
    model = load_model(here / "face.h5").model
    tf, k = import_tf(), import_tf_keras()
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 112, 112, 3]))
    tflite = bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    (here / "face.tflite").write_bytes(tflite)
    (here / "model.tflite").write_bytes(tflite)
    head = k.layers.Dense(8, activation="softmax", name="classifier")(model.output)  # a training head to cut
    k.Model(model.input, head).save(here / "train_model.h5")
    (here / "probe.py").write_text("import sys\nprint('probe', sys.platform)\n")
    with Emulator("maix_dock", fs_root=here / "board", modules=maix_registry(Hardware())) as emu, \
            Emulator("maix_dock", "canmv_v5", fs_root=here / "board5", modules=maix_registry(Hardware())) as emu5:
        yield here, {"canmv": emu, "canmv_v5": emu5}


def _run(sandbox: tuple[Path, dict[str, Any]], example: str) -> subprocess.CompletedProcess[str]:
    """Run ``example`` in the sandbox; its port is the emulated board running the firmware it names."""
    here, boards = sandbox
    board = boards["canmv_v5" if "--firmware canmv_v5" in example else "canmv"]
    port, env = board.port, board.client_env()
    line = example
    for p in PORTS:
        line = line.replace(p, port)
    args = shlex.split(line)
    stdout_to = None
    if ">" in args:  # a shell redirection, as in `inspect face.kmodel --json --words > face.json`
        at = args.index(">")
        args, stdout_to = args[:at], here / args[at + 1]
    proc = subprocess.run([sys.executable, "-m", "k210tool", *args], cwd=here, env=env, capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == EXIT_CODES.get(example, 0), f"k210tool {example}\nexit {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    if stdout_to is not None:
        stdout_to.write_text(proc.stdout)
    return proc


def test_the_examples_are_found() -> None:
    """The readers see the examples (a change of format must not make the tests below vacuous)."""
    readme, helps = readme_examples(), help_examples()
    assert {"check face.h5", "convert face.h5 --calib faces/ -o face.kmodel"} <= set(readme)
    assert "rewrite --list-rules" in helps and len(helps) > 20
    assert len(docs_examples()) > 30 and not any(ex.startswith("ready ") for ex in docs_examples())
    assert all(_not_run(ex) for ex in ("repl -p /dev/ttyUSB0", "script enroll --detector det.kmodel"))
    assert _not_run("convert face.h5 --calib faces/ -o face.kmodel") is None
    assert EXIT_CODES.get("check face.h5 --no-rewrite") == 2  # its comment says so
    assert "run -p /dev/ttyUSB0 probe.py" not in EXIT_CODES  # docs/serial.md's "exit 1 if it raised" is not run


@pytest.mark.parametrize("example", list(dict.fromkeys(readme_examples() + help_examples() + docs_examples())))
def test_every_example_parses(example: str) -> None:
    """The README's, --help's and docs/'s examples name real commands and options (docs' are parsed only)."""
    _parses(example)


@pytest.mark.slow
def test_the_readme_examples_run_as_written_on_the_demo(sandbox: tuple[Path, dict[str, Any]]) -> None:
    here = sandbox[0]
    ran = []
    for example in readme_examples():
        if _not_run(example) is None:
            _run(sandbox, example)
            ran.append(example)
    assert (here / "face.kmodel").is_file() and (here / "main.py").is_file() and len(ran) >= 15, ran


@pytest.mark.slow
def test_the_help_examples_run_as_written_on_the_demo(sandbox: tuple[Path, dict[str, Any]]) -> None:
    here = sandbox[0]
    for made, example in (("face.kmodel", "convert face.h5 --calib faces/ -o face.kmodel"),
                          ("main.py", "script face_recognition --board maix_dock --model face.kmodel -o main.py")):
        if not (here / made).is_file():  # the README test makes it; alone, this test makes it itself
            _run(sandbox, example)
    ran = []
    for example in help_examples():
        if _not_run(example) is None and example not in readme_examples():
            _run(sandbox, example)
            ran.append(example)
    assert (here / "face.json").is_file() and len(ran) >= 10, ran
