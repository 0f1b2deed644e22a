"""Checkpoints: a run stopped after step s and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from k210tool.errors import InputError

from .support import Synthetic

pytestmark = pytest.mark.slow

TINY = ["model.input_size=48", "model.width=16", "model.embedding_size=32",
        "model.bottlenecks=[[2, 16, 1, 2], [2, 32, 1, 2], [2, 32, 1, 2]]",
        "data.batch_size=16", "optim.accumulate=2", "run.steps_per_epoch=4", "run.epochs=3",
        'head.switch="epoch"', "head.switch_epoch=1", "optim.lr=0.05", "optim.warmup_epochs=0.5"]


def _train(synthetic: Synthetic, out: Path, *extra: str) -> object:
    from k210tool.train.config import load_config
    from k210tool.train.loop import train

    return train(load_config(None, [f'data.train="{synthetic.faces}"', f'run.out="{out}"', *TINY, *extra]))


def _checkpoint_values(out: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(out / "checkpoints"))
    # everything but the checkpoint's own bookkeeping (how many times it was saved)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}


def test_stop_and_resume_continues_exactly(synthetic: Synthetic, tmp_path: Path) -> None:
    whole = _train(synthetic, tmp_path / "whole")
    first = _train(synthetic, tmp_path / "split", "run.max_steps=6")  # stops mid epoch 2, after the switch
    assert first.stopped_early and first.steps == 6 and first.head == "arcface"  # type: ignore[attr-defined]
    second = _train(synthetic, tmp_path / "split")
    assert second.resumed_from_step == 6 and second.steps == whole.steps == 12  # type: ignore[attr-defined]
    a, b = _checkpoint_values(tmp_path / "whole"), _checkpoint_values(tmp_path / "split")
    assert a.keys() == b.keys()
    slots = [k for k in a if k.startswith("optimizer/_variables/")]
    assert len(slots) >= 20 and "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in a  # momentum + step
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the epoch the interruption cut in two reports the same loss as the uninterrupted one
    assert [h.loss for h in second.history] == [h.loss for h in whole.history[1:]]  # type: ignore[attr-defined]
    # a finished run is not trained again; a checkpointed run is not overwritten or mixed up
    again = _train(synthetic, tmp_path / "split")
    assert again.resumed_from_step == again.steps == 12 and again.history == []  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="already holds checkpoints"):
        _train(synthetic, tmp_path / "split", "run.resume=false")
    with pytest.raises(InputError, match="does not match this config"):
        _train(synthetic, tmp_path / "split", "model.embedding_size=16")
    longer = _train(synthetic, tmp_path / "split", "run.epochs=4")  # allowed, continues, and says so
    assert longer.steps == 16 and any("run.epochs 3 -> 4" in w for w in longer.warnings)  # type: ignore[attr-defined]
