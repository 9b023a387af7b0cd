"""Landmark refinement for recognition: context crops and mapping back to the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesocial.engine import Engine
from facesocial.settings import Settings
from facesocial.vision.image import load_image
from facesocial.vision.landmarks import MAX_SIDE, square_context


def test_square_context_pads_and_scales() -> None:
    rgb = np.full((100, 200, 3), 200, np.uint8)
    crop, scale, (left, top) = square_context(rgb, np.array([150, 10, 190, 90]))
    # side = 2 x 80 = 160, centred on (170, 50): it leaves the image right and top
    assert crop.shape == (160, 160, 3) and scale == 1.0 and (left, top) == (90, -30)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[80, 40].tolist() == [200, 200, 200]
    big, scale, _ = square_context(np.zeros((1000, 1000, 3), np.uint8),
                                   np.array([100, 100, 600, 600]))
    assert big.shape[0] == MAX_SIDE and abs(scale - MAX_SIDE / 1000) < 1e-9


def test_refined_landmarks_stay_on_the_face_and_version_names_the_pipeline(
        settings: Settings, testdata: Path) -> None:
    rgb = load_image(testdata / "faces/obama_1.jpg").rgb
    refined = Engine(settings)
    plain = Engine(settings.model_copy(update={"embed_refine_landmarks": False,
                                               "embed_flip": False}))
    dets = refined.detect(rgb)
    a = refined.embed_detections(rgb, dets)[0]
    b = plain.embed_detections(rgb, dets)[0]
    assert a.model.version.endswith(".lm.flip") and b.model.version == "7caa7fb0ad6c-fold1"
    assert a.flipped_tta and not b.flipped_tta
    assert float(a.vector @ b.vector) > 0.8  # same face, slightly different alignment
    from facesocial.vision.detection import detect_faces
    from facesocial.vision.landmarks import refine_landmarks

    scrfd = refined.detector("scrfd_2.5g")
    lm = refine_landmarks(rgb, dets, lambda c: detect_faces(scrfd, c, score_threshold=0.1,
                                                            max_side=MAX_SIDE, tiling=False))
    x1, y1, x2, y2 = dets.boxes[0]
    assert (lm[0, :, 0] > x1).all() and (lm[0, :, 0] < x2).all()
    assert (lm[0, :, 1] > y1).all() and (lm[0, :, 1] < y2).all()
    eye_dist = np.linalg.norm(dets.landmarks[0, 0] - dets.landmarks[0, 1])
    assert np.abs(lm[0] - dets.landmarks[0]).max() < 0.3 * eye_dist
