"""The GPU-style path of the training loop - several devices, mixed precision - on two logical CPUs.

TensorFlow fixes its device list when it starts, so this runs in a child process that splits the CPU
into two logical devices and trains with a MirroredStrategy over both and mixed_float16 (loss scaling):
the batch is divided between the replicas, per-replica losses are reduced, the variables stay mirrored,
and the exported model is float32."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .support import Synthetic

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import json, sys
    from k210tool.tfutil import import_tf
    tf = import_tf()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from k210tool.train import devices
    devices.make_strategy = lambda d: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    from k210tool.train.config import load_config
    from k210tool.train.loop import train
    s = train(load_config(None, sys.argv[1:]))
    print(json.dumps({"steps": s.steps, "losses": [h.loss for h in s.history], "model": str(s.model),
                      "replicas": s.replicas, "precision": s.devices.precision}))
""")


def test_mirrored_mixed_precision_over_two_devices_trains(synthetic: Synthetic, tmp_path: Path) -> None:
    args = [f'data.train="{synthetic.faces}"', f'run.out="{tmp_path / "run"}"', "model.input_size=48",
            "model.width=16", "model.embedding_size=32", "model.bottlenecks=[[2, 16, 1, 2]]",
            "data.batch_size=16", 'run.strategy="mirrored"', "run.steps_per_epoch=2", "run.epochs=2",
            'head.kind="softmax"', "optim.lr=0.05", 'run.precision="mixed_float16"']
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["replicas"], result["precision"], result["steps"]) == (2, "mixed_float16", 4)
    assert result["losses"][1] < result["losses"][0]
    import tensorflow as tf

    from k210tool.tfutil import import_tf_keras

    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert any("loss_scale" in name for name in reader.get_variable_to_shape_map())
    model = import_tf_keras().models.load_model(result["model"], compile=False)
    assert model.output_shape == (None, 32)
    assert all(layer.compute_dtype == "float32" for layer in model.layers)
