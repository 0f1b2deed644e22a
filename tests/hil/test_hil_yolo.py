"""The YOLOv2 region layer on outputs built by hand: boxes, thresholds, NMS, the uint32 corners."""

from __future__ import annotations

import math

import numpy as np
import pytest

from k210tool.emulator.maixpy.yolo2 import RegionLayer, run_region_layer

LOGIT_NONE = -20.0


def _layer(anchors=(2.0, 2.0), classes=1, lw=5, lh=5, threshold=0.5, nms=0.3, size=160) -> RegionLayer:
    return RegionLayer(tuple(anchors), threshold, nms, classes, lw, lh, size, size, size, size)


def _planes(rl: RegionLayer) -> np.ndarray:
    out = np.zeros((rl.anchor_number, 5 + rl.classes, rl.layer_h, rl.layer_w), np.float32)
    out[:, 4] = LOGIT_NONE
    return out


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_one_cell_gives_one_box_of_the_anchor_size_centred_on_the_cell():
    rl = _layer()
    out = _planes(rl)
    out[0, 4, 2, 3] = _logit(0.9)
    (d,) = run_region_layer(rl, out.ravel())
    # centre ((3 + 0.5) / 5, (2 + 0.5) / 5) * 160 = (112, 80); size 2 cells = 64 px
    assert (d.x, d.y, d.w, d.h) == (80, 48, 64, 64)
    assert d.prob == pytest.approx(0.9, abs=1e-6) and d.classid == 0


def test_offsets_and_sizes_follow_sigmoid_and_exp():
    rl = _layer(anchors=(1.0, 1.0))
    out = _planes(rl)
    out[0, 0, 1, 1] = _logit(0.25)  # x offset in the cell
    out[0, 1, 1, 1] = _logit(0.75)
    out[0, 2, 1, 1] = math.log(2.0)  # w = 2 * anchor
    out[0, 4, 1, 1] = 3.0
    (d,) = run_region_layer(rl, out.ravel())
    cx, cy, w, h = (1.25 / 5) * 160, (1.75 / 5) * 160, 2 / 5 * 160, 1 / 5 * 160
    assert (d.x, d.y, d.w, d.h) == (int(cx - w / 2), int(cy - h / 2), pytest.approx(w, abs=1), pytest.approx(h, abs=1))


def test_threshold_and_nms_keep_the_best_of_overlapping_boxes():
    rl = _layer(anchors=(2.0, 2.0), nms=0.3)
    out = _planes(rl)
    out[0, 4, 2, 2] = _logit(0.95)
    out[0, 4, 2, 3] = _logit(0.8)  # one cell right: IoU (1*2)/(4+4-2) = 0.33 > 0.3 -> suppressed
    out[0, 4, 0, 0] = _logit(0.7)  # far away: kept
    out[0, 4, 4, 4] = _logit(0.4)  # below the threshold
    found = run_region_layer(rl, out.ravel())
    assert [round(d.prob, 2) for d in found] == [0.7, 0.95]  # in box-index order, as the firmware lists them
    loose = run_region_layer(_layer(anchors=(2.0, 2.0), nms=0.5), out.ravel())
    assert sorted(round(d.prob, 2) for d in loose) == [0.7, 0.8, 0.95]


def test_class_scores_go_through_a_softmax():
    rl = _layer(classes=2, threshold=0.3)
    out = _planes(rl)
    out[0, 4, 1, 1] = 10.0
    out[0, 5, 1, 1], out[0, 6, 1, 1] = 0.0, math.log(3.0)  # softmax -> 0.25, 0.75
    (d,) = run_region_layer(rl, out.ravel())
    assert d.classid == 1 and d.prob == pytest.approx(0.75, abs=1e-3)


def test_negative_corners_saturate_to_zero_as_the_k210_converts_floats():
    rl = _layer(anchors=(3.0, 3.0))
    out = _planes(rl)
    out[0, 4, 0, 0] = 5.0  # centre (16, 16), 96 px wide: left edge at -32
    (d,) = run_region_layer(rl, out.ravel())
    assert (d.x, d.y) == (0, 0) and d.w == 64 and d.h == 64


def test_too_few_outputs_is_an_error():
    rl = _layer()
    with pytest.raises(ValueError, match="region layer needs 150"):
        run_region_layer(rl, np.zeros(100, np.float32))
