"""Face quality on real photos (labelled faces, CFP dev pairs) and the enrolment check.

Degradations are applied to one sharp labelled photo while its detected box and
landmarks are kept, so each test changes exactly one thing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesocial.errors import InvalidImage, InvalidInput
from facesocial.vision.alignment import ARCFACE_TEMPLATE
from facesocial.vision.image import load_image
from facesocial.vision.quality import (
    MIN_ENROL_QUALITY,
    MIN_ENROL_SIZE,
    QUALITY_BANDS,
    FaceQuality,
    assess_faces,
    enrolment_problems,
    head_pose,
)

SHARP = "faces/obama_1.jpg"  # frontal, face ~240 px: measured score 0.99, no reasons
CFP_PERSON = "dev/cfp/images/001"  # frontal/01.jpg and profile/01.jpg of one person


@pytest.fixture(scope="module")
def detect(load_model):
    from facesocial.vision.detection import YuNetDetector, detect_faces

    detector = YuNetDetector(load_model("yunet"))

    def largest(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, 4) box and (1, 5, 2) landmarks of the largest face (YuNet, score 0.6)."""
        d = detect_faces(detector, rgb, score_threshold=0.6)
        assert len(d) > 0, "no face found"
        areas = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
        i = int(np.argmax(areas))
        return d.boxes[i:i + 1], d.landmarks[i:i + 1]

    return largest


@pytest.fixture(scope="module")
def sharp(testdata: Path, detect) -> tuple[np.ndarray, np.ndarray, np.ndarray, FaceQuality]:
    rgb = load_image(testdata / SHARP).rgb
    box, lm = detect(rgb)
    return rgb, box, lm, assess_faces(rgb, box, lm)[0]


def one(rgb: np.ndarray, box: np.ndarray, lm: np.ndarray) -> FaceQuality:
    return assess_faces(rgb, box, lm)[0]


# --- real photos -------------------------------------------------------------------
def test_sharp_frontal_labelled_face_scores_high(sharp, labels) -> None:
    assert labels["faces"][SHARP]["faces"] == 1
    q = sharp[3]
    assert q.score >= 0.9 and q.reasons == ()
    assert q.size_px > 200 and q.sharpness > 0.8 and q.coverage == 1.0
    assert abs(q.yaw_deg) < 10 and abs(q.pitch_deg) < 15 and abs(q.roll_deg) < 10
    assert 0.2 < q.brightness < 0.8 and q.clipped_bright < 0.01
    assert q.score == pytest.approx(
        q.size_factor * q.sharpness_factor * q.pose_factor * q.exposure_factor)


def test_blurred_copy_scores_lower_and_is_blurry(sharp) -> None:
    rgb, box, lm, q0 = sharp
    side = float(box[0, 2] - box[0, 0])
    sigma = 2.0 * side / 112  # about 2 px of the 112 px crop the embedder sees
    q = one(cv2.GaussianBlur(rgb, (0, 0), sigma), box, lm)
    assert "blurry" in q.reasons
    assert q.sharpness < q0.sharpness - 0.3
    assert q.score < q0.score - 0.2
    # blur changes neither geometry nor exposure
    assert q.yaw_deg == q0.yaw_deg and q.size_px == q0.size_px
    assert "dark" not in q.reasons and "overexposed" not in q.reasons


def test_cfp_profile_has_larger_yaw_than_frontal_of_same_person(testdata, detect) -> None:
    qs = {}
    for view in ("frontal", "profile"):
        rgb = load_image(testdata / CFP_PERSON / view / "01.jpg").rgb
        qs[view] = one(rgb, *detect(rgb))
    front, prof = qs["frontal"], qs["profile"]
    assert abs(prof.yaw_deg) >= 30 > abs(front.yaw_deg) + 10
    assert "profile" in prof.reasons and "profile" not in front.reasons
    assert prof.pose_factor < 0.5 < front.pose_factor
    assert prof.score < front.score


def test_tiny_face_is_small(sharp) -> None:
    rgb, box, lm, q0 = sharp
    f = 24.0 / float(min(box[0, 2] - box[0, 0], box[0, 3] - box[0, 1]))
    small = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    fx, fy = small.shape[1] / rgb.shape[1], small.shape[0] / rgb.shape[0]
    q = one(small, box * [fx, fy, fx, fy], (lm + 0.5) * [fx, fy] - 0.5)
    assert q.size_px == pytest.approx(24, abs=0.5)
    assert q.reasons[0] == "small"
    assert q.size_factor < 0.85 and q.score < q0.score - 0.2
    # shrinking with INTER_AREA leaves the face sharp at its own resolution
    assert "blurry" not in q.reasons
    assert "small" in enrolment_problems(q, MIN_ENROL_QUALITY, MIN_ENROL_SIZE)


def test_darkened_copy_is_dark_not_blurry(sharp) -> None:
    rgb, box, lm, q0 = sharp
    dark = np.clip(rgb.astype(np.float32) * 0.2 + 0.5, 0, 255).astype(np.uint8)
    q = one(dark, box, lm)
    assert "dark" in q.reasons
    assert q.brightness < 0.3 * q0.brightness + 0.01
    assert q.exposure_factor < 0.85 and q.score < q0.score
    # sharpness is normalised by the crop's contrast: exposure does not read as blur
    assert "blurry" not in q.reasons
    assert q.sharpness == pytest.approx(q0.sharpness, abs=0.05)


