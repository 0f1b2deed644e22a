"""``k210tool distill``: fine-tune a rewritten (KPU-friendly) student to reproduce the original teacher.

The rewrite swaps PReLU for ReLU and TensorFlow SAME padding for symmetric padding; the weights stay,
but the embeddings drift. Distillation trains the student on unlabeled face crops with a cosine loss
``1 - cos(student(x), teacher(x))`` so it recovers the teacher's embeddings. Before and after, it
measures the mean student-teacher cosine on held-out crops and, when pairs are available (``.bin``
verification sets, or identity sub-folders in the data folder), the verification accuracy of both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError, ModelError
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter
from k210tool.train.export import save_model_atomic


@dataclass(frozen=True)
class DistillOptions:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    held_out: float = 0.1  # fraction of the crops kept aside to measure cosine / accuracy
    max_images: int = 10000  # crops read (a seeded random subset when the folder holds more)
    flip: bool = True  # random horizontal flips (the teacher sees the same flipped image)
    seed: int = 0


@dataclass
class Verification:
    name: str
    pairs: int
    teacher: float
    student_before: float
    student_after: float


@dataclass
class DistillResult:
    teacher: Path
    student: Path
    out: Path
    train_images: int
    held_out_images: int
    cosine_before: float  # mean cosine(student, teacher) on held-out crops
    cosine_after: float
    verification: list[Verification] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def load_embedding_model(path: Path | str) -> Any:
    """A Keras image -> embedding model from ``path`` (training heads cut by k210tool's model loader)."""
    from k210tool.model.load import load_model

    loaded = load_model(path)
    if loaded.model is None:
        raise ModelError(f"{path} is a {loaded.format} file; distillation needs a Keras model (.h5 or .keras)")
    return loaded.model


def distill(teacher_path: Path | str, student_path: Path | str, data: Path | str, out: Path | str,
            options: DistillOptions | None = None, val_bins: tuple[Path | str, ...] = (),
            mean: tuple[float, ...] = (127.5,), std: tuple[float, ...] = (128.0,),
            reporter: Reporter | None = None) -> DistillResult:
    """Fine-tune the student at ``student_path`` towards the teacher; write it to ``out``.

    Images are prepared for the teacher's input size and normalised with ``mean``/``std`` (what the
    teacher was trained with; insightface's ``(x - 127.5) / 128`` by default).
    """
    from k210tool.fileio import check_output_path

    opts = options or DistillOptions()
    rep = reporter or Reporter()
    started = time.perf_counter()
    out_p = check_output_path(out)
    with rep.stage("load models"):
        teacher, student = load_embedding_model(teacher_path), load_embedding_model(student_path)
    pre = Preprocess(height=int(teacher.input_shape[1]), width=int(teacher.input_shape[2]), mean=mean, std=std)
    _check_compatible(teacher, student, teacher_path, student_path)
    crops = _read_crops(Path(data), pre, opts, rep)
    train_x, held_x, held_labels = _split(crops, opts)
    sets = _pair_sets(val_bins, pre, held_x, held_labels, opts.seed)
    before = _measure(teacher, student, held_x, sets, pre)
    targets = _teacher_targets(teacher, train_x, pre, opts.flip)
    losses = _fit(student, train_x, targets, pre, opts, rep)
    after = _measure(teacher, student, held_x, sets, pre)
    with rep.stage("save student"):
        save_model_atomic(student, out_p)
    verification = [Verification(name, pairs, before.teacher[name], before.student[name], after.student[name])
                    for name, pairs in before.pairs.items()]
    return DistillResult(Path(teacher_path), Path(student_path), out_p, len(train_x), len(held_x),
                         before.cosine, after.cosine, verification, losses, time.perf_counter() - started)


def _check_compatible(teacher: Any, student: Any, tp: Path | str, sp: Path | str) -> None:
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]):
        raise InputError(f"teacher {tp} takes {tuple(teacher.input_shape[1:])} images but student {sp} takes "
                         f"{tuple(student.input_shape[1:])}", "distill a student rewritten from this teacher")
    if tuple(teacher.output_shape[1:]) != tuple(student.output_shape[1:]):
        raise InputError(f"teacher {tp} gives {tuple(teacher.output_shape[1:])} embeddings but student {sp} gives "
                         f"{tuple(student.output_shape[1:])}")


@dataclass
class _Crops:
    images: np.ndarray  # uint8 prepared
    labels: np.ndarray  # identity index per crop, -1 when the folder has no identity sub-folders


def _read_crops(data: Path, pre: Preprocess, opts: DistillOptions, rep: Reporter) -> _Crops:
    from k210tool.preprocess import load_folder

    loaded = load_folder(data, pre, limit=opts.max_images, seed=opts.seed, reporter=rep)
    rel = [p.relative_to(data).parts for p in loaded.paths]
    if all(len(parts) >= 2 for parts in rel):
        names = sorted({parts[0] for parts in rel})
        labels = np.array([names.index(parts[0]) for parts in rel], np.int64)
    else:
        labels = np.full(len(rel), -1, np.int64)
    if len(loaded.images) < 2 * opts.batch_size:
        raise InputError(f"{data} has {len(loaded.images)} usable crops; distillation needs at least "
                         f"{2 * opts.batch_size}", "add face crops or lower --batch-size")
    return _Crops(loaded.images, labels)


