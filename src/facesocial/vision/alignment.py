"""Face alignment: 5-point similarity transform onto the ArcFace template.

Pure numpy (the transform estimate) plus one OpenCV warp. Landmark order is
right eye, left eye, nose tip, right mouth corner, left mouth corner as seen in
the image, which matches the template's order (image-left eye first).
"""

from __future__ import annotations

import cv2
import numpy as np

#: The standard ArcFace 112x112 template (insightface ``arcface_dst``).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation), Umeyama 1991.

    Returns the 2x3 matrix M with ``dst ~= M @ [src, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected matching (n>=2, 2) point sets, got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = float((sig * sign).sum() / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def arcface_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Transform from image pixels to an aligned ``size`` x ``size`` crop."""
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    return similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), dst)


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """One aligned face crop (size, size, 3) uint8."""
    m = arcface_matrix(landmarks, size)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def align_faces(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned crops for every face: (n, size, size, 3) uint8."""
    lm = np.asarray(landmarks).reshape(-1, 5, 2)
    if len(lm) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align_face(rgb, p, size) for p in lm])
