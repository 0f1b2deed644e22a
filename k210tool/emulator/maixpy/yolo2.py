"""The YOLOv2 region layer the firmwares run after a detector kmodel (``yolo2_region_layer.c`` of CanMV,
``region_layer.c`` of MaixPy-v1; both descend from darknet's).

Input: output 0 of the kmodel, float32, channel-major ``(anchors * (5 + classes), layer_h, layer_w)``; for
each anchor the planes are x, y, w, h, objectness, then the class scores. x, y and objectness go through a
sigmoid, the class scores through a softmax over the classes; a box's score is objectness times its class
probability and counts above ``threshold``. Boxes are then suppressed per class in score order when their
IoU with a kept box exceeds ``nms_value``. Coordinates come back in ``image_w x image_h`` pixels as the C
code computes them: float corners converted to uint32, which on the K210's RISC-V (``fcvt.wu.s``)
truncates towards zero and saturates (a negative corner becomes 0).

Arithmetic is float32, as on the board.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class RegionLayer:
    anchors: tuple[float, ...]  # w, h pairs in grid cells
    threshold: float
    nms_value: float
    classes: int
    layer_w: int
    layer_h: int
    net_w: int
    net_h: int
    image_w: int
    image_h: int

    @property
    def anchor_number(self) -> int:
        return len(self.anchors) // 2

    def expected_outputs(self) -> int:
        return self.anchor_number * (5 + self.classes) * self.layer_w * self.layer_h


@dataclass(frozen=True)
class Detection:
    x: int
    y: int
    w: int
    h: int
    classid: int
    prob: float
    index: int = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    one = np.float32(1.0)
    return (one / (one + np.exp(-x, dtype=np.float32))).astype(np.float32)


def _to_u32(v: np.float32) -> int:
    """C's float -> uint32_t on RISC-V: truncate towards zero, saturate to 0..2^32-1 (NaN: max)."""
    f = float(v)
    if f != f:
        return _U32_MAX
    return int(min(max(f, 0.0), float(_U32_MAX)))


def _boxes_and_probs(rl: RegionLayer, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, c, lh, lw = rl.anchor_number, rl.classes, rl.layer_h, rl.layer_w
    x = out.astype(np.float32).reshape(a, 5 + c, lh, lw)
    cols = np.arange(lw, dtype=np.float32)[None, None, :]
    rows = np.arange(lh, dtype=np.float32)[None, :, None]
    aw = np.asarray(rl.anchors[0::2], np.float32)[:, None, None]
    ah = np.asarray(rl.anchors[1::2], np.float32)[:, None, None]
    bx = (cols + _sigmoid(x[:, 0])) / np.float32(lw)
    by = (rows + _sigmoid(x[:, 1])) / np.float32(lh)
    bw = np.exp(x[:, 2], dtype=np.float32) * aw / np.float32(lw)
    bh = np.exp(x[:, 3], dtype=np.float32) * ah / np.float32(lh)
    obj = _sigmoid(x[:, 4])
    if c > 0:
        scores = x[:, 5:]
        e = np.exp(scores - scores.max(axis=1, keepdims=True), dtype=np.float32)
        cls = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        probs = (obj[:, None] * cls).astype(np.float32)  # (a, c, lh, lw)
    else:
        probs = obj[:, None]
    probs = np.where(probs > np.float32(rl.threshold), probs, np.float32(0))
    # box index = anchor * (lh * lw) + row * lw + col, as in the C code
    boxes = np.stack([bx, by, bw, bh], axis=-1).reshape(-1, 4)
    return _correct(rl, boxes), probs.transpose(0, 2, 3, 1).reshape(-1, max(c, 1))


def _correct(rl: RegionLayer, boxes: np.ndarray) -> np.ndarray:
    """correct_region_boxes: undo a letterboxed network input (a no-op when the aspect ratios agree)."""
    if rl.net_w / rl.image_w < rl.net_h / rl.image_h:
        new_w, new_h = rl.net_w, (rl.image_h * rl.net_w) // rl.image_w
    else:
        new_h, new_w = rl.net_h, (rl.image_w * rl.net_h) // rl.image_h
    out = boxes.copy()
    out[:, 0] = (boxes[:, 0] - (rl.net_w - new_w) / 2.0 / rl.net_w) / np.float32(new_w / rl.net_w)
    out[:, 1] = (boxes[:, 1] - (rl.net_h - new_h) / 2.0 / rl.net_h) / np.float32(new_h / rl.net_h)
    out[:, 2] *= np.float32(rl.net_w / new_w)
    out[:, 3] *= np.float32(rl.net_h / new_h)
    return out.astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    def overlap(x1: float, w1: float, x2: float, w2: float) -> float:
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    w = overlap(a[0], a[2], b[0], b[2])
    h = overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _nms(rl: RegionLayer, boxes: np.ndarray, probs: np.ndarray) -> None:
    for k in range(probs.shape[1]):
        order = sorted(range(len(boxes)), key=lambda i: -float(probs[i, k]))  # stable, like qsort of ties
        for pos, i in enumerate(order):
            if probs[i, k] == 0:
                continue
            for j in order[pos + 1:]:
                if _iou(boxes[i], boxes[j]) > rl.nms_value:
                    probs[j, k] = 0


def run_region_layer(rl: RegionLayer, output: np.ndarray) -> list[Detection]:
    """Detections (x, y, w, h in image pixels, class, probability) in the firmware's order (box index)."""
    flat = np.asarray(output, np.float32).reshape(-1)
    if flat.size < rl.expected_outputs():
        raise ValueError(f"the detector gives {flat.size} values, the region layer needs {rl.expected_outputs()}")
    boxes, probs = _boxes_and_probs(rl, flat[: rl.expected_outputs()])
    _nms(rl, boxes, probs)
    found = []
    for i in range(len(boxes)):
        cls = int(np.argmax(probs[i]))
        prob = probs[i, cls]
        if prob > np.float32(rl.threshold):
            bx, by, bw, bh = boxes[i]
            iw, ih = np.float32(rl.image_w), np.float32(rl.image_h)
            x1 = _to_u32(bx * iw - bw * iw / np.float32(2))
            y1 = _to_u32(by * ih - bh * ih / np.float32(2))
            x2 = _to_u32(bx * iw + bw * iw / np.float32(2))
            y2 = _to_u32(by * ih + bh * ih / np.float32(2))
            found.append(Detection(x1, y1, (x2 - x1) & _U32_MAX, (y2 - y1) & _U32_MAX, cls, float(prob), len(found)))
    return found


__all__ = ["Detection", "RegionLayer", "run_region_layer"]
