"""Learning-rate schedule and the softmax -> margin-head phase switch.

The learning rate is a pure function of the optimizer's step counter (warm-up, then cosine, step or
constant), so restoring the optimizer restores the schedule exactly. The head switch decides, at each
epoch end, whether softmax pre-training is over - at a fixed epoch, or when the epoch loss has stopped
improving (a plateau) - and its small state is saved in every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from k210tool.tfutil import import_tf, import_tf_keras
from k210tool.train.config import HeadConfig, OptimConfig

tf = import_tf()
keras = import_tf_keras()


@keras.saving.register_keras_serializable(package="k210tool")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over ``warmup_steps``, then ``kind``: cosine to ``min_lr``, step decay, or constant."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                 boundaries: tuple[int, ...] = (), factor: float = 0.1, min_lr: float = 0.0) -> None:
        super().__init__()
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.kind = kind
        self.boundaries = tuple(int(b) for b in boundaries)
        self.factor = float(factor)
        self.min_lr = float(min_lr)

    def __call__(self, step: Any) -> Any:
        step = tf.cast(step, tf.float32)
        base = tf.constant(self.base_lr, tf.float32)
        if self.kind == "cosine":
            span = float(max(1, self.total_steps - self.warmup_steps))
            t = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            lr = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + tf.cos(math.pi * t))
        elif self.kind == "step":
            passed = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries]) if self.boundaries else 0.0
            lr = base * tf.pow(self.factor, passed)
        else:
            lr = base
        if self.warmup_steps:
            lr = tf.where(step < self.warmup_steps, base * (step + 1.0) / self.warmup_steps, lr)
        return lr

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "boundaries": list(self.boundaries), "factor": self.factor,
                "min_lr": self.min_lr}


def make_schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> WarmupDecay:
    return WarmupDecay(cfg.lr, steps_per_epoch * epochs, round(cfg.warmup_epochs * steps_per_epoch),
                       cfg.schedule, tuple(e * steps_per_epoch for e in cfg.decay_epochs), cfg.decay_factor,
                       cfg.min_lr)


@dataclass
class PhaseState:
    """``phase`` 0 = softmax pre-training, 1 = the final head."""

    phase: int = 0
    best: float = math.inf
    wait: int = 0
    switched_epoch: int = -1

    def as_list(self) -> list[float]:
        return [float(self.phase), self.best if math.isfinite(self.best) else 1e30, float(self.wait),
                float(self.switched_epoch)]

    @staticmethod
    def from_list(values: Any) -> PhaseState:
        phase, best, wait, switched = (float(v) for v in values)
        return PhaseState(int(phase), math.inf if best >= 1e30 else best, int(wait), int(switched))


def initial_phase(cfg: HeadConfig) -> PhaseState:
    return PhaseState(phase=1, switched_epoch=0) if cfg.pretrain == "none" or cfg.kind == "softmax" else PhaseState()


def after_epoch(cfg: HeadConfig, state: PhaseState, epoch: int, loss: float) -> PhaseState:
    """The phase state after finishing 1-based ``epoch`` with mean loss ``loss``."""
    if state.phase == 1:
        return state
    improved = loss < state.best * (1.0 - cfg.min_delta) if math.isfinite(state.best) else True
    best = min(loss, state.best) if improved else state.best
    wait = 0 if improved else state.wait + 1
    if cfg.switch == "epoch":
        switch = epoch >= cfg.switch_epoch
    else:
        switch = (epoch >= cfg.min_pretrain_epochs and wait >= cfg.patience) or epoch >= cfg.switch_epoch
    return PhaseState(1 if switch else 0, best, wait, epoch if switch else -1)
