"""Fixtures shared by the vision tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from facesocial.vision.detection import YuNetDetector, detect_faces

Boxes = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="session")
def face_boxes(load_model) -> Boxes:  # noqa: ANN001
    """rgb -> (n, 4) xyxy face boxes, largest first (YuNet at score 0.6)."""
    detector = YuNetDetector(load_model("yunet"))
    return lambda rgb: detect_faces(detector, rgb, score_threshold=0.6).boxes
