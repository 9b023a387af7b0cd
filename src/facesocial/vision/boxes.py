"""Axis-aligned box geometry in pure, vectorised numpy.

Boxes are ``(n, 4)`` arrays of ``x1, y1, x2, y2`` in continuous pixel
coordinates: a box's width is ``x2 - x1`` (no ``+ 1``), so a box covering
pixels 0..9 is ``(0, 0, 10, 10)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facesocial.errors import InvalidInput

__all__ = ["areas", "clip_boxes", "iou_matrix", "nms", "short_sides"]


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {arr.shape}")
    return arr


def areas(boxes: np.ndarray) -> np.ndarray:
    """``(n,)`` areas; degenerate boxes (x2 < x1 or y2 < y1) have area 0."""
    b = _as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def short_sides(boxes: np.ndarray) -> np.ndarray:
    """``(n,)`` length of each box's shorter side (0 for degenerate boxes)."""
    b = _as_boxes(boxes)
    return np.clip(np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` intersection over union of every pair of boxes."""
    a, b = _as_boxes(a), _as_boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Returns the indices of the kept boxes, highest score first. A box is
    suppressed when its IoU with a higher-scoring kept box is strictly greater
    than ``iou_threshold``; ties in score keep the earlier index. One Python
    iteration per *kept* box, each vectorised over the remaining ones.
    """
    b = _as_boxes(boxes)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    limit = len(order) if max_keep is None else max_keep
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = iou_matrix(b[best:best + 1], b[rest])[0]
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Boxes clipped to the image ``[0, width] x [0, height]`` (a new array)."""
    b = _as_boxes(boxes).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b


def as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Validate face boxes: an (n, 4) array of finite xyxy with x2 > x1, y2 > y1."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidInput(f"face boxes must have shape (n, 4), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput("face boxes must be finite numbers")
    bad = np.flatnonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))
    if bad.size:
        raise InvalidInput(f"face box {int(bad[0])} is empty: {arr[bad[0]].tolist()}",
                           index=int(bad[0]))
    return arr
