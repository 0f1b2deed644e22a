"""Procedural face-like images of synthetic identities, for tests, calibration and the demo.

No public face data set can be downloaded where k210tool is built and tested, so it makes its own: an
identity is a seeded set of shape and colour parameters (face oval, eyes, brows, nose, mouth, hair,
skin and background colours); each image of it varies pose (rotation, shift, scale), lighting and noise.
Images of one identity look alike and differ from other identities, which is what verification needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from k210tool.preprocess import Preprocess


@dataclass(frozen=True)
class Identity:
    seed: int
    face_w: float
    face_h: float
    eye_dx: float
    eye_y: float
    eye_r: float
    brow_tilt: float
    nose_len: float
    mouth_w: float
    mouth_y: float
    mouth_curve: float
    hair: float
    skin: tuple[int, int, int]
    hair_rgb: tuple[int, int, int]
    iris_rgb: tuple[int, int, int]
    background: tuple[int, int, int]


def make_identity(seed: int) -> Identity:
    r = np.random.default_rng([7919, seed])

    def colour(lo: int, hi: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in r.integers(lo, hi, 3))  # type: ignore[return-value]

    return Identity(
        seed=seed,
        face_w=float(r.uniform(0.30, 0.40)),
        face_h=float(r.uniform(0.40, 0.50)),
        eye_dx=float(r.uniform(0.11, 0.18)),
        eye_y=float(r.uniform(-0.12, -0.04)),
        eye_r=float(r.uniform(0.03, 0.055)),
        brow_tilt=float(r.uniform(-0.3, 0.3)),
        nose_len=float(r.uniform(0.08, 0.18)),
        mouth_w=float(r.uniform(0.08, 0.18)),
        mouth_y=float(r.uniform(0.16, 0.26)),
        mouth_curve=float(r.uniform(-0.05, 0.06)),
        hair=float(r.uniform(0.0, 1.0)),
        skin=colour(90, 240),
        hair_rgb=colour(10, 140),
        iris_rgb=colour(20, 200),
        background=colour(0, 255),
    )


def render_face(ident: Identity, rng: np.random.Generator, size: int = 112, variation: float = 1.0) -> np.ndarray:
    """One RGB uint8 ``size x size`` image of ``ident`` with random pose, lighting and noise."""
    import cv2

    s = 4 * size  # draw large, then downsample: anti-aliased shapes
    img = np.empty((s, s, 3), np.uint8)
    img[:] = ident.background

    def P(x: float, y: float) -> tuple[int, int]:
        return int(round((0.5 + x) * s)), int(round((0.5 + y) * s))

    def L(v: float) -> int:
        return max(1, int(round(v * s)))

    if ident.hair > 0.25:
        cv2.ellipse(img, P(0, -0.08), (L(ident.face_w * 1.12), L(ident.face_h * 1.05)), 0, 180, 360,
                    ident.hair_rgb, -1, cv2.LINE_AA)
    cv2.ellipse(img, P(0, 0), (L(ident.face_w), L(ident.face_h)), 0, 0, 360, ident.skin, -1, cv2.LINE_AA)
    for side in (-1, 1):
        ex, ey = side * ident.eye_dx, ident.eye_y
        cv2.ellipse(img, P(ex, ey), (L(ident.eye_r * 1.6), L(ident.eye_r)), 0, 0, 360, (245, 245, 245), -1,
                    cv2.LINE_AA)
        cv2.circle(img, P(ex, ey), L(ident.eye_r * 0.7), ident.iris_rgb, -1, cv2.LINE_AA)
        cv2.circle(img, P(ex, ey), L(ident.eye_r * 0.3), (10, 10, 10), -1, cv2.LINE_AA)
        by = ey - ident.eye_r * 2.0
        cv2.line(img, P(ex - 0.05, by + side * ident.brow_tilt * 0.03), P(ex + 0.05, by - side * ident.brow_tilt * 0.03),
                 ident.hair_rgb, L(0.015), cv2.LINE_AA)
    nose_top, nose_bot = P(0, ident.eye_y + 0.03), P(0.02, ident.eye_y + 0.03 + ident.nose_len)
    dark = tuple(int(c * 0.7) for c in ident.skin)
    cv2.line(img, nose_top, nose_bot, dark, L(0.012), cv2.LINE_AA)
    cv2.ellipse(img, P(0, ident.mouth_y), (L(ident.mouth_w), L(abs(ident.mouth_curve) + 0.01)), 0,
                0 if ident.mouth_curve >= 0 else 180, 180 if ident.mouth_curve >= 0 else 360,
                (90, 30, 40), L(0.014), cv2.LINE_AA)

    # pose: rotation, scale, shift (variation scales all of them)
    angle = rng.normal(0, 8) * variation
    scale = 1.0 + rng.normal(0, 0.05) * variation
    tx, ty = rng.normal(0, 0.03, 2) * variation * s
    m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    m[:, 2] += (tx, ty)
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)

    # lighting: global gain plus a linear gradient from a random direction; then sensor noise
    gain = 1.0 + rng.normal(0, 0.12) * variation
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    grad = 1.0 + 0.35 * variation * rng.uniform(0, 1) * (np.cos(theta) * xx + np.sin(theta) * yy)
    img = img * gain * grad[..., None]
    img += rng.normal(0, 4.0 * variation, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def identity_images(seed: int, count: int, size: int = 112, variation: float = 1.0,
                    image_seed: int = 0) -> np.ndarray:
    """``count`` images of identity ``seed`` as ``(count, size, size, 3)`` uint8."""
    ident = make_identity(seed)
    rng = np.random.default_rng([104729, seed, image_seed])
    return np.stack([render_face(ident, rng, size, variation) for _ in range(count)])


def prepared_faces(pre: Preprocess, n: int, first_seed: int) -> np.ndarray:
    """``n`` synthetic faces, one per identity from ``first_seed`` on, prepared with ``pre``: a uint8 batch
    for the model (what ``check`` calibrates with and ``rewrite`` measures on when the user gives no images)."""
    size = max(pre.height, pre.width)
    return np.stack([pre.prepare(identity_images(first_seed + i, 1, size=size)[0]) for i in range(n)])


def write_identity_folders(root: Path | str, identities: int, per_identity: int, size: int = 112,
                           first_seed: int = 0, variation: float = 1.0) -> list[Path]:
    """Write ``root/id_XXXX/NNN.png`` for ``identities`` identities; returns the image paths."""
    from k210tool.preprocess import save_image

    out: list[Path] = []
    for i in range(identities):
        folder = Path(root) / f"id_{first_seed + i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(identity_images(first_seed + i, per_identity, size, variation)):
            path = folder / f"{j:03d}.png"
            save_image(path, img)
            out.append(path)
    return out


def verification_pairs(first_seed: int, identities: int, pairs: int, size: int = 112, variation: float = 1.0,
                       seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Images (2 per pair) and same/different flags for identities ``first_seed .. +identities``.

    Pairs alternate genuine / impostor, so every contiguous fold of the 10-fold protocol holds both.
    """
    if identities < 2 or pairs < 2:
        raise ValueError("verification pairs need at least 2 identities and 2 pairs")
    rng = np.random.default_rng([15485863, first_seed, seed])
    per_id = max(2, int(np.ceil(2 * pairs / identities)) + 1)
    pool = {i: list(identity_images(first_seed + i, per_id, size, variation, image_seed=seed + 1))
            for i in range(identities)}
    images: list[np.ndarray] = []
    issame = np.arange(pairs) % 2 == 0
    for same in issame:
        a = int(rng.integers(identities))
        b = a if same else int((a + rng.integers(1, identities)) % identities)
        ia, ib = rng.choice(per_id, 2, replace=False)
        images += [pool[a][ia], pool[b][ib]]
    return images, issame


def write_verification_bin(path: Path | str, first_seed: int, identities: int, pairs: int, size: int = 112,
                           variation: float = 1.0, seed: int = 0) -> Path:
    """An insightface-style ``.bin`` of synthetic identities (held out when their seeds are not trained on)."""
    from k210tool.eval.binfile import write_bin

    images, issame = verification_pairs(first_seed, identities, pairs, size, variation, seed)
    return write_bin(path, images, issame)
