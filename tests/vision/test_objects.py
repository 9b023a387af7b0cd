"""YOLOX-nano on the labelled phone photos, and its pure pre/post-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesocial.errors import InvalidImage, InvalidInput
from facesocial.vision.image import load_image
from facesocial.vision.objects import (
    CELL_PHONE,
    COCO_80,
    PERSON,
    PHONE_SCORE_THRESHOLD,
    ObjectDetector,
    decode,
    grid_cells,
    letterbox,
    per_class_nms,
)

FINDABLE_PHONES = ("phone/phone.png", "phone/phone_img.jpg")  # phone3.png scores ~0.07


@pytest.fixture(scope="module")
def detector(load_model) -> ObjectDetector:
    return ObjectDetector(load_model("yolox_nano"))


@pytest.fixture(scope="module")
def found(detector: ObjectDetector, labels: dict, testdata: Path) -> dict:
    return {name: detector.detect(load_image(testdata / name).rgb, PHONE_SCORE_THRESHOLD)
            for name in labels["phone"]}


def test_labels() -> None:
    assert len(COCO_80) == 80
    assert COCO_80[PERSON] == "person" and COCO_80[CELL_PHONE] == "cell phone"


def test_phones_found_where_the_model_can_see_them(found: dict) -> None:
    for name in FINDABLE_PHONES:
        phones = found[name].labelled("cell phone")
        assert phones, name
        assert phones[0].class_id == CELL_PHONE and phones[0].score >= PHONE_SCORE_THRESHOLD


def test_no_phone_in_the_no_phone_photos(found: dict, labels: dict) -> None:
    for name, entry in labels["phone"].items():
        if not entry["phone"]:
            assert found[name].labelled("cell phone") == [], name


def test_a_person_in_every_phone_photo(found: dict) -> None:
    for name, objects in found.items():
        persons = objects.labelled("person")
        assert persons and persons[0].score > 0.6, name
        assert objects.model.id == "yolox_nano"


def test_boxes_inside_the_image_and_best_first(found: dict, testdata: Path) -> None:
    for name, objects in found.items():
        h, w = load_image(testdata / name).rgb.shape[:2]
        scores = [o.score for o in objects.items]
        assert scores == sorted(scores, reverse=True)
        for o in objects.items:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (name, o)


def test_phone_box_is_at_the_ear(found: dict) -> None:
    # phone.png (192x206): a person holding a phone to the ear, right of the head
    x1, y1, x2, y2 = found["phone/phone.png"].labelled("cell phone")[0].box
    assert 130 < (x1 + x2) / 2 < 170 and 70 < (y1 + y2) / 2 < 110


def test_upscaling_small_images_matters(load_model, testdata: Path) -> None:
    rgb = load_image(testdata / "phone/phone.png").rgb  # 192x206: letterbox scales it up 2x
    native = ObjectDetector(load_model("yolox_nano"), upscale=False)
    assert native.detect(rgb, PHONE_SCORE_THRESHOLD).labelled("cell phone") == []


def test_letterbox_top_left_bgr_pad_114() -> None:
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[..., 0] = 10  # red
    img, r = letterbox(rgb, 416)
    assert img.shape == (416, 416, 3) and r == pytest.approx(416 / 200)
    assert tuple(img[0, 0]) == (0, 0, 10)  # BGR
    assert (img[208:] == 114).all() and (img[:207] != 114).all()
    small, r1 = letterbox(rgb, 416, upscale=False)
    assert r1 == 1.0 and (small[:100, :200, 2] == 10).all() and (small[100:] == 114).all()


def test_grid_decoding() -> None:
    cells, strides = grid_cells(416)
    assert cells.shape == (52 * 52 + 26 * 26 + 13 * 13, 2) == (3549, 2)
    assert tuple(cells[53]) == (1, 1) and strides[53, 0] == 8
    raw = np.zeros((3549, 85), np.float32)
    raw[:, 4] = 0.5
    raw[:, 5 + CELL_PHONE] = 0.8
    boxes, scores = decode(raw, cells, strides)
    i = 52 * 52 + 26 * 3 + 2  # stride 16, cell x=2, y=3: centre (32, 48), size 16
    np.testing.assert_allclose(boxes[i], [24, 40, 40, 56])
    assert scores.shape == (3549, 80) and scores[i, CELL_PHONE] == pytest.approx(0.4)


def test_per_class_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 67, 0])
    assert per_class_nms(boxes, scores, classes, 0.45).tolist() == [0, 2, 3]
    assert per_class_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.45).size == 0


def test_caller_mistakes_are_typed(detector: ObjectDetector) -> None:
    with pytest.raises(InvalidImage):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidInput):
        detector.detect(np.zeros((10, 10, 3), np.uint8), score_threshold=2.0)
