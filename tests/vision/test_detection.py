"""Face detection: pure pre/post-processing, pass planning and tiling, real models.

The first part needs no model file: decoders run on synthetic tensors and the
planning/tiling logic runs with a stand-in detector that reports bright
squares. The second part runs the real detectors on the labelled photos.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facesocial.errors import InvalidImage, InvalidInput
from facesocial.results import DetectionInfo, Detections
from facesocial.runtime import LoadedModel, ModelRef
from facesocial.vision import detection as det
from facesocial.vision.boxes import iou_matrix
from facesocial.vision.detection import (
    DlibHogDetector,
    FaceCandidates,
    FaceDetector,
    SCRFDDetector,
    YoloV8FaceDetector,
    YuNetDetector,
    calibrate_scores,
    decode_scrfd,
    decode_yolov8,
    decode_yunet,
    detect_faces,
    hog_margin_to_score,
    hog_score_to_margin,
    landmarks_from_shape68,
    letterbox,
    plan_detection,
    preprocess_scrfd,
    preprocess_yolov8,
    preprocess_yunet,
    raw_threshold,
    tile_grid,
)
from facesocial.vision.image import load_image

ONNX_DETECTORS = {"yunet": YuNetDetector, "scrfd_2.5g": SCRFDDetector,
                  "yolov8_face_lite_t": YoloV8FaceDetector}


# =========================================================================== pure functions
def test_preprocess_yunet_is_raw_bgr_padded_right_bottom() -> None:
    rgb = np.zeros((40, 70, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 10  # red image
    t = preprocess_yunet(rgb)
    assert t.shape == (1, 3, 64, 96) and t.dtype == np.float32
    assert t[0, 2, 0, 0] == 200 and t[0, 0, 0, 0] == 10  # channel 0 is blue
    assert not t[:, :, 40:, :].any() and not t[:, :, :, 70:].any()


def test_preprocess_scrfd_normalises_rgb() -> None:
    rgb = np.full((32, 32, 3), 255, np.uint8)
    rgb[..., 1] = 0
    t = preprocess_scrfd(rgb)
    assert t.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(t[0, :, 0, 0], [127.5 / 128, -127.5 / 128, 127.5 / 128])


def test_letterbox_keeps_aspect_and_pads_right_bottom() -> None:
    rgb = np.full((100, 200, 3), 50, np.uint8)
    canvas, scale = letterbox(rgb, 640)
    assert scale == pytest.approx(3.2) and canvas.shape == (640, 640, 3)
    assert canvas[:320, :].min() == 50 and not canvas[320:, :].any()
    tensor, scale2 = preprocess_yolov8(rgb)
    assert tensor.shape == (1, 3, 640, 640) and scale2 == scale
    assert tensor.max() == pytest.approx(50 / 255)


def _yunet_outputs(h: int, w: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for s in (8, 16, 32):
        n = (h // s) * (w // s)
        out.update({f"cls_{s}": np.zeros((1, n, 1), np.float32),
                    f"obj_{s}": np.zeros((1, n, 1), np.float32),
                    f"bbox_{s}": np.zeros((1, n, 4), np.float32),
                    f"kps_{s}": np.zeros((1, n, 10), np.float32)})
    return out


def test_decode_yunet_one_anchor() -> None:
    out = _yunet_outputs(64, 64)
    i = 1 * 4 + 2  # stride 16: 4 x 4 cells; cell x=2, y=1
    out["cls_16"][0, i, 0], out["obj_16"][0, i, 0] = 0.81, 1.0
    out["bbox_16"][0, i] = [0.5, 0.25, math.log(2), math.log(3)]
    kps = np.linspace(-0.5, 0.5, 10, dtype=np.float32)
    out["kps_16"][0, i] = kps
    found = decode_yunet(out, (64, 64), score_threshold=0.5)
    assert len(found) == 1
    assert found.scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(found.boxes[0], [24, -4, 56, 44], atol=1e-4)
    expected = (np.array([2, 1], np.float32) + kps.reshape(5, 2)) * 16
    np.testing.assert_allclose(found.landmarks[0], expected, atol=1e-4)
    assert len(decode_yunet(out, (64, 64), score_threshold=0.95)) == 0


def _scrfd_outputs(h: int, w: int, anchors: int = 2) -> list[np.ndarray]:
    counts = [(h // s) * (w // s) * anchors for s in (8, 16, 32)]
    return ([np.zeros((n, 1), np.float32) for n in counts]
            + [np.zeros((n, 4), np.float32) for n in counts]
            + [np.zeros((n, 10), np.float32) for n in counts])


def test_decode_scrfd_one_anchor_whatever_the_output_order() -> None:
    out = _scrfd_outputs(64, 64)
    i = (2 * 4 + 3) * 2 + 1  # stride 16: cell x=3, y=2, second anchor
    out[1][i, 0] = 0.8
    out[4][i] = [1, 2, 3, 4]
    out[7][i] = np.tile([0.5, -0.5], 5)
    expected_box = [48 - 16, 32 - 32, 48 + 48, 32 + 64]
    for outputs in (out, out[::-1], [out[k] for k in (4, 0, 8, 2, 6, 1, 3, 7, 5)]):
        found = decode_scrfd(outputs, (64, 64), score_threshold=0.5)
        assert len(found) == 1 and found.scores[0] == pytest.approx(0.8)
        np.testing.assert_allclose(found.boxes[0], expected_box)
        np.testing.assert_allclose(found.landmarks[0], np.tile([[56, 24]], (5, 1)))


def test_decode_yolov8_distribution_focal_loss() -> None:
    maps = [np.zeros((1, 80, n, n), np.float32) for n in (80, 40, 20)]
    for m in maps:
        m[0, 64] = -10.0  # background logit everywhere
    y, x = 7, 5
    maps[1][0, 64, y, x] = 3.0
    for side, dist in enumerate((2, 3, 4, 5)):
        maps[1][0, side * 16 + dist, y, x] = 30.0  # one-hot bins -> expected distance
    maps[1][0, 65:80, y, x] = np.tile([0.25, 0.5, 0.0], 5)
    found = decode_yolov8(maps[::-1], score_threshold=0.5)  # order does not matter
    assert len(found) == 1
    assert found.scores[0] == pytest.approx(1 / (1 + math.exp(-3)), rel=1e-5)
    np.testing.assert_allclose(found.boxes[0], [56, 72, 152, 200], atol=1e-3)
    np.testing.assert_allclose(found.landmarks[0], np.tile([[88, 128]], (5, 1)), atol=1e-3)


def test_score_calibration_round_trip() -> None:
    raw = np.array([0.1, 0.5, 0.72, 0.99])
    assert calibrate_scores(raw, 0.0) == pytest.approx(raw, abs=1e-6)
    shifted = calibrate_scores(raw, det.YUNET_SCORE_SHIFT)
    assert np.all(np.diff(shifted) > 0)  # monotone
    assert shifted[2] == pytest.approx(0.6, abs=1e-3)
    assert raw_threshold(0.6, det.YUNET_SCORE_SHIFT) == pytest.approx(0.72, abs=1e-3)
    assert raw_threshold(0.6, det.YOLOV8_SCORE_SHIFT) == pytest.approx(0.4, abs=1e-3)


def test_hog_score_mapping() -> None:
    assert float(hog_margin_to_score(0.0)) == pytest.approx(0.6)
    assert float(hog_margin_to_score(1.0)) > 0.95
    for s in (0.1, 0.5, 0.6, 0.9):
        assert float(hog_margin_to_score(hog_score_to_margin(s))) == pytest.approx(s)


def test_landmarks_from_shape68() -> None:
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = [10, 20]
    pts[42:48] = [30, 20]
    pts[36] = [4, 20]  # the eye centre is the mean of its six points
    pts[30], pts[48], pts[54] = [20, 30], [12, 40], [28, 40]
    five = landmarks_from_shape68(pts)
    np.testing.assert_allclose(five, [[9, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    assert landmarks_from_shape68(np.stack([pts, pts])).shape == (2, 5, 2)


def test_tile_grid_covers_the_image_with_the_overlap() -> None:
    tiles = tile_grid(1000, 700, 300, 64)
    assert tiles[:, 0].min() == 0 and tiles[:, 2].max() == 1000
    assert tiles[:, 1].min() == 0 and tiles[:, 3].max() == 700
    assert np.all(tiles[:, 2] - tiles[:, 0] == 300) and np.all(tiles[:, 3] - tiles[:, 1] == 300)
    xs = np.unique(tiles[:, 0])
    assert np.all(np.diff(xs) <= 300 - 64)
    assert tile_grid(200, 100, 300, 64).tolist() == [[0, 0, 200, 100]]
    with pytest.raises(ValueError):
        tile_grid(100, 100, 50, 50)


# =========================================================================== planning & tiling
class SquareDetector:
    """A stand-in detector: every bright blob is a 'face' with box = its bounding box.

    Like a real detector it only sees what is in the image it is given: a square
    cut by a tile border comes back as a partial box touching that border.
    """

    max_input_side: int | None = None

    def __init__(self, min_face: float = 4.0) -> None:
        self.min_face = min_face
        self.inputs: list[tuple[int, int]] = []

    @property
    def ref(self) -> ModelRef:
        return ModelRef("squares", "test")

    def min_face_px(self, width: int, height: int) -> float:
        return self.min_face

    def candidates(self, rgb: np.ndarray, score_threshold: float) -> FaceCandidates:
        self.inputs.append((rgb.shape[1], rgb.shape[0]))
        mask = (rgb[:, :, 0] > 127).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        x, y, w, h = (stats[1:, k].astype(np.float32) for k in range(4))
        keep = np.minimum(w, h) >= self.min_face
        boxes = np.stack([x, y, x + w, y + h], axis=1)[keep]
        rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
        size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        landmarks = boxes[:, None, :2] + rel[None] * size
        return FaceCandidates(boxes, np.full(len(boxes), 0.9, np.float32),
                              landmarks.astype(np.float32))


def _canvas_with_squares(width: int, height: int,
                         squares: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((height, width, 3), np.uint8)
    for x, y, s in squares:
        img[y:y + s, x:x + s] = 255
    return img, np.array([[x, y, x + s, y + s] for x, y, s in squares], np.float32)


def _inner_edges(tiles: np.ndarray, width: int, height: int) -> tuple[list[int], list[int]]:
    xs = sorted({int(v) for v in tiles[:, 0] if v > 0} | {int(v) for v in tiles[:, 2]
                                                          if v < width})
    ys = sorted({int(v) for v in tiles[:, 1] if v > 0} | {int(v) for v in tiles[:, 3]
                                                          if v < height})
    return xs, ys


def test_plan_small_image_is_one_pass_at_native_size() -> None:
    plan = plan_detection(SquareDetector(16), 426, 240)
    assert len(plan.levels) == 1 and plan.scale == 1.0 and plan.tile_count == 0
    assert plan.min_detectable == 16


def test_plan_large_image_adds_tiles_down_to_native_resolution() -> None:
    plan = plan_detection(SquareDetector(16), 1024, 768)
    assert plan.scale == pytest.approx(0.625)
    assert plan.levels[-1].scale == pytest.approx(1.0) and plan.tile_count >= 2
    assert plan.min_detectable == pytest.approx(16)
    full_min = 16 / 0.625
    tiled = plan.levels[1]
    assert tiled.max_face == pytest.approx(det.FACE_MARGIN * full_min)
    xs = np.unique(tiled.tiles[:, 0])
    overlap = (tiled.tiles[0, 2] - tiled.tiles[0, 0]) - np.diff(xs).max()
    assert overlap >= tiled.max_face * (1 + 2 * det.EDGE_FRAC) + 2 * det.EDGE_PX


def test_plan_pyramid_levels_are_spaced_and_bounded() -> None:
    plan = plan_detection(SquareDetector(16), 4000, 3000)
    scales = [level.scale for level in plan.levels]
    assert scales[0] == pytest.approx(0.16) and scales[-1] == pytest.approx(1.0)
    assert all(b / a <= det.LEVEL_RATIO + 1e-6 for a, b in pairwise(scales))
    assert plan.levels[0].max_face == math.inf
    assert all(a.max_face > b.max_face for a, b in pairwise(plan.levels))


def test_plan_follows_min_face_size() -> None:
    d = SquareDetector(16)
    finer = plan_detection(d, 1024, 768, min_face_size=8)
    assert finer.levels[-1].scale == pytest.approx(2.0) and finer.min_detectable == 8
    capped = plan_detection(d, 1024, 768, min_face_size=2)  # at most MAX_UPSCALE: honest
    assert capped.levels[-1].scale == det.MAX_UPSCALE and capped.min_detectable == 8
    coarse = plan_detection(d, 1024, 768, min_face_size=100)
    assert coarse.tile_count == 0 and coarse.scale == pytest.approx(0.625)
    small = plan_detection(d, 426, 240, min_face_size=12)  # small image: enlarge, no tiles
    assert small.tile_count == 0 and small.scale == pytest.approx(16 / 12)
    beyond = plan_detection(d, 426, 240, min_face_size=8)  # past max_side: tiles again
    assert beyond.scale == pytest.approx(640 / 426) and beyond.levels[-1].scale == 2.0


def test_plan_skips_tiles_that_gain_little_unless_asked() -> None:
    d = SquareDetector(16)
    slight = plan_detection(d, 800, 600)  # full pass finds 20 px faces: good enough
    assert slight.tile_count == 0 and slight.min_detectable == pytest.approx(20)
    asked = plan_detection(d, 800, 600, min_face_size=18)
    assert asked.tile_count > 0 and asked.min_detectable == pytest.approx(18)


def test_plan_without_tiling_reports_what_it_loses() -> None:
    plan = plan_detection(SquareDetector(16), 1024, 768, tiling=False)
    assert plan.tile_count == 0 and plan.min_detectable == pytest.approx(16 / 0.625)


def test_plan_respects_a_fixed_input_size() -> None:
    d = SquareDetector(16)
    d.max_input_side = 640
    assert plan_detection(d, 2000, 1000, max_side=1024).scale == pytest.approx(0.32)


def test_cut_squares_are_reported_once() -> None:
    d = SquareDetector(4)
    w, h = 3000, 2000
    plan = plan_detection(d, w, h)
    squares: list[tuple[int, int, int]] = []
    for k, level in enumerate(plan.levels[1:]):  # squares centred on inner tile borders
        xs, ys = _inner_edges(level.tiles, w, h)
        size = int(min(level.max_face, 40)) - 2
        squares += [(x - size // 2, 150 + 400 * k, size) for x in xs[:4]]
        squares += [(150 + 400 * k + 200, y - size // 2, size) for y in ys[:3]]
    squares += [(2700, 1700, 12), (60, 1900, 9)]  # plus two in tile interiors
    img, truth = _canvas_with_squares(w, h, squares)
    found = detect_faces(d, img)
    assert found.info is not None and found.info.tiles == plan.tile_count
    iou = iou_matrix(truth, found.boxes)
    assert len(found) == len(truth), "a square was lost or duplicated at a tile border"
    assert np.all(iou.max(axis=1) > 0.6)  # coarse levels see small squares blurred
    assert np.all((iou > 0.2).sum(axis=1) == 1)
    without = detect_faces(d, img, tiling=False)
    assert len(without) < len(truth)


def test_min_face_size_and_max_faces_keep_the_largest_first() -> None:
    img, _ = _canvas_with_squares(400, 300, [(10, 10, 10), (100, 10, 40), (200, 10, 20),
                                             (300, 10, 30)])
    d = SquareDetector(4)
    all_found = detect_faces(d, img)
    sides = (all_found.boxes[:, 2] - all_found.boxes[:, 0]).tolist()
    assert sides == [40, 30, 20, 10]
    assert (detect_faces(d, img, min_face_size=15).boxes[:, 2]
            - detect_faces(d, img, min_face_size=15).boxes[:, 0]).tolist() == [40, 30, 20]
    two = detect_faces(d, img, max_faces=2)
    assert (two.boxes[:, 2] - two.boxes[:, 0]).tolist() == [40, 30]
    assert isinstance(two, Detections) and two.model == d.ref


def test_boxes_are_clipped_landmarks_are_not() -> None:
    class Fixed(SquareDetector):  # one face half outside the image's top-left corner
        def candidates(self, rgb: np.ndarray, score_threshold: float) -> FaceCandidates:
            lm = np.array([[[-3, 10], [20, 10], [8, 20], [0, 30], [18, 30]]], np.float32)
            return FaceCandidates(np.array([[-10, -5, 40, 50]], np.float32),
                                  np.array([0.9], np.float32), lm)

    found = detect_faces(Fixed(), np.zeros((100, 100, 3), np.uint8))
    np.testing.assert_array_equal(found.boxes, [[0, 0, 40, 50]])
    assert found.landmarks[0, 0, 0] == -3


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3)),
                                 np.zeros((10, 10, 4), np.uint8), np.zeros((0, 5, 3), np.uint8),
                                 "not an image"])
def test_bad_images_raise_invalid_image(bad: object) -> None:
    with pytest.raises(InvalidImage):
        detect_faces(SquareDetector(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", [{"score_threshold": 1.5}, {"nms_iou": 0}, {"max_side": 8},
                                    {"tile_size": 10}, {"min_face_size": -1},
                                    {"max_faces": -2}])
def test_bad_options_raise_invalid_input(option: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        detect_faces(SquareDetector(), np.zeros((50, 50, 3), np.uint8), **option)


# =========================================================================== real models
FACE_SOURCES = ("faces/obama_1.jpg", "faces/biden_1.jpg", "faces/kit_harington_1.jpg",
                "faces/rose_leslie_1.jpg", "faces/alex_lacamoire_1.jpg",
                "faces/lin_manuel_miranda.png")


@pytest.fixture(scope="module")
def detector(load_model: Callable[[str], LoadedModel]) -> Callable[[str], FaceDetector]:
    @cache
    def _get(model_id: str) -> FaceDetector:
        return ONNX_DETECTORS[model_id](load_model(model_id))
    return _get


@pytest.fixture(scope="module")
def dlib_hog(store, catalog) -> DlibHogDetector:  # type: ignore[no-untyped-def]
    return DlibHogDetector(store.path("dlib_shape68"), catalog.get("dlib_hog").version)


@pytest.fixture(scope="module")
def photos(testdata: Path, labels: dict) -> dict[str, np.ndarray]:
    return {name: load_image(testdata / name).rgb for name in labels["faces"]}


@pytest.fixture(scope="module")
def detected(detector, photos) -> Callable[[str], dict[str, Detections]]:  # type: ignore[no-untyped-def]
    """Default-settings detections of every labelled photo, once per detector."""
    @cache
    def _run(model_id: str) -> dict[str, Detections]:
        return {name: detect_faces(detector(model_id), rgb) for name, rgb in photos.items()}
    return _run


def _info(found: Detections) -> DetectionInfo:
    assert found.info is not None
    return found.info


def _assert_landmarks_sane(found: Detections, where: str) -> None:
    lm = found.landmarks
    eyes_y, mouth_y = lm[:, :2, 1].max(axis=1), lm[:, 3:, 1].min(axis=1)
    assert np.all(eyes_y < mouth_y), f"{where}: eyes not above the mouth"
    assert np.all(lm[:, 0, 0] < lm[:, 1, 0]), f"{where}: right eye not on the image's left"
    assert np.all(lm[:, 3, 0] < lm[:, 4, 0]), f"{where}: mouth corners swapped"
    inside = (lm[:, 2, 0] > found.boxes[:, 0]) & (lm[:, 2, 0] < found.boxes[:, 2])
    assert np.all(inside), f"{where}: nose tip outside the box"


def test_wrong_model_family_is_rejected(load_model: Callable[[str], LoadedModel]) -> None:
    with pytest.raises(InvalidInput):
        SCRFDDetector(load_model("yunet"))


@pytest.mark.parametrize("model_id", list(ONNX_DETECTORS))
def test_exact_face_counts_on_labelled_photos(model_id: str, detected, labels: dict) -> None:  # type: ignore[no-untyped-def]
    results = detected(model_id)
    wrong = {name: (len(results[name]), want["faces"]) for name, want in labels["faces"].items()
             if len(results[name]) != want["faces"]}
    assert not wrong, f"{model_id}: (found, expected) {wrong}"
    for found in results.values():
        assert found.model.id == model_id and found.info is not None
        assert found.boxes.dtype == np.float32 and np.all(found.scores >= 0.6)


@pytest.mark.parametrize("model_id", list(ONNX_DETECTORS))
def test_landmarks_are_sane(model_id: str, detected) -> None:  # type: ignore[no-untyped-def]
    for name, found in detected(model_id).items():
        _assert_landmarks_sane(found, f"{model_id} {name}")


def test_named_hard_cases_with_yunet(detected, photos) -> None:  # type: ignore[no-untyped-def]
    results = detected("yunet")
    small = results["faces/obama_240p.jpg"]
    assert len(small) == 1 and _info(small).scale == 1.0 and _info(small).tiles == 0
    assert 40 < small.boxes[0, 2] - small.boxes[0, 0] < 70  # the face is about 53 px wide
    assert len(results["faces/obama_partial_face.jpg"]) == 1
    group = results["faces/group_obama_biden.jpg"]
    width = photos["faces/group_obama_biden.jpg"].shape[1]
    assert group.boxes[:, 2].max() > 0.75 * width, "the child at the right edge is missing"


def test_detection_info_reports_the_passes(detected, photos) -> None:  # type: ignore[no-untyped-def]
    found = detected("yunet")["faces/obama_3.jpg"]
    h, w = photos["faces/obama_3.jpg"].shape[:2]
    info = _info(found)
    assert info.input_size == (w, h)
    assert info.scale == pytest.approx(640 / max(w, h))
    assert info.tiles > 0 and info.min_detectable_face == pytest.approx(16)
    assert info.ms > 0


def test_yunet_boxes_agree_with_opencv(detector, photos, mirror: Path) -> None:  # type: ignore[no-untyped-def]
    """Cross-check of our decoding against OpenCV's own YuNet on the same input."""
    yunet = detector("yunet")
    for name in ("faces/obama_240p.jpg", "faces/group_obama_biden.jpg",
                 "faces/group_kit_rose.jpg", "faces/obama_partial_face.jpg",
                 "faces/kit_harington_2.jpg"):
        rgb = photos[name]
        ours = detect_faces(yunet, rgb, tiling=False)
        h, w = rgb.shape[:2]
        scale = _info(ours).scale
        size = (round(w * scale), round(h * scale))
        small = rgb if scale == 1 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        ref = cv2.FaceDetectorYN.create(str(mirror / "face_detection_yunet.onnx"), "", size,
                                        0.5, 0.3, 5000)
        _, faces = ref.detect(np.ascontiguousarray(small[:, :, ::-1]))
        assert faces is not None, name
        theirs = np.asarray(faces[:, :4], np.float32) / scale
        theirs[:, 2:] += theirs[:, :2]
        iou = iou_matrix(ours.boxes, theirs)
        assert len(ours) and np.all(iou.max(axis=1) > 0.9), f"{name}: {iou}"


