from __future__ import annotations

from pathlib import Path

import pytest

from k210tool.errors import InputError
from k210tool.train.config import TrainConfig, config_from_dict, load_config, parse_override, to_toml

EXAMPLE = Path(__file__).resolve().parents[2] / "k210tool" / "train" / "example.toml"


def test_defaults_train_the_kpu_form_with_softmax_then_arcface() -> None:
    cfg = load_config()
    assert cfg.model.backbone == "mobilefacenet_kpu"
    assert (cfg.head.pretrain, cfg.head.kind) == ("softmax", "arcface")
    assert cfg.head.margins() == (1.0, 0.5, 0.0)


def test_example_config_is_the_defaults_except_what_it_says(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    default = TrainConfig()
    assert cfg.model == default.model
    assert cfg.head == default.head
    assert cfg.run == default.run
    assert cfg.data.train == "faces" and cfg.optim.warmup_epochs == 1.0


def test_overrides_take_toml_values_and_bare_strings() -> None:
    cfg = load_config(None, ["optim.lr=0.05", 'data.val=["a.bin", "b.bin"]', "run.out=runs/x", "data.flip=false",
                             "model.bottlenecks=[[2, 16, 1, 2]]", "optim.decay_epochs=[3, 6]"])
    assert cfg.optim.lr == 0.05
    assert cfg.data.val == ("a.bin", "b.bin")
    assert cfg.run.out == "runs/x"
    assert cfg.data.flip is False
    assert cfg.model.bottlenecks == ((2, 16, 1, 2),)
    assert cfg.optim.decay_epochs == (3, 6)


def test_integer_where_a_number_is_expected_becomes_float() -> None:
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize("override, match", [
    ("optim.lrr=1", "unknown key optim.lrr"),
    ("optimizer.lr=1", r"unknown section \[optimizer\]"),
    ("optim.lr=abc", "optim.lr must be a number"),
    ("run.epochs=1.5", "run.epochs must be an integer"),
    ("data.flip=1", "data.flip must be true or false"),
    ("head.kind=arcfce", "head.kind='arcfce' is not one of"),
    ("model.input_size=16", "too small"),
    ("optim.accumulate=0", "must be positive"),
    ("lr=0.1", "not section.key=value"),
])
def test_bad_values_name_the_key(override: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_config(None, [override])


def test_head_margins_default_to_the_kind_preset_and_can_be_set() -> None:
    assert load_config(None, ["head.kind=cosface"]).head.margins() == (1.0, 0.0, 0.35)
    assert load_config(None, ["head.kind=sphereface"]).head.margins() == (1.35, 0.0, 0.0)
    assert load_config(None, ["head.kind=combined", "head.m2=0.25"]).head.margins() == (1.0, 0.25, 0.2)


def test_to_toml_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ['data.val=["x.bin"]', "model.bottlenecks=[[2, 16, 1, 2]]", "optim.lr=0.003"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_invalid_toml_and_missing_file_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nx=")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(InputError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="must be a table"):
        config_from_dict({"model": 3})


def test_parse_override_keeps_equals_signs_in_values() -> None:
    assert parse_override('run.out="a=b"') == ("run", "out", "a=b")
