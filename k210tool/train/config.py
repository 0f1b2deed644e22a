"""Training configuration: frozen dataclasses, read from TOML and overridden from the command line.

A config file has one table per dataclass (``[model]``, ``[head]``, ``[data]``, ``[optim]``, ``[run]``);
every key is optional and defaults to the values below. Overrides use the same names,
``section.key=value``, with the value written as in TOML (``optim.lr=0.05``, ``data.val=["lfw.bin"]``,
``run.out="runs/x"``; a bare word is taken as a string). Unknown keys and wrong types are
:class:`~k210tool.errors.InputError` naming the key, so a typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k210tool.errors import InputError

BACKBONES = ("mobilefacenet", "mobilefacenet_kpu", "mobilenet_v1", "mobilenet_v2", "resnet50")
# head kind -> (m1, m2, m3) of insightface's combined margin cos(m1*theta + m2) - m3
HEAD_PRESETS: dict[str, tuple[float, float, float]] = {
    "softmax": (1.0, 0.0, 0.0),
    "arcface": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.35),
    "sphereface": (1.35, 0.0, 0.0),
    "combined": (1.0, 0.3, 0.2),
}
HEADS = tuple(HEAD_PRESETS)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "mobilefacenet_kpu"
    input_size: int = 112
    embedding_size: int = 128
    expansion_scale: float = 1.0  # MobileFaceNet: multiplies every bottleneck's expansion ratio
    width: int = 64  # MobileFaceNet: stem channels
    # MobileFaceNet bottleneck stages (t, c, n, s); empty = the paper's Table 1
    bottlenecks: tuple[tuple[int, int, int, int], ...] = ()
    alpha: float = 1.0  # MobileNet V1/V2 width multiplier
    bn_momentum: float = 0.9  # BatchNorm moving-average momentum (insightface's; Keras' default 0.99 lags)

    def __post_init__(self) -> None:
        _choice("model.backbone", self.backbone, BACKBONES)
        _positive("model.input_size", self.input_size)
        _positive("model.embedding_size", self.embedding_size)
        if self.input_size < 32:
            raise InputError(f"model.input_size={self.input_size} is too small", "use 32 or more (112 is usual)")
        for stage in self.bottlenecks:
            if len(stage) != 4:
                raise InputError(f"model.bottlenecks entry {list(stage)} must be [t, c, n, s]")


@dataclass(frozen=True)
class HeadConfig:
    """The final margin head and the softmax pre-training that precedes it.

    Margins follow insightface's combined form ``cos(m1*theta + m2) - m3``; unset margins (-1) take the
    preset of ``kind`` (arcface m2=0.5, cosface m3=0.35, sphereface m1=1.35, combined 1.0/0.3/0.2).
    """

    kind: str = "arcface"
    scale: float = 64.0
    m1: float = -1.0
    m2: float = -1.0
    m3: float = -1.0
    pretrain: str = "softmax"  # softmax | none
    switch: str = "plateau"  # plateau: when the epoch loss stops improving; epoch: at switch_epoch
    switch_epoch: int = 10  # epoch switch: the epoch to switch at; plateau: the latest epoch to switch
    patience: int = 2  # plateau: epochs without relative improvement >= min_delta
    min_delta: float = 0.02
    min_pretrain_epochs: int = 1

    def __post_init__(self) -> None:
        _choice("head.kind", self.kind, HEADS)
        _choice("head.pretrain", self.pretrain, ("softmax", "none"))
        _choice("head.switch", self.switch, ("plateau", "epoch"))
        _positive("head.scale", self.scale)
        if self.m1 != -1.0 and self.m1 <= 0:
            raise InputError(f"head.m1={self.m1} must be positive")

    def margins(self) -> tuple[float, float, float]:
        preset = HEAD_PRESETS[self.kind]
        return tuple(p if v == -1.0 else float(v) for p, v in zip(preset, (self.m1, self.m2, self.m3), strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class DataConfig:
    train: str = ""  # identity folders, *.tfrecord file/folder/glob, or a folder with train.rec + train.idx
    val: tuple[str, ...] = ()  # insightface verification .bin files
    batch_size: int = 64  # images per optimizer micro-step over all devices
    flip: bool = True  # random horizontal flips
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (128.0, 128.0, 128.0)
    color: str = "RGB"
    parallel_calls: int = 0  # decode threads; 0 = tf.data AUTOTUNE

    def __post_init__(self) -> None:
        _positive("data.batch_size", self.batch_size)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4  # decoupled, not applied to BatchNorm/PReLU/bias
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0
    decay_epochs: tuple[int, ...] = ()  # step schedule: multiply by decay_factor at these epochs
    decay_factor: float = 0.1
    min_lr: float = 0.0
    accumulate: int = 1  # micro-batches per optimizer step (effective batch = batch_size * accumulate)
    clip_norm: float = 0.0  # global gradient norm clip; 0 = off

    def __post_init__(self) -> None:
        _choice("optim.optimizer", self.optimizer, ("sgd", "adam", "adamw"))
        _choice("optim.schedule", self.schedule, ("cosine", "step", "constant"))
        _positive("optim.lr", self.lr)
        _positive("optim.accumulate", self.accumulate)
        if self.weight_decay < 0:
            raise InputError("optim.weight_decay must not be negative")


@dataclass(frozen=True)
class RunConfig:
    out: str = "runs/train"
    epochs: int = 20
    steps_per_epoch: int = 0  # 0 = one pass over the training data
    max_steps: int = 0  # stop (with a checkpoint) after this many steps in total; 0 = no limit
    seed: int = 0
    precision: str = "auto"  # auto (mixed_float16 on GPU, float32 on CPU) | float32 | mixed_float16 | mixed_bfloat16
    strategy: str = "auto"  # auto | default | one_device | mirrored | multi_worker
    checkpoint_steps: int = 0  # also checkpoint every N steps; 0 = at epoch ends only
    keep_checkpoints: int = 3
    val_every: int = 1  # validate every N epochs (and after the last)
    val_flip: bool = True  # add the embedding of the flipped image, as insightface does
    resume: bool = True  # continue from the latest checkpoint in out/checkpoints
    export: str = ""  # inference model path; default out/model.h5

    def __post_init__(self) -> None:
        _positive("run.epochs", self.epochs)
        _choice("run.precision", self.precision, ("auto", "float32", "mixed_float16", "mixed_bfloat16"))
        _choice("run.strategy", self.strategy, ("auto", "default", "one_device", "mirrored", "multi_worker"))
        _positive("run.val_every", self.val_every)
        _positive("run.keep_checkpoints", self.keep_checkpoints)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"model": ModelConfig, "head": HeadConfig, "data": DataConfig, "optim": OptimConfig,
                             "run": RunConfig}


def load_config(path: Path | str | None = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """Read ``path`` (TOML; None = all defaults) and apply ``section.key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_toml(Path(path))
    for item in overrides:
        section, key, value = parse_override(item)
        raw.setdefault(section, {})[key] = value
    return config_from_dict(raw, source=str(path) if path else "overrides")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    parts: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise InputError(f"{source}: unknown section [{section}]", f"sections are {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise InputError(f"{source}: {section} must be a table ([{section}])")
        parts[section] = _build(SECTIONS[section], section, values, source)
    return TrainConfig(**parts)


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim", "lr", 0.05)``; the value is parsed as TOML, else a string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise InputError(f"override {item!r} is not section.key=value", "e.g. --set optim.lr=0.05")
    import tomli

    try:
        value = tomli.loads(f"v = {text.strip()}")["v"]
    except tomli.TOMLDecodeError:
        value = text.strip()
    return section, key.strip(), value


def _read_toml(path: Path) -> dict[str, Any]:
    import tomli

    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from None


def _build(cls: type, section: str, values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise InputError(f"{source}: unknown key {section}.{key}", f"[{section}] takes {', '.join(sorted(known))}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(hint)
        inner = args[0]
        return tuple(_coerce(name, v, inner) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {value!r}")
        return value
    return value


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise InputError(f"{name}={value} must be positive")


def to_toml(config: TrainConfig) -> str:
    """The config as TOML text (what the run directory records and `--set` overrides start from)."""
    lines: list[str] = []
    for section, part in dataclasses.asdict(config).items():
        lines.append(f"[{section}]")
        for key, value in part.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)
