"""Alignment: the similarity transform and warp with known landmarks (exact), and the real MTCNN detector
on the one real face photograph available offline (matplotlib's sample image of Grace Hopper). The
synthetic faces are not reliably detected by MTCNN, so the detector is not tested on them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from k210tool.train.data.align import (
    ARCFACE_TEMPLATE,
    FaceDetector,
    align_face,
    similarity_transform,
    template,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_recovers_a_known_similarity_exactly() -> None:
    m = _similarity(23.0, 1.7, -12.0, 40.0)
    src = ARCFACE_TEMPLATE
    np.testing.assert_allclose(similarity_transform(src, _apply(m, src)), m, atol=1e-9)


def test_never_fits_a_reflection() -> None:
    src = ARCFACE_TEMPLATE
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_is_the_least_squares_fit_under_noise() -> None:
    rng = np.random.default_rng(0)
    m = _similarity(-8.0, 0.6, 5.0, 7.0)
    dst = _apply(m, ARCFACE_TEMPLATE) + rng.normal(0, 0.8, ARCFACE_TEMPLATE.shape)
    fit = similarity_transform(ARCFACE_TEMPLATE, dst)
    err = np.sum((_apply(fit, ARCFACE_TEMPLATE) - dst) ** 2)
    for d in (1e-3, -1e-3):  # nudging any similarity parameter only makes it worse
        for perturbed in (fit + np.array([[d, 0, 0], [0, d, 0]]), fit + np.array([[0, 0, d], [0, 0, 0]]),
                          fit + np.array([[0, -d, 0], [d, 0, 0]])):
            assert np.sum((_apply(perturbed, ARCFACE_TEMPLATE) - dst) ** 2) >= err


def test_aligning_with_known_landmarks_undoes_a_rotation_and_scale() -> None:
    import cv2

    from k210tool.train.data.synthetic import identity_images

    face = identity_images(3, 1, size=112, variation=0.0)[0]
    m = _similarity(30.0, 1.8, 60.0, 10.0)  # face rotated 30 degrees, enlarged, moved in a 300x300 photo
    photo = cv2.warpAffine(face, m, (300, 300), flags=cv2.INTER_LINEAR)
    landmarks = _apply(m, template(112))  # where the face's landmarks are in the photo
    aligned = align_face(photo, landmarks, 112)
    inner = (slice(8, 104), slice(8, 104))
    assert np.abs(aligned[inner].astype(int) - face[inner]).mean() < 4
    assert align_face(photo, landmarks, 64).shape == (64, 64, 3)


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    import cv2
    import matplotlib.cbook

    from k210tool.preprocess import load_image

    photo = load_image(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.resize(photo, (256, 300), interpolation=cv2.INTER_AREA)  # half size: MTCNN is faster


@pytest.mark.slow
def test_mtcnn_aligns_a_real_face_onto_the_template(hopper: np.ndarray) -> None:
    import cv2

    det = FaceDetector()
    rotated = cv2.warpAffine(hopper, cv2.getRotationMatrix2D((128, 150), 20, 1.0), (256, 300))
    for image in (hopper, rotated):
        points = det.landmarks(image)
        assert points is not None
        aligned = align_face(image, points, 112)
        # detect again on the aligned crop (padded, MTCNN wants context): landmarks sit on the template
        padded = cv2.copyMakeBorder(aligned, 56, 56, 56, 56, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        again = det.landmarks(padded)
        assert again is not None
        assert np.abs(again - 56 - ARCFACE_TEMPLATE).max() < 8
    assert det.landmarks(np.full((120, 120, 3), 120, np.uint8)) is None  # no face: None, not an error
