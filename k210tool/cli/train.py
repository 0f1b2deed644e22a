"""`k210tool train`, `k210tool distill` and `k210tool data ...` (prepare, synthetic, pack)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from k210tool.cli.common import CliState, common_options


@click.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config (see docs/training.md; k210tool/train/example.toml).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set optim.lr=0.05 (repeatable).")
@click.option("--data", default=None, help="Training data (shortcut for --set data.train=...).")
@click.option("--val", multiple=True, help="Verification .bin set (repeatable; replaces data.val).")
@click.option("--out", "-o", default=None, help="Run directory (shortcut for run.out).")
@click.option("--epochs", type=int, default=None, help="Shortcut for run.epochs.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps in total (resumable).")
@click.option("--resume/--no-resume", default=None, help="Continue from the run directory's checkpoint.")
@click.option("--show-config", is_flag=True, help="Print the resolved config as TOML and exit.")
@common_options
def train(config_path: str | None, overrides: tuple[str, ...], data: str | None, val: tuple[str, ...],
          out: str | None, epochs: int | None, max_steps: int | None, resume: bool | None, show_config: bool,
          state: CliState) -> None:
    """Train a face-embedding backbone: softmax pre-training, then a margin head (ArcFace by default).

    Checkpoints go to OUT/checkpoints; running the same command again continues exactly where it
    stopped. At the end the inference model (image -> embedding, plain .h5) is written to OUT/model.h5,
    ready for `k210tool convert`.

    \b
    Example:
      k210tool data synthetic -o data/synth --identities 200 --per-identity 40
      k210tool train -c k210tool/train/example.toml --data data/synth/train --val data/synth/val.bin -o runs/a
      k210tool convert runs/a/model.h5 --calib data/synth/train
    """
    from k210tool.train.config import load_config, to_toml

    extra = list(overrides)
    extra += [f"data.train={_toml_str(data)}"] if data else []
    extra += ["data.val=[" + ", ".join(_toml_str(v) for v in val) + "]"] if val else []
    extra += [f"run.out={_toml_str(out)}"] if out else []
    extra += [f"run.epochs={epochs}"] if epochs is not None else []
    extra += [f"run.max_steps={max_steps}"] if max_steps is not None else []
    extra += [f"run.resume={'true' if resume else 'false'}"] if resume is not None else []
    cfg = load_config(config_path, extra)
    if show_config:
        click.echo(to_toml(cfg))
        return
    from k210tool.train.loop import train as run_training

    state.emit(run_training(cfg, state.reporter), _render_train)


def _toml_str(text: str) -> str:
    import json

    return json.dumps(text)


def _render_train(s: Any, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"training {s.backbone} {s.input_size}x{s.input_size}, {s.classes} identities, {s.images} images")
    for col in ("epoch", "head", "loss", "lr", "img/s", "validation"):
        t.add_column(col)
    for h in s.history:
        val = ", ".join(f"{r.name} {r.accuracy:.4f}" for r in h.validation) or "-"
        t.add_row(str(h.epoch), h.head, f"{h.loss:.4f}", f"{h.lr:.3g}", f"{h.images_per_second:.0f}", val)
    console.print(t)
    where = f"{s.devices.strategy} strategy, {s.devices.precision}, {s.devices.gpus} GPU(s)"
    console.print(f"{s.steps} steps ({s.steps_per_epoch}/epoch) in {s.seconds:.0f} s on {where}"
                  + (f"; resumed at step {s.resumed_from_step}" if s.resumed_from_step else "")
                  + ("; stopped at --max-steps (run again to continue)" if s.stopped_early else ""))
    if s.switched_at_epoch > 0:
        console.print(f"softmax pre-training ended after epoch {s.switched_at_epoch}; final head: {s.head}")
    for name, acc in s.best_accuracy.items():
        console.print(f"best {name} accuracy: {acc:.4f}")
    console.print(f"inference model: {s.model}")
    console.print(f"next: k210tool convert {s.model} --calib <face crops>")


@click.command()
@click.option("--teacher", required=True, type=click.Path(dir_okay=False), help="Original model (.h5/.keras).")
@click.option("--student", required=True, type=click.Path(dir_okay=False),
              help="Model to train (e.g. from `k210tool rewrite --prelu relu`).")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Folder of face crops (labels optional).")
@click.option("--out", "-o", default=None, help="Distilled student (default: STUDENT stem + .distilled.h5).")
@click.option("--val", multiple=True, type=click.Path(dir_okay=False), help="Verification .bin set (repeatable).")
@click.option("--epochs", default=5, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--max-images", default=10000, show_default=True, help="Crops to read at most (held in memory).")
@click.option("--held-out", default=0.1, show_default=True, help="Fraction of crops kept for measuring.")
@click.option("--mean", type=float, default=127.5, show_default=True, help="Input normalisation mean.")
@click.option("--std", type=float, default=128.0, show_default=True, help="Input normalisation std.")
@click.option("--seed", default=0, show_default=True)
@common_options
def distill(teacher: str, student: str, data: str, out: str | None, val: tuple[str, ...], epochs: int,
            batch_size: int, lr: float, max_images: int, held_out: float, mean: float, std: float, seed: int,
            state: CliState) -> None:
    """Fine-tune a student so its embeddings match the teacher's again (cosine loss).

    `convert` lowers a model exactly, so a student is only needed when you want an approximation - e.g.
    PReLU -> ReLU for a smaller, faster kmodel - or a smaller network altogether. Reports the mean student-teacher cosine on held-out crops, and verification accuracy (teacher,
    student before, student after) on --val sets and on pairs of the held-out crops when DATA holds
    identity sub-folders.

    \b
    Example:
      k210tool rewrite face.h5 -o face_relu.h5 --prelu relu --approximate symmetric-stride2
      k210tool distill --teacher face.h5 --student face_relu.h5 --data faces/ -o face_relu_distilled.h5
    """
    from k210tool.errors import InputError
    from k210tool.train.distill import DistillOptions
    from k210tool.train.distill import distill as run_distill

    if not 0 <= held_out < 1:
        raise InputError(f"--held-out {held_out} must be in [0, 1)")
    target = Path(out) if out else Path(student).with_name(Path(student).stem + ".distilled.h5")
    opts = DistillOptions(epochs=epochs, batch_size=batch_size, lr=lr, held_out=held_out, max_images=max_images,
                          seed=seed)
    result = run_distill(teacher, student, data, target, opts, val, (mean,), (std,), state.reporter)
    state.emit(result, _render_distill)


def _render_distill(r: Any, console: Any) -> None:
    console.print(f"distilled on {r.train_images} crops ({r.held_out_images} held out) in {r.seconds:.0f} s")
    console.print(f"student-teacher cosine on held-out crops: {r.cosine_before:.4f} -> {r.cosine_after:.4f}")
    for v in r.verification:
        console.print(f"{v.name} ({v.pairs} pairs): teacher {v.teacher:.4f}, student {v.student_before:.4f} -> "
                      f"{v.student_after:.4f}")
    console.print(f"wrote {r.out}")


@click.group()
def data() -> None:
    """Prepare face data sets: balance/augment/align (prepare), make synthetic ones, pack into shards."""


@data.command()
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--workers", "-j", default=0, show_default=True, help="Worker processes (0 = one per core).")
@click.option("--align", is_flag=True, help="Detect faces with MTCNN and align them to --size (5-point transform).")
@click.option("--size", default=112, show_default=True, help="Aligned crop size.")
@click.option("--seed", default=0, show_default=True, help="Seed for sampling and noise.")
@common_options
def prepare(src: str, dst: str, workers: int, align: bool, size: int, seed: int, state: CliState) -> None:
    """Balance identities SRC/<identity>/* into DST/<identity>/*.

    \b
    images per identity   written
    more than 350         a random 350
    201 - 350             all
    91 - 200              all + morphological opening (x2)
    31 - 90               all + opening + Gaussian noise + salt-and-pepper (x4)
    30 or fewer           none (identity dropped)

    With --align, images are first aligned (faces not found are counted and skipped) and the table
    applies to the aligned faces. Re-running skips identities already done; an interrupted identity is
    redone from scratch.
    """
    from k210tool.train.data.prepare import PrepareOptions, prepare_dataset, require_images_written

    opts = PrepareOptions(workers=workers, seed=seed, align=align, size=size)
    summary = prepare_dataset(src, dst, opts, state.reporter)
    require_images_written(summary)
    state.emit(summary, _render_prepare)


def _render_prepare(s: Any, console: Any) -> None:
    console.print(f"{s.identities} identities: {s.kept} kept, {s.dropped} dropped (30 images or fewer)"
                  + (f"; {s.already_done} were already done" if s.already_done else ""))
    console.print(f"{s.images_in} images in -> {s.images_out} images out in {s.dst}")
    console.print("by rule: " + ", ".join(f"{k} {v}" for k, v in sorted(s.actions.items())))
    if s.no_face or s.unreadable:
        console.print(f"skipped: {s.no_face} without a face, {s.unreadable} unreadable")


@data.command()
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--identities", default=100, show_default=True, help="Training identities.")
@click.option("--per-identity", default=30, show_default=True, help="Images per training identity.")
@click.option("--size", default=112, show_default=True)
@click.option("--val-identities", default=50, show_default=True, help="Held-out identities for val.bin.")
@click.option("--val-pairs", default=600, show_default=True, help="Pairs in val.bin.")
@common_options
def synthetic(out: str, identities: int, per_identity: int, size: int, val_identities: int, val_pairs: int,
              state: CliState) -> None:
    """Write synthetic identities: OUT/train/<identity>/*.png and a held-out OUT/val.bin."""
    from k210tool.train.data.synthetic import write_identity_folders, write_verification_bin

    root = Path(out)
    with state.reporter.stage("render training identities"):
        paths = write_identity_folders(root / "train", identities, per_identity, size=size)
    with state.reporter.stage("render verification pairs"):
        # seeds far above the training ones: the verification identities are never trained on
        val = write_verification_bin(root / "val.bin", 1_000_000, val_identities, val_pairs, size=size)
    result = {"train": str(root / "train"), "images": len(paths), "identities": identities, "val": str(val),
              "val_pairs": val_pairs}

    def render(r: Any, console: Any) -> None:
        console.print(f"wrote {r['images']} images of {r['identities']} identities under {r['train']}")
        console.print(f"wrote {r['val']} ({r['val_pairs']} pairs of held-out identities)")

    state.emit(result, render)


@data.command()
@click.argument("src")
@click.argument("out")
@click.option("--format", "fmt", type=click.Choice(["tfrecord", "recordio"]), default="tfrecord", show_default=True)
@click.option("--shards", default=1, show_default=True, help="TFRecord files to spread the samples over.")
@common_options
def pack(src: str, out: str, fmt: str, shards: int, state: CliState) -> None:
    """Pack training data (any format `train` reads) into TFRecord shards or an insightface .rec/.idx.

    OUT is a path prefix for TFRecords (OUT-00000-of-0000N.tfrecord) and the .rec path for RecordIO.
    """
    from k210tool.train.data.pack import pack_dataset

    result = pack_dataset(src, out, fmt, shards, state.reporter)

    def render(r: Any, console: Any) -> None:
        console.print(f"packed {r.images} images of {r.classes} identities into {len(r.files)} file(s):")
        for f in r.files:
            console.print(f"  {f}")

    state.emit(result, render)
