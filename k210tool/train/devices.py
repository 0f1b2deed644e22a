"""Where training runs: tf.distribute strategy and numeric precision, chosen from what is present.

``auto`` picks: several workers in ``TF_CONFIG`` -> MultiWorkerMirroredStrategy; several GPUs ->
MirroredStrategy; one GPU -> OneDeviceStrategy on it; otherwise the default (CPU) strategy. Precision
``auto`` is mixed_float16 on a GPU and float32 on the CPU (float16 arithmetic is emulated, and slow,
on CPUs). The choices are plain functions of the device count so they are tested without a GPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from k210tool.errors import InputError

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")


@dataclass(frozen=True)
class Devices:
    strategy: str  # default | one_device | mirrored | multi_worker
    precision: str  # float32 | mixed_float16 | mixed_bfloat16
    gpus: int
    workers: int
    notes: tuple[str, ...] = ()


def cluster_workers(tf_config: str | None) -> int:
    """Number of workers (chief included) described by a ``TF_CONFIG`` JSON string."""
    if not tf_config:
        return 1
    try:
        cluster = json.loads(tf_config).get("cluster", {})
    except (ValueError, AttributeError):
        raise InputError("TF_CONFIG is not valid JSON", "unset it, or see tf.distribute's TF_CONFIG format") from None
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def choose_devices(strategy: str, precision: str, gpus: int, tf_config: str | None = None) -> Devices:
    """Resolve ``auto`` choices and check explicit ones against the hardware."""
    if strategy not in STRATEGIES:
        raise InputError(f"run.strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
    workers = cluster_workers(tf_config)
    notes: list[str] = []
    if strategy == "auto":
        strategy = ("multi_worker" if workers > 1 else "mirrored" if gpus > 1
                    else "one_device" if gpus == 1 else "default")
    if strategy == "multi_worker" and workers < 2:
        raise InputError("run.strategy=multi_worker needs a TF_CONFIG describing at least 2 workers")
    if strategy == "mirrored" and gpus < 2:
        notes.append("mirrored strategy with fewer than 2 GPUs runs on a single device")
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    elif precision == "mixed_float16" and not gpus:
        notes.append("mixed_float16 on a CPU is much slower than float32")
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise InputError(f"run.precision={precision!r} is not auto, float32, mixed_float16 or mixed_bfloat16")
    return Devices(strategy, precision, gpus, workers, tuple(notes))


def detect(strategy: str = "auto", precision: str = "auto") -> Devices:
    from k210tool.tfutil import import_tf

    tf = import_tf()
    gpus = len(tf.config.list_physical_devices("GPU"))
    return choose_devices(strategy, precision, gpus, os.environ.get("TF_CONFIG"))


def make_strategy(devices: Devices) -> Any:
    """The tf.distribute strategy object for ``devices.strategy``."""
    from k210tool.tfutil import import_tf

    tf = import_tf()
    if devices.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if devices.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if devices.gpus else "/cpu:0")
    return tf.distribute.get_strategy()
