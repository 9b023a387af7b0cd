"""Box geometry and non-maximum suppression (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from facesocial.vision.boxes import areas, clip_boxes, iou_matrix, nms, short_sides


def _naive_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS, one pair at a time, as the reference."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(iou_matrix(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def test_areas_and_short_sides() -> None:
    b = np.array([[0, 0, 10, 20], [5, 5, 5, 9], [3, 3, 1, 1]], np.float32)
    np.testing.assert_allclose(areas(b), [200, 0, 0])
    np.testing.assert_allclose(short_sides(b), [10, 0, 0])


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]], np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 4)
    np.testing.assert_allclose(m[0], [1.0, 50 / 150, 0.0, 0.25], rtol=1e-6)


def test_iou_matrix_empty_and_degenerate() -> None:
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    point = np.array([[1, 1, 1, 1]], np.float32)
    assert iou_matrix(point, point)[0, 0] == 0.0  # no area: no overlap, no division by zero


def test_iou_matrix_rejects_bad_shape() -> None:
    with pytest.raises(ValueError):
        iou_matrix(np.zeros((2, 3)), np.zeros((2, 4)))


def test_nms_keeps_best_of_each_cluster_in_score_order() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [51, 50, 61, 60]],
                     np.float32)
    scores = np.array([0.7, 0.9, 0.8, 0.95], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [3, 1]


def test_nms_threshold_is_strict() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU = 1/3
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 1 / 3 + 1e-6).tolist() == [0, 1]
    assert nms(boxes, scores, 0.3).tolist() == [0]


def test_nms_ties_keep_earlier_index_and_max_keep() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    scores = np.array([0.5, 0.5, 0.4], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, max_keep=1).tolist() == [0]


def test_nms_matches_naive_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 200, (120, 2))
    wh = rng.uniform(5, 60, (120, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 120).astype(np.float32)
    for thr in (0.1, 0.3, 0.5, 0.7):
        assert nms(boxes, scores, thr).tolist() == _naive_nms(boxes, scores, thr)


def test_nms_empty_and_mismatch() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)


def test_clip_boxes_returns_new_array() -> None:
    b = np.array([[-5, -2, 30, 8], [1, 2, 3, 4]], np.float32)
    c = clip_boxes(b, 20, 6)
    np.testing.assert_array_equal(c, [[0, 0, 20, 6], [1, 2, 3, 4]])
    assert b[0, 0] == -5
