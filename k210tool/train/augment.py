"""Image augmentations used to balance identities in ``k210tool data prepare``.

All take and return RGB uint8 images and draw randomness from the generator they are given, so a
prepared data set is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np


def opening(image: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Morphological opening (erosion then dilation): removes small bright details, keeps shapes."""
    import cv2

    return cv2.morphologyEx(image, cv2.MORPH_OPEN, np.ones((kernel, kernel), np.uint8))


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 8.0) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def salt_and_pepper(image: np.ndarray, rng: np.random.Generator, amount: float = 0.02) -> np.ndarray:
    """Set a fraction ``amount`` of pixels (all channels) to black or white, half each."""
    out = image.copy()
    h, w = image.shape[:2]
    hit = rng.random((h, w)) < amount
    white = rng.random((h, w)) < 0.5
    out[hit & white] = 255
    out[hit & ~white] = 0
    return out
