from __future__ import annotations

import math

import numpy as np
import pytest

from k210tool.train.config import HeadConfig, OptimConfig
from k210tool.train.schedule import PhaseState, WarmupDecay, after_epoch, initial_phase, make_schedule


def _lrs(s: WarmupDecay, steps: range) -> np.ndarray:
    return np.array([float(s(i)) for i in steps])


def test_warmup_then_cosine_to_min_lr() -> None:
    s = WarmupDecay(0.1, total_steps=100, warmup_steps=10, kind="cosine", min_lr=0.001)
    lr = _lrs(s, range(100))
    np.testing.assert_allclose(lr[:10], 0.1 * np.arange(1, 11) / 10, rtol=1e-5)
    assert np.all(np.diff(lr[10:]) <= 1e-9)
    assert lr[10] == pytest.approx(0.1) and float(s(100)) == pytest.approx(0.001)


def test_step_schedule_decays_at_boundaries() -> None:
    s = make_schedule(OptimConfig(schedule="step", lr=1.0, decay_epochs=(2, 3), decay_factor=0.5), 10, 5)
    assert [float(s(i)) for i in (0, 19, 20, 29, 30, 49)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_schedule_serialises() -> None:
    s = WarmupDecay(0.1, 50, 5, "step", (10, 20), 0.1, 0.0)
    again = WarmupDecay(**s.get_config())
    assert _lrs(again, range(30)).tolist() == _lrs(s, range(30)).tolist()


def test_epoch_switch_happens_at_the_epoch() -> None:
    cfg = HeadConfig(switch="epoch", switch_epoch=3)
    st = initial_phase(cfg)
    phases = []
    for epoch, loss in enumerate([5.0, 4.0, 3.0, 2.0], 1):
        st = after_epoch(cfg, st, epoch, loss)
        phases.append(st.phase)
    assert phases == [0, 0, 1, 1] and st.switched_epoch == 3


def test_plateau_switch_waits_for_patience_epochs_without_improvement() -> None:
    cfg = HeadConfig(switch="plateau", patience=2, min_delta=0.05, switch_epoch=50)
    st = initial_phase(cfg)
    losses = [5.0, 3.0, 2.0, 1.99, 1.95, 1.0]  # 1.99 and 1.95 improve by < 5%
    for epoch, loss in enumerate(losses, 1):
        st = after_epoch(cfg, st, epoch, loss)
        if st.phase:
            break
    assert st.switched_epoch == 5


def test_plateau_switch_is_forced_at_switch_epoch() -> None:
    cfg = HeadConfig(switch="plateau", patience=2, switch_epoch=2)
    st = after_epoch(cfg, after_epoch(cfg, initial_phase(cfg), 1, 5.0), 2, 1.0)
    assert st.phase == 1 and st.switched_epoch == 2


def test_no_pretraining_starts_in_the_final_phase() -> None:
    assert initial_phase(HeadConfig(pretrain="none")).phase == 1
    assert initial_phase(HeadConfig(kind="softmax")).phase == 1


def test_phase_state_survives_its_checkpoint_encoding() -> None:
    for st in (PhaseState(), PhaseState(0, 2.5, 1, -1), PhaseState(1, 0.3, 0, 4)):
        back = PhaseState.from_list(np.array(st.as_list(), np.float64))
        assert back == st or (math.isinf(st.best) and math.isinf(back.best))
