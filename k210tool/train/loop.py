"""The training run: data -> backbone + margin head -> checkpointed custom loop -> exported .h5.

:func:`train` is what ``k210tool train`` calls. A run directory holds ``config.toml`` (the resolved
config), ``checkpoints/`` (weights, optimizer slots and step, the head phase and the partial epoch
loss - everything needed to continue exactly), ``logs/`` (TensorBoard), ``model.h5`` (the exported
inference backbone), ``training_model.h5`` (image + label -> logits, with the head) and ``summary.json``.

Exact resume: the data order is a function of ``(seed, epoch)`` (see :mod:`.data.pipeline`), the learning
rate a function of the step, and the checkpoint holds all the rest, so stopping after step ``s`` and
resuming gives the same weights as never stopping.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k210tool.errors import InputError
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter
from k210tool.train.config import TrainConfig, to_toml
from k210tool.train.devices import Devices
from k210tool.train.validation import SetResult


@dataclass
class EpochRecord:
    epoch: int
    steps: int
    loss: float
    lr: float
    head: str
    seconds: float
    images_per_second: float
    validation: list[SetResult] = field(default_factory=list)


@dataclass
class TrainSummary:
    out: Path
    model: Path | None
    training_model: Path | None
    checkpoint: str | None
    backbone: str
    input_size: int
    embedding_size: int
    classes: int
    images: int
    steps: int
    steps_per_epoch: int
    epochs_completed: int
    resumed_from_step: int
    head: str
    switched_at_epoch: int
    final_loss: float
    stopped_early: bool
    devices: Devices
    replicas: int
    history: list[EpochRecord] = field(default_factory=list)
    best_accuracy: dict[str, float] = field(default_factory=dict)
    decode_failures: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def train(config: TrainConfig, reporter: Reporter | None = None) -> TrainSummary:
    """Run (or continue) the training described by ``config``; returns what happened."""
    return Trainer(config, reporter or Reporter()).run()


class Trainer:
    """Holds the pieces of one run; :meth:`run` is the whole of it."""

    def __init__(self, config: TrainConfig, reporter: Reporter) -> None:
        self.cfg = config
        self.reporter = reporter
        self.out = Path(config.run.out)

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        from k210tool.train import devices
        from k210tool.train.data.index import open_dataset
        from k210tool.train.data.pipeline import DecodeStats, steps_per_epoch

        cfg = self.cfg
        self.devices = devices.detect(cfg.run.strategy, cfg.run.precision)
        for note in self.devices.notes:
            self.reporter.warn(note)
        self.strategy = devices.make_strategy(self.devices)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        if cfg.data.batch_size % self.replicas:
            raise InputError(f"data.batch_size={cfg.data.batch_size} does not split over {self.replicas} devices",
                             f"use a multiple of {self.replicas}")
        with self.reporter.stage("index training data"):
            self.index = open_dataset(cfg.data.train)
        if self.index.num_classes < 2:
            raise InputError(f"{cfg.data.train} has {self.index.num_classes} identity; training needs at least 2")
        self.pre = Preprocess(height=cfg.model.input_size, width=cfg.model.input_size, mean=cfg.data.mean,
                              std=cfg.data.std, color=cfg.data.color)
        self.global_batch = cfg.data.batch_size * cfg.optim.accumulate
        full = steps_per_epoch(len(self.index), self.global_batch)
        self.spe = min(full, cfg.run.steps_per_epoch) if cfg.run.steps_per_epoch > 0 else full
        self.total_steps = self.spe * cfg.run.epochs
        self.stats = DecodeStats()
        self._load_validation()
        self._build()

    def _load_validation(self) -> None:
        from k210tool.train.validation import load_verification_set

        self.val_sets = []
        if self.cfg.data.val:
            with self.reporter.stage("load verification sets"):
                self.val_sets = [load_verification_set(p, self.pre) for p in self.cfg.data.val]

    def _build(self) -> None:
        from k210tool.tfutil import import_tf, import_tf_keras
        from k210tool.train.heads import MarginHead, build_training_model
        from k210tool.train.models.backbones import build_backbone
        from k210tool.train.schedule import PhaseState, initial_phase, make_schedule

        tf, k = import_tf(), import_tf_keras()
        cfg = self.cfg
        k.utils.set_random_seed(cfg.run.seed)
        self.phase = initial_phase(cfg.head)
        with self.strategy.scope():
            self.backbone = build_backbone(cfg.model, self.devices.precision)
            kind = cfg.head.kind if self.phase.phase == 1 else "softmax"
            m1, m2, m3 = cfg.head.margins() if kind != "softmax" else (None, None, None)
            self.head = MarginHead(self.index.num_classes, kind, cfg.head.scale, m1, m2, m3, name="margin_head")
            self.model = build_training_model(self.backbone, self.head)
            self.schedule = make_schedule(cfg.optim, self.spe, cfg.run.epochs)
            self.optimizer = self._optimizer(k)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            # [phase, best, wait, switched_epoch, epoch loss sum, epoch loss steps]
            self.state = tf.Variable(PhaseState().as_list() + [0.0, 0.0], dtype=tf.float64, trainable=False)
        self.state.assign(self.phase.as_list() + [0.0, 0.0])
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              state=self.state)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.out / "checkpoints"),
                                                  max_to_keep=cfg.run.keep_checkpoints)

    def _optimizer(self, k: Any) -> Any:
        o = self.cfg.optim
        common: dict[str, Any] = {"learning_rate": self.schedule}
        if o.weight_decay:
            common["weight_decay"] = o.weight_decay
        if o.clip_norm:
            common["global_clipnorm"] = o.clip_norm
        if o.optimizer == "sgd":
            opt = k.optimizers.SGD(momentum=o.momentum, **common)
        elif o.optimizer == "adam":
            opt = k.optimizers.Adam(**common)
        else:
            opt = k.optimizers.AdamW(**common)
        if o.weight_decay:  # decay the convolution/dense kernels and class centres only
            opt.exclude_from_weight_decay(var_names=["gamma", "beta", "alpha", "bias", "margin_params"])
        if self.devices.precision == "mixed_float16":
            opt = k.mixed_precision.LossScaleOptimizer(opt)
        return opt

    def _restore(self) -> int:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        if not self.cfg.run.resume:
            raise InputError(f"{self.out} already holds checkpoints",
                             "set run.resume=true to continue it, or choose another run.out")
        from k210tool.tfutil import import_tf

        tf = import_tf()
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (ValueError, AssertionError) as exc:
            raise InputError(f"checkpoint {latest} does not match this config ({str(exc).splitlines()[0][:160]})",
                             "train with the config it was made with, or choose another run.out") from None
        except tf.errors.OpError as exc:
            raise InputError(f"cannot read checkpoint {latest}: {exc.message.splitlines()[0][:160]}") from None
        self._warn_config_changes()
        from k210tool.train.schedule import PhaseState

        self.phase = PhaseState.from_list(self.state.numpy()[:4])
        self.head.sync_from_weights()
        return int(self.step.numpy())

    def _warn_config_changes(self) -> None:
        """Resuming with other settings is allowed (e.g. more epochs) but should not go unnoticed."""
        from k210tool.train.config import load_config

        saved_path = self.out / "config.toml"
        if not saved_path.exists():
            return
        saved, now = load_config(saved_path).to_dict(), self.cfg.to_dict()
        changes = [f"{sec}.{key} {saved[sec][key]!r} -> {value!r}" for sec, part in now.items()
                   for key, value in part.items() if saved[sec].get(key) != value]
        if changes:
            self.reporter.warn("resuming with a changed config: " + ", ".join(changes))

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        from k210tool.fileio import write_text

        started = time.perf_counter()
        self._setup()
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = self._restore()
        if resumed:
            self.reporter.info(f"resuming {self.out} at step {resumed} (epoch {resumed // self.spe + 1})")
        write_text(self.out / "config.toml", to_toml(self.cfg))
        from k210tool.train.tblog import ScalarLog

        self.writer = ScalarLog(self.out / "logs")
        self.step_fn = make_train_step(self.model, self.optimizer, self.strategy,
                                       self.cfg.data.batch_size // self.replicas, self.cfg.optim.accumulate,
                                       self.global_batch)
        history: list[EpochRecord] = []
        stopped = False
        try:
            while int(self.step.numpy()) < self.total_steps and not stopped:
                stopped = self._run_epoch(history)
        except KeyboardInterrupt:
            # only a consistent state is worth keeping: the update of the last counted step has landed
            if int(self.optimizer.iterations.numpy()) == int(self.step.numpy()):
                self._save()
            raise
        finally:
            self.writer.flush()
            self.index.close()
        return self._finish(history, resumed, stopped, time.perf_counter() - started)

    def _run_epoch(self, history: list[EpochRecord]) -> bool:
        """Train from the current step to the end of its epoch; True when max_steps stopped it early."""
        from k210tool.train.data.pipeline import make_dataset

        step0 = int(self.step.numpy())
        epoch, pos = divmod(step0, self.spe)
        # no limit: the loop takes exactly the epoch's steps, and images that fail to decode are replaced
        # by the next ones in the permutation instead of starving the last batch
        ds = make_dataset(self.index, self.pre, self.global_batch, seed=self.cfg.run.seed, epoch=epoch,
                          start=pos * self.global_batch, flip=self.cfg.data.flip,
                          parallel_calls=self.cfg.data.parallel_calls, stats=self.stats)
        iterator = iter(self.strategy.experimental_distribute_dataset(ds))
        t0 = time.perf_counter()
        max_steps = self.cfg.run.max_steps
        with self.reporter.progress(f"epoch {epoch + 1}/{self.cfg.run.epochs}", total=self.spe) as bar:
            bar.advance(pos)
            for _ in range(pos, self.spe):
                if max_steps and int(self.step.numpy()) >= max_steps:
                    self._save()
                    return True
                self._one_step(iterator)
                bar.advance()
        seconds = time.perf_counter() - t0
        history.append(self._end_epoch(epoch + 1, self.spe - pos, seconds))
        return bool(max_steps and int(self.step.numpy()) >= max_steps)

    def _one_step(self, iterator: Any) -> None:
        from k210tool.tfutil import import_tf

        tf = import_tf()
        try:
            loss = float(self.step_fn(iterator))
        except (StopIteration, tf.errors.OutOfRangeError):
            raise InputError("the training data ran out mid-epoch (images that fail to decode are skipped)",
                             f"{self.stats.failed} failed, e.g. {self.stats.examples[:1]}") from None
        if not math.isfinite(loss):
            raise InputError(f"the loss became {loss} at step {int(self.step.numpy()) + 1}",
                             "lower optim.lr, or add warm-up (optim.warmup_epochs)")
        self.step.assign_add(1)
        s = int(self.step.numpy())
        self.state.assign(tf.tensor_scatter_nd_add(self.state, [[4], [5]], tf.constant([loss, 1.0], tf.float64)))
        self.writer.log("train/loss", loss, s)
        self.writer.log("train/lr", float(self.schedule(s - 1)), s)
        if self.cfg.run.checkpoint_steps and s % self.cfg.run.checkpoint_steps == 0:
            self._save()

    def _end_epoch(self, epoch: int, steps: int, seconds: float) -> EpochRecord:
        from k210tool.train.schedule import after_epoch
        from k210tool.train.validation import evaluate

        values = self.state.numpy()
        loss = float(values[4] / max(values[5], 1.0))
        head_used = self.head.kind
        new_phase = after_epoch(self.cfg.head, self.phase, epoch, loss)
        if new_phase.phase != self.phase.phase:
            hc = self.cfg.head
            m1, m2, m3 = hc.margins()
            self.head.set_kind(hc.kind, hc.scale, m1, m2, m3)
            self.reporter.info(f"epoch {epoch}: softmax pre-training done (loss {loss:.3f}), switching to {hc.kind}")
        self.phase = new_phase
        self.state.assign(self.phase.as_list() + [0.0, 0.0])
        results = []
        if self.val_sets and (epoch % self.cfg.run.val_every == 0 or epoch == self.cfg.run.epochs):
            results = evaluate(self.backbone, self.val_sets, self.pre, flip=self.cfg.run.val_flip)
        s = int(self.step.numpy())
        lr = float(self.schedule(s - 1))
        self.writer.log("epoch/loss", loss, s)
        self.writer.log("epoch/head_phase", float(self.phase.phase), s)
        for r in results:
            self.writer.log(f"val/{r.name}/accuracy", r.accuracy, s)
            self.writer.log(f"val/{r.name}/auc", r.auc, s)
        rate = steps * self.global_batch / seconds if seconds > 0 else 0.0
        val = ", ".join(f"{r.name} {r.accuracy:.4f}" for r in results)
        self.reporter.info(f"epoch {epoch}/{self.cfg.run.epochs}: loss {loss:.4f} ({head_used}), lr {lr:.4g}, "
                           f"{rate:.0f} img/s" + (f", {val}" if val else ""))
        self._save()
        return EpochRecord(epoch, steps, loss, lr, head_used, seconds, rate, results)

    def _save(self) -> str:
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    def _finish(self, history: list[EpochRecord], resumed: int, stopped: bool, seconds: float) -> TrainSummary:
        from k210tool.fileio import write_json
        from k210tool.train.export import export_inference, export_training_model

        cfg = self.cfg
        model_path = Path(cfg.run.export) if cfg.run.export else self.out / "model.h5"
        with self.reporter.stage("export"):
            exported = export_inference(self.backbone, cfg.model, model_path)
            training = export_training_model(self.model, self.out / "training_model.h5")
            write_json(self.out / "model.json", {"preprocess": self.pre.to_dict(), "classes": self.index.num_classes,
                                                 "embedding_size": cfg.model.embedding_size,
                                                 "backbone": cfg.model.backbone})
        if self.stats.failed:
            self.reporter.warn(f"skipped {self.stats.failed} training image(s) that failed to decode, "
                               f"e.g. {self.stats.examples[0]}")
        best: dict[str, float] = {}
        for rec in history:
            for r in rec.validation:
                best[r.name] = max(best.get(r.name, 0.0), r.accuracy)
        steps = int(self.step.numpy())
        summary = TrainSummary(
            out=self.out, model=exported, training_model=training, checkpoint=self.manager.latest_checkpoint,
            backbone=cfg.model.backbone, input_size=cfg.model.input_size, embedding_size=cfg.model.embedding_size,
            classes=self.index.num_classes, images=len(self.index), steps=steps, steps_per_epoch=self.spe,
            epochs_completed=steps // self.spe, resumed_from_step=resumed, head=self.head.kind,
            switched_at_epoch=self.phase.switched_epoch, final_loss=history[-1].loss if history else float("nan"),
            stopped_early=stopped, devices=self.devices, replicas=self.replicas, history=history, best_accuracy=best,
            decode_failures=self.stats.failed, seconds=seconds, warnings=list(self.reporter.warnings))
        write_json(self.out / "summary.json", summary)
        return summary



def make_train_step(model: Any, optimizer: Any, strategy: Any, micro_batch: int, accumulate: int,
                    global_batch: int) -> Any:
    """``step(iterator) -> mean loss``: one optimizer update from ``accumulate`` micro-batches per device.

    Each device receives ``micro_batch * accumulate`` samples per step and runs them through the model
    ``micro_batch`` at a time, summing gradients, so memory holds one micro-batch's activations while
    the update sees the whole effective batch. Losses are averaged over ``global_batch`` (all devices,
    all micro-batches), as tf.distribute expects. Under a LossScaleOptimizer (mixed_float16) the loss is
    scaled before and the gradients unscaled after differentiation.
    """
    from k210tool.tfutil import import_tf

    tf = import_tf()
    mixed = hasattr(optimizer, "get_scaled_loss")

    def replica_step(images: Any, labels: Any) -> Any:
        variables = model.trainable_variables
        grads = [tf.zeros_like(v) for v in variables]
        total = tf.constant(0.0)
        for k in range(accumulate):  # unrolled: micro-batches one after another, one update
            x, y = images[k * micro_batch:(k + 1) * micro_batch], labels[k * micro_batch:(k + 1) * micro_batch]
            with tf.GradientTape() as tape:
                logits = tf.cast(model([x, y], training=True), tf.float32)
                per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
                loss = tf.nn.compute_average_loss(per_sample, global_batch_size=global_batch)
                scaled = optimizer.get_scaled_loss(loss) if mixed else loss
            g = tape.gradient(scaled, variables)
            if mixed:
                g = optimizer.get_unscaled_gradients(g)
            grads = [a + b for a, b in zip(grads, g, strict=True)]
            total += loss
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return total

    @tf.function
    def step(iterator: Any) -> Any:
        images, labels = next(iterator)
        per_replica = strategy.run(replica_step, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return step