def test_dlib_hog_finds_the_single_faces(dlib_hog, photos, labels: dict) -> None:  # type: ignore[no-untyped-def]
    # One full-image pass: the faces are large, and tiling is covered above.
    for name, want in labels["faces"].items():
        if want["faces"] != 1:
            continue
        found = detect_faces(dlib_hog, photos[name], tiling=False)
        assert len(found) == 1, f"{name}: {len(found)} faces"
        assert found.model.id == "dlib_hog" and 0.6 <= found.scores[0] <= 1.0
        _assert_landmarks_sane(found, f"dlib {name}")


# --------------------------------------------------------------------------- tiling, real faces
def _face_patches(detector: FaceDetector, photos: dict[str, np.ndarray]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(patch, face box inside the patch) around the face of each source photo."""
    patches = []
    for name in FACE_SOURCES:
        rgb = photos[name]
        box = detect_faces(detector, rgb).boxes[0]
        cx, cy = (box[:2] + box[2:]) / 2
        half = 0.8 * max(box[2] - box[0], box[3] - box[1])
        x1, y1 = int(max(0, cx - half)), int(max(0, cy - half))
        x2, y2 = int(min(rgb.shape[1], cx + half)), int(min(rgb.shape[0], cy + half))
        patches.append((rgb[y1:y2, x1:x2], box - np.array([x1, y1, x1, y1], np.float32)))
    return patches


def _paste_faces(canvas: np.ndarray, patches: list[tuple[np.ndarray, np.ndarray]],
                 centres: list[tuple[int, int]], sizes: list[int]) -> np.ndarray:
    """Paste a face of width ``size`` centred at each centre; returns the true boxes."""
    truth = []
    for k, ((cx, cy), size) in enumerate(zip(centres, sizes, strict=True)):
        patch, box = patches[k % len(patches)]
        s = size / (box[2] - box[0])
        small = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        fb = box * s
        x0, y0 = int(cx - (fb[0] + fb[2]) / 2), int(cy - (fb[1] + fb[3]) / 2)
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        truth.append(fb + np.array([x0, y0, x0, y0], np.float32))
    return np.array(truth, np.float32)


def _crosses_inner_edge(box: np.ndarray, tiles: np.ndarray, width: int, height: int) -> bool:
    xs, ys = _inner_edges(tiles, width, height)
    return any(box[0] < x < box[2] for x in xs) or any(box[1] < y < box[3] for y in ys)


def _spread(points: list[tuple[int, int]], min_dist: float) -> list[tuple[int, int]]:
    kept: list[tuple[int, int]] = []
    for p in points:
        if all(math.dist(p, q) >= min_dist for q in kept):
            kept.append(p)
    return kept


def test_tiles_find_small_faces_once_on_a_large_canvas(detector, photos) -> None:  # type: ignore[no-untyped-def]
    yunet = detector("yunet")
    w, h = 4000, 3000
    rng = np.random.default_rng(3)
    noise = rng.normal(128, 12, (h // 8, w // 8, 3))
    canvas = np.clip(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)
    canvas = canvas.astype(np.uint8)
    plan = plan_detection(yunet, w, h)
    # Faces centred on inner tile borders of every tiled level, plus a few inside tiles.
    on_borders: list[tuple[int, int]] = []
    for level in plan.levels[1:]:
        xs, ys = _inner_edges(level.tiles, w, h)
        on_borders += [(x, int(rng.integers(300, h - 300))) for x in xs]
        on_borders += [(int(rng.integers(300, w - 300)), y) for y in ys]
    inside = [(int(rng.integers(200, w - 200)), int(rng.integers(200, h - 200)))
              for _ in range(8)]
    centres = _spread(inside[:4] + on_borders, 200)[:24]
    sizes = [int(v) for v in rng.integers(40, 61, len(centres))]
    truth = _paste_faces(canvas, _face_patches(yunet, photos), centres, sizes)
    crossing = [any(_crosses_inner_edge(box, level.tiles, w, h) for level in plan.levels[1:])
                for box in truth]
    assert sum(crossing) >= 12, "the test should put many faces across tile borders"

    without_tiles = detect_faces(yunet, canvas, tiling=False)
    assert len(without_tiles) < len(truth) / 2, "the downscaled pass alone should miss most"
    assert _info(without_tiles).min_detectable_face > 60

    found = detect_faces(yunet, canvas)
    assert _info(found).tiles == plan.tile_count > 0
    assert _info(found).min_detectable_face <= 20
    iou = iou_matrix(truth, found.boxes)
    assert np.all(iou.max(axis=1) > 0.5), f"missed faces at {truth[iou.max(axis=1) <= 0.5]}"
    assert np.all((iou > 0.2).sum(axis=1) == 1), "a face was reported twice"
    assert len(found) == len(truth), f"{len(found) - len(truth)} false detections"