def test_overexposed_copy_is_overexposed(sharp) -> None:
    rgb, box, lm, q0 = sharp
    bright = np.clip(rgb.astype(np.float32) * 2.5, 0, 255).astype(np.uint8)
    q = one(bright, box, lm)
    assert "overexposed" in q.reasons and q.clipped_bright > 0.3
    assert q.score < q0.score - 0.3


def test_faces_in_one_call_match_one_by_one(testdata, load_model) -> None:
    from facesocial.vision.detection import YuNetDetector, detect_faces

    rgb = load_image(testdata / "faces/group_obama_biden.jpg").rgb
    d = detect_faces(YuNetDetector(load_model("yunet")), rgb, score_threshold=0.6)
    assert len(d) >= 2
    together = assess_faces(rgb, d.boxes, d.landmarks)
    alone = [one(rgb, d.boxes[i:i + 1], d.landmarks[i:i + 1]) for i in range(len(d))]
    assert len(together) == len(d)
    for a, b in zip(together, alone, strict=True):
        assert a.reasons == b.reasons
        np.testing.assert_allclose(
            [a.score, a.sharpness, a.brightness, a.yaw_deg], [b.score, b.sharpness, b.brightness,
                                                              b.yaw_deg], rtol=1e-5, atol=1e-6)


def test_to_dict_is_json_ready(sharp) -> None:
    d = sharp[3].to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d["factors"]) == {"size", "sharpness", "pose", "exposure"}
    assert d["reasons"] == [] and 0.0 <= d["score"] <= 1.0


# --- geometry and edge cases ------------------------------------------------------
def test_head_pose_on_the_template() -> None:
    base = ARCFACE_TEMPLATE.copy()
    yaw, pitch, roll = head_pose(base[None])[0]
    assert abs(yaw) < 1 and abs(roll) < 1 and abs(pitch) < 12
    right = base.copy()
    right[2, 0] += 6  # nose towards the image's right
    assert head_pose(right[None])[0, 0] > 15
    up = base.copy()
    up[2, 1] -= 6  # nose higher between the eyes and the mouth
    assert head_pose(up[None])[0, 1] > pitch + 10
    a = np.radians(20)  # the whole face turned 20 deg clockwise on screen
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    turned = (base - 56) @ rot.T + 56
    y2, p2, r2 = head_pose(turned[None])[0]
    assert r2 == pytest.approx(20, abs=0.5)
    assert y2 == pytest.approx(yaw, abs=0.5) and p2 == pytest.approx(pitch, abs=0.5)


def test_face_outside_the_image_scores_zero() -> None:
    rgb = np.full((100, 100, 3), 128, np.uint8)
    lm = (ARCFACE_TEMPLATE + 500.0)[None]
    q = assess_faces(rgb, [[480, 480, 600, 620]], lm)[0]
    assert q.score == 0.0 and q.reasons == ("out_of_frame",) and q.coverage == 0.0


def test_input_validation() -> None:
    rgb = np.zeros((50, 50, 3), np.uint8)
    assert assess_faces(rgb, np.zeros((0, 4)), np.zeros((0, 5, 2))) == []
    with pytest.raises(InvalidInput):
        assess_faces(rgb, [[0, 0, 10, 10]], np.zeros((2, 5, 2)))
    with pytest.raises(InvalidInput):
        assess_faces(rgb, [[0, 0, 10, 10]], np.full((1, 5, 2), np.nan))
    with pytest.raises(InvalidInput):
        assess_faces(rgb, [[10, 10, 0, 0]], np.zeros((1, 5, 2)))
    with pytest.raises(InvalidImage):
        assess_faces(np.zeros((50, 50), np.uint8), [[0, 0, 10, 10]], np.zeros((1, 5, 2)))


# --- enrolment ----------------------------------------------------------------------
def test_enrolment_problems(sharp) -> None:
    q = sharp[3]
    assert enrolment_problems(q, MIN_ENROL_QUALITY, MIN_ENROL_SIZE) == []
    assert enrolment_problems(q, 0.999, 0) == ["low_quality"]  # no reason below 0.85
    assert enrolment_problems(q, 0.0, 10_000) == ["small"]
    bad = replace(q, score=0.3, size_px=40.0, reasons=("profile", "small"))
    assert enrolment_problems(bad, 0.6, 64) == ["small", "low_quality", "profile"]
    assert enrolment_problems(bad, 0.3, 40) == []  # thresholds are inclusive
    with pytest.raises(InvalidInput):
        enrolment_problems(q, 1.5, 64)
    with pytest.raises(InvalidInput):
        enrolment_problems(q, 0.5, -1)


def test_documented_bands_rank_reliability() -> None:
    """The CFP calibration table (module docstring): accuracy rises with the band."""
    acc = [band[3] for band in QUALITY_BANDS]
    assert len(acc) == 3 and acc == sorted(acc)
    assert QUALITY_BANDS[-1][0] <= MIN_ENROL_QUALITY
