"""Face alignment to 112x112: MTCNN's five landmarks mapped onto insightface's template.

The template holds where the left eye, right eye, nose tip and mouth corners of a 112x112 ArcFace crop
are (image left/right, as the viewer sees them). A least-squares similarity transform (rotation, uniform
scale, translation; Umeyama's method) maps detected landmarks onto it, and the image is warped with it.
The detector is PyPI ``mtcnn``, whose weights ship inside the package, so alignment works offline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# insightface's arcface_dst for 112x112 crops: left eye, right eye, nose, left and right mouth corner
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
_MTCNN_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the similarity transform that best maps points ``src`` onto ``dst`` (least squares)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection would fit better: forbid it
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var_s = float((s ** 2).sum() / len(src))
    scale = float((sv * sign).sum() / var_s) if var_s > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def template(size: int = 112) -> np.ndarray:
    return ARCFACE_TEMPLATE * (size / 112.0)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so its five ``landmarks`` land on the template of a ``size`` x ``size`` crop."""
    import cv2

    m = similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), template(size))
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


class FaceDetector:
    """MTCNN (from PyPI ``mtcnn``), loaded on first use; finds the most prominent face's landmarks."""

    def __init__(self, min_face_size: int = 20, min_confidence: float = 0.9) -> None:
        self.min_face_size = min_face_size
        self.min_confidence = min_confidence
        self._mtcnn: Any = None

    def _load(self) -> Any:
        if self._mtcnn is None:
            from k210tool.tfutil import import_tf, quiet_stderr

            import_tf()
            with quiet_stderr():
                from mtcnn import MTCNN

                self._mtcnn = MTCNN()
        return self._mtcnn

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(5, 2) landmarks (x, y) of the largest confident face in RGB ``image``, or None."""
        faces = self._load().detect_faces(np.ascontiguousarray(image), min_face_size=self.min_face_size)
        faces = [f for f in faces if float(f.get("confidence", 0.0)) >= self.min_confidence]
        if not faces:
            return None
        best = max(faces, key=lambda f: float(f["box"][2]) * float(f["box"][3]))
        return np.array([best["keypoints"][k] for k in _MTCNN_KEYS], np.float64)

    def align(self, image: np.ndarray, size: int = 112) -> np.ndarray | None:
        """The aligned ``size`` crop of the largest face, or None when no face is found."""
        points = self.landmarks(image)
        return None if points is None else align_face(image, points, size)