def _split(crops: _Crops, opts: DistillOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([opts.seed, 0xD157])
    order = rng.permutation(len(crops.images))
    n_held = max(1, int(round(opts.held_out * len(order)))) if opts.held_out > 0 else 0
    held, train = order[:n_held], order[n_held:]
    return crops.images[train], crops.images[held], crops.labels[held]


@dataclass
class _PairSet:
    name: str
    images: Any  # uint8 array or a VerificationImages (decoded in chunks)
    issame: np.ndarray


def _pair_sets(val_bins: tuple[Path | str, ...], pre: Preprocess, held_x: np.ndarray, held_labels: np.ndarray,
               seed: int) -> list[_PairSet]:
    from k210tool.train.validation import load_verification_set

    sets = [_PairSet(v.name, v, v.issame) for v in (load_verification_set(p, pre) for p in val_bins)]
    pairs = identity_pairs(held_labels, seed)
    if pairs is not None:
        a, b, same = pairs
        images = np.empty((2 * len(a),) + held_x.shape[1:], np.uint8)
        images[0::2], images[1::2] = held_x[a], held_x[b]
        sets.append(_PairSet("held-out", images, same))
    return sets


def identity_pairs(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Alternating genuine/impostor index pairs over labelled crops; None when fewer than 10 pairs fit."""
    if len(labels) == 0 or labels.min() < 0:
        return None
    rng = np.random.default_rng([seed, 0xFA1F])
    genuine = [(int(i), int(j)) for c in np.unique(labels) for i, j in _consecutive(np.flatnonzero(labels == c))]
    if len(np.unique(labels)) < 2 or len(genuine) < 5:
        return None
    a, b, same = [], [], []
    for i, j in genuine:
        k = int(rng.choice(np.flatnonzero(labels != labels[i])))
        a += [i, i]
        b += [j, k]
        same += [True, False]
    return np.array(a), np.array(b), np.array(same)


def _consecutive(idx: np.ndarray) -> list[tuple[int, int]]:
    return [(int(idx[n]), int(idx[n + 1])) for n in range(0, len(idx) - 1, 2)]


@dataclass
class _Measure:
    cosine: float
    teacher: dict[str, float]
    student: dict[str, float]
    pairs: dict[str, int]


def _measure(teacher: Any, student: Any, held_x: np.ndarray, sets: list[_PairSet], pre: Preprocess) -> _Measure:
    from k210tool.eval.verification import verify
    from k210tool.train.validation import embed, embed_set, mean_cosine

    cos = mean_cosine(embed(student, held_x, pre), embed(teacher, held_x, pre)) if len(held_x) else float("nan")
    t_acc, s_acc, pairs = {}, {}, {}
    for s in sets:
        for model, acc in ((teacher, t_acc), (student, s_acc)):
            e = embed_set(model, s.images, pre, flip=True)
            acc[s.name] = verify(e[0::2], e[1::2], s.issame).accuracy
        pairs[s.name] = len(s.issame)
    return _Measure(cos, t_acc, s_acc, pairs)


def _teacher_targets(teacher: Any, images: np.ndarray, pre: Preprocess, flip: bool) -> np.ndarray:
    """Teacher embeddings, (2, N, D) with the flipped images' second when ``flip``."""
    from k210tool.train.validation import embed

    plain = embed(teacher, images, pre)
    mirrored = embed(teacher, images[:, :, ::-1], pre) if flip else plain
    return np.stack([plain, mirrored]).astype(np.float32)


def _fit(student: Any, images: np.ndarray, targets: np.ndarray, pre: Preprocess, opts: DistillOptions,
         rep: Reporter) -> list[float]:
    from k210tool.tfutil import import_tf

    tf = import_tf()
    opt = _optimizer_for(student, opts.lr)

    @tf.function
    def step(x: Any, t: Any) -> Any:
        with tf.GradientTape() as tape:
            # inference-mode BatchNorm: the student keeps the statistics it runs with on the board
            s = tf.cast(student(x, training=False), tf.float32)
            cos = tf.reduce_sum(tf.math.l2_normalize(s, 1) * tf.math.l2_normalize(t, 1), axis=1)
            loss = tf.reduce_mean(1.0 - cos)
        grads = tape.gradient(loss, student.trainable_variables)
        opt.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng([opts.seed, 0xD15])
    steps = len(images) // opts.batch_size
    losses = []
    for epoch in range(opts.epochs):
        order = rng.permutation(len(images))
        flips = (rng.random(len(images)) < 0.5) & opts.flip
        total = 0.0
        with rep.progress(f"distill epoch {epoch + 1}/{opts.epochs}", total=steps) as bar:
            for b in range(steps):
                idx = order[b * opts.batch_size:(b + 1) * opts.batch_size]
                f = flips[idx]
                batch = np.where(f[:, None, None, None], images[idx][:, :, ::-1], images[idx])
                total += float(step(pre.normalize(batch), targets[f.astype(int), idx]))
                bar.advance()
        losses.append(total / max(steps, 1))
        rep.info(f"distill epoch {epoch + 1}/{opts.epochs}: cosine loss {losses[-1]:.4f}")
    return losses


def _optimizer_for(model: Any, lr: float) -> Any:
    """An Adam of the model's own Keras flavour (tf_keras and Keras 3 optimizers do not mix)."""
    from k210tool.tfutil import import_keras3, import_tf_keras

    keras = import_tf_keras() if type(model).__module__.startswith("tf_keras") else import_keras3()
    return keras.optimizers.Adam(lr)
