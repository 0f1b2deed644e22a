"""`k210tool demo`: write the demo model and synthetic faces."""

from __future__ import annotations

from typing import Any

import click

from k210tool.cli.common import CliState, common_options


@click.command()
@click.option("-o", "--out", "out_dir", default="build/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for mobilefacenet.h5 and faces/.")
@click.option("--seed", default=0, show_default=True, help="Seed of the weights.")
@click.option("--identities", default=24, show_default=True, help="Synthetic identities to write.")
@click.option("--per-identity", default=5, show_default=True, help="Images per identity.")
@click.option("--kpu-form", is_flag=True, help="Build the KPU-friendly form (ReLU, symmetric stride-2 padding) "
              "instead of the paper's network.")
@common_options
def demo(out_dir: str, seed: int, identities: int, per_identity: int, kpu_form: bool, state: CliState) -> None:
    """Write the bundled demo: the paper's MobileFaceNet (112x112, PReLU, TensorFlow "same" stride-2
    convs, 7x7 global depthwise conv, 128-d embedding) with seeded weights as a legacy tf.keras .h5,
    and synthetic face crops to calibrate and test with. Works offline.

    \b
    Example:
      k210tool demo -o build/demo
      k210tool convert build/demo/mobilefacenet.h5 --calib build/demo/faces
    """
    from k210tool.commands.demo import make_demo

    with state.reporter.stage("build demo model"):
        result = make_demo(out_dir, seed, identities, per_identity,
                           activation="relu" if kpu_form else "prelu",
                           stride2_padding="symmetric" if kpu_form else "same")

    def render(r: Any, console: Any) -> None:
        console.print(f"wrote {r.model} ({r.parameters:,} parameters)")
        console.print(f"wrote {r.images} synthetic face images of {r.identities} identities under {r.faces}")
        console.print("next:")
        for step in r.next_steps:
            console.print(f"  {step}")

    state.emit(result, render)
