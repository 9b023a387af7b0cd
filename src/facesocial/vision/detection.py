"""Face detectors (YuNet, SCRFD, YOLOv8-face, dlib HOG) and one entry point.

Every ONNX family is split into a pure-numpy ``preprocess_*`` function, a
pure-numpy ``decode_*`` function (vectorised over all anchors) and a thin
class that only runs the session between them. A detector returns
:class:`FaceCandidates` (scored, not yet suppressed) in the pixels of the
image it was given.

:func:`detect_faces` plans the passes (:func:`plan_detection`): one
full-image pass on a copy no longer than ``max_side`` and, when that copy is
so small that faces of the wanted size would be missed, a pyramid of tiled
levels down to the scale at which they become visible (native resolution by
default). It maps every candidate back to the original image, runs ONE
non-maximum suppression over all passes and reports the full-pass scale, the
tile count and the smallest face it can find in
:class:`~facesocial.results.DetectionInfo`.

Scores are on a common scale (see ``_OnnxDetector.score_shift`` and
:func:`hog_margin_to_score`) so one threshold means about the same for every
family. Landmark order everywhere: right eye, left eye, nose tip, right mouth
corner, left mouth corner *as seen in the image* (the first point is the eye on
the image's left).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from facesocial.errors import InvalidInput, ModelLoadFailed, ModelNotInstalled
from facesocial.results import DetectionInfo, Detections
from facesocial.runtime import LoadedModel, ModelRef
from facesocial.vision.boxes import areas, clip_boxes, nms, short_sides
from facesocial.vision.image import check_rgb

log = logging.getLogger(__name__)

__all__ = [
    "FaceCandidates", "FaceDetector", "YuNetDetector", "SCRFDDetector", "YoloV8FaceDetector",
    "DlibHogDetector", "DetectionPlan", "PyramidLevel", "detect_faces", "plan_detection",
    "tile_grid", "calibrate_scores", "raw_threshold", "preprocess_yunet", "decode_yunet",
    "preprocess_scrfd", "decode_scrfd", "letterbox", "preprocess_yolov8", "decode_yolov8",
    "hog_margin_to_score", "hog_score_to_margin", "landmarks_from_shape68",
]

STRIDES = (8, 16, 32)
# Score calibration (see _OnnxDetector.score_shift), as the raw score that the
# default threshold 0.6 stands for: YuNet 0.72 (at raw 0.6 it finds faces in
# blurred backgrounds and 15% false detections on the WIDER dev crowds),
# SCRFD 0.6 (already about 1% false there; at raw 0.5 a labelled photo gets a
# false face) and YOLOv8-face 0.4 (at raw 0.6 it loses a tenth of the faces).
# Fitted on 5 dev photos (about 150 faces): coarse, revisit with more data.
YUNET_SCORE_SHIFT = -0.539  # logit(0.6) - logit(0.72)
SCRFD_SCORE_SHIFT = 0.0
YOLOV8_SCORE_SHIFT = 0.811  # logit(0.6) - logit(0.4)


# --------------------------------------------------------------------------- candidates
@dataclass(frozen=True, slots=True)
class FaceCandidates:
    """Scored face candidates before suppression: struct of float32 arrays."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2
    scores: np.ndarray  # (n,)
    landmarks: np.ndarray  # (n, 5, 2)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> FaceCandidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0, 5, 2), np.float32))

    @classmethod
    def concat(cls, parts: Sequence[FaceCandidates]) -> FaceCandidates:
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]).astype(np.float32),
                   np.concatenate([p.scores for p in parts]).astype(np.float32),
                   np.concatenate([p.landmarks for p in parts]).astype(np.float32))

    def select(self, index: np.ndarray) -> FaceCandidates:
        return FaceCandidates(self.boxes[index], self.scores[index], self.landmarks[index])

    def with_scores(self, scores: np.ndarray) -> FaceCandidates:
        return FaceCandidates(self.boxes, scores.astype(np.float32), self.landmarks)

    def mapped(self, scale: float = 1.0,
               offset: tuple[float, float] = (0.0, 0.0)) -> FaceCandidates:
        """Coordinates divided by ``scale`` then shifted by ``offset`` (x, y)."""
        dx, dy = offset
        boxes = self.boxes / scale + np.array([dx, dy, dx, dy], np.float32)
        landmarks = self.landmarks / scale + np.array([dx, dy], np.float32)
        return FaceCandidates(boxes.astype(np.float32), self.scores,
                              landmarks.astype(np.float32))


class FaceDetector(Protocol):
    """What :func:`detect_faces` needs from a detector."""

    @property
    def ref(self) -> ModelRef: ...

    @property
    def max_input_side(self) -> int | None:
        """Largest image side the detector analyses without downscaling (None = any)."""
        ...

    def min_face_px(self, width: int, height: int) -> float:
        """Smallest face side (pixels of a ``width`` x ``height`` input) it reliably finds."""
        ...

    def candidates(self, rgb: np.ndarray, score_threshold: float) -> FaceCandidates:
        """Candidates with score >= threshold, in ``rgb``'s pixels, not suppressed."""
        ...


# --------------------------------------------------------------------------- numpy helpers
def _grid(height: int, width: int) -> np.ndarray:
    """``(height * width, 2)`` float32 (x, y) cell indices in row-major order."""
    ys, xs = np.mgrid[:height, :width]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _pad_to_multiple(img: np.ndarray, multiple: int, value: float = 0) -> np.ndarray:
    """Pad right and bottom so both sides are multiples of ``multiple`` (no stretching)."""
    h, w = img.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return img
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=value)


def _to_nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def _check_model(model: LoadedModel, family: str) -> None:
    if model.spec.family != family:
        raise InvalidInput(f"model '{model.spec.id}' is a '{model.spec.family}' model, "
                           f"not '{family}'", model=model.spec.id, family=model.spec.family)


def calibrate_scores(raw: np.ndarray | float, logit_shift: float) -> np.ndarray:
    """Raw detector scores -> the common scale: sigmoid(logit(raw) + logit_shift)."""
    p = np.clip(np.asarray(raw, np.float64), 1e-7, 1 - 1e-7)
    return _sigmoid(np.log(p / (1 - p)) + logit_shift).astype(np.float32)


def raw_threshold(threshold: float, logit_shift: float) -> float:
    """The raw score that :func:`calibrate_scores` maps to ``threshold``."""
    return float(calibrate_scores(threshold, -logit_shift))


class _OnnxDetector:
    """Shared plumbing of the ONNX detectors: model check, score scale, size limits.

    Subclasses implement ``_raw_candidates`` (raw model scores); ``candidates``
    thresholds and reports scores on the common scale (see ``score_shift``).
    """

    family = ""
    max_input_side: int | None = None
    # Smallest face side (detector px) found reliably. On the WIDER dev faces
    # (crowds, blur) recall stops rising from about 16 px for all three ONNX
    # families; clean frontal faces pasted on noise are found from about 12 px
    # (96%; 10 px: about half).
    min_face: float = 16.0
    # Logit shift putting the family's raw scores on the common scale, fitted on
    # the WIDER dev photos so that the default threshold 0.6 gives a similar
    # false-detection rate (a few %) for every family; 0 keeps raw scores.
    score_shift: float = 0.0

    def __init__(self, model: LoadedModel) -> None:
        _check_model(model, self.family)
        self.model = model

    @property
    def ref(self) -> ModelRef:
        return self.model.ref

    def min_face_px(self, width: int, height: int) -> float:
        return self.min_face

    def candidates(self, rgb: np.ndarray, score_threshold: float) -> FaceCandidates:
        found = self._raw_candidates(rgb, raw_threshold(score_threshold, self.score_shift))
        return found.with_scores(calibrate_scores(found.scores, self.score_shift))

    def _raw_candidates(self, rgb: np.ndarray, raw_min: float) -> FaceCandidates:
        """Candidates with raw model score >= ``raw_min``, in ``rgb``'s pixels."""
        raise NotImplementedError


# --------------------------------------------------------------------------- YuNet
def preprocess_yunet(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> (1, 3, H, W) float32 BGR, raw 0..255, padded right/bottom to /32."""
    return _to_nchw(_pad_to_multiple(rgb[:, :, ::-1], 32))


def decode_yunet(outputs: Mapping[str, np.ndarray], input_hw: tuple[int, int],
                 score_threshold: float) -> FaceCandidates:
    """Decode YuNet's cls/obj/bbox/kps_{8,16,32} outputs for an input of ``input_hw``.

    score = sqrt(cls * obj); box centre = (cell + bbox[:2]) * stride, size =
    exp(bbox[2:]) * stride; landmarks = (cell + kps) * stride.
    """
    h, w = input_hw
    parts = []
    for s in STRIDES:
        cells = _grid(h // s, w // s)
        cls = np.clip(outputs[f"cls_{s}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{s}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= score_threshold)
        bbox = outputs[f"bbox_{s}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{s}"].reshape(-1, 5, 2)[keep]
        cell = cells[keep]
        centre = (cell + bbox[:, :2]) * s
        half = np.exp(bbox[:, 2:]) * s / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        parts.append(FaceCandidates(boxes.astype(np.float32), score[keep].astype(np.float32),
                                    ((cell[:, None, :] + kps) * s).astype(np.float32)))
    return FaceCandidates.concat(parts)


class YuNetDetector(_OnnxDetector):
    """OpenCV Zoo YuNet: any input size (padded to a multiple of 32), BGR raw pixels."""

    family = "yunet"
    score_shift = YUNET_SCORE_SHIFT

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self._output_names = [o.name for o in model.session.get_outputs()]

    def _raw_candidates(self, rgb: np.ndarray, raw_min: float) -> FaceCandidates:
        tensor = preprocess_yunet(rgb)
        outputs = dict(zip(self._output_names, self.model.run(tensor), strict=True))
        return decode_yunet(outputs, tensor.shape[2:], raw_min)


# --------------------------------------------------------------------------- SCRFD
def preprocess_scrfd(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> (1, 3, H, W) float32 (x - 127.5) / 128, padded right/bottom to /32."""
    padded = _pad_to_multiple(rgb, 32, value=0)
    return _to_nchw((padded.astype(np.float32) - 127.5) / 128.0)


def _scrfd_groups(outputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    """(scores, distances, keypoints) per stride 8, 16, 32, whatever the output order.

    Outputs are told apart by their last dimension (1, 4, 10) and strides by
    their anchor count (most anchors = stride 8).
    """
    by_dim: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
    for out in outputs:
        dim = out.shape[-1]
        if dim not in by_dim:
            raise ValueError(f"unexpected SCRFD output shape {out.shape}")
        by_dim[dim].append(out.reshape(-1, dim))
    for dim in by_dim:
        by_dim[dim].sort(key=len, reverse=True)
    return list(zip(by_dim[1], by_dim[4], by_dim[10], strict=True))


def decode_scrfd(outputs: Sequence[np.ndarray], input_hw: tuple[int, int],
                 score_threshold: float) -> FaceCandidates:
    """Decode SCRFD's 9 outputs (2 anchors per cell; distance2bbox / distance2kps)."""
    h, w = input_hw
    parts = []
    for s, (scores, dist, kps) in zip(STRIDES, _scrfd_groups(outputs), strict=True):
        cells = _grid(h // s, w // s)
        anchors_per_cell = len(scores) // len(cells)
        centres = np.repeat(cells * s, anchors_per_cell, axis=0)
        score = scores.reshape(-1)
        keep = np.flatnonzero(score >= score_threshold)
        c = centres[keep]
        d = dist[keep] * s
        boxes = np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1)
        landmarks = c[:, None, :] + kps[keep].reshape(-1, 5, 2) * s
        parts.append(FaceCandidates(boxes.astype(np.float32), score[keep].astype(np.float32),
                                    landmarks.astype(np.float32)))
    return FaceCandidates.concat(parts)


class SCRFDDetector(_OnnxDetector):
    """InsightFace SCRFD with keypoints (scrfd_2.5g, det_10g, det_500m): any input size."""

    family = "scrfd"
    score_shift = SCRFD_SCORE_SHIFT

    def _raw_candidates(self, rgb: np.ndarray, raw_min: float) -> FaceCandidates:
        tensor = preprocess_scrfd(rgb)
        return decode_scrfd(self.model.run(tensor), tensor.shape[2:], raw_min)


# --------------------------------------------------------------------------- YOLOv8-face
def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Fit ``rgb`` into a ``size`` x ``size`` canvas keeping its aspect ratio.

    The image sits in the top-left corner, padded right and bottom with 0.
    Returns (canvas, scale) with canvas pixel = image pixel * scale.
    """
    import cv2

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = min(size, round(w * scale)), min(size, round(h * scale))
    resized = rgb if (nw, nh) == (w, h) else cv2.resize(
        rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, scale


def preprocess_yolov8(rgb: np.ndarray, size: int = 640) -> tuple[np.ndarray, float]:
    """RGB uint8 -> ((1, 3, size, size) float32 x / 255 letterboxed, scale)."""
    canvas, scale = letterbox(rgb, size)
    return _to_nchw(canvas.astype(np.float32) / 255.0), scale


def decode_yolov8(outputs: Sequence[np.ndarray], score_threshold: float,
                  reg_max: int = 16) -> FaceCandidates:
    """Decode YOLOv8-face's three (1, 80, H, W) maps (strides 8/16/32) in input pixels.

    Channels 0..63: box sides as distribution focal loss (4 x ``reg_max`` bins,
    distance in strides from the cell centre); 64: face logit; 65..79: 5 x
    (dx, dy, visibility logit) with keypoint = (2 * d + cell index) * stride.
    """
    maps = sorted(outputs, key=lambda o: -o.shape[-1])  # largest grid = stride 8
    parts = []
    for s, out in zip(STRIDES, maps, strict=True):
        _, ch, gh, gw = out.shape
        flat = out.reshape(ch, gh * gw).T
        score = _sigmoid(flat[:, 4 * reg_max])
        keep = np.flatnonzero(score >= score_threshold)
        cells = _grid(gh, gw)[keep]
        bins = _softmax(flat[keep, :4 * reg_max].reshape(-1, 4, reg_max))
        dist = bins @ np.arange(reg_max, dtype=np.float32)  # (k, 4): left, top, right, bottom
        centre = cells + 0.5
        boxes = np.concatenate([centre - dist[:, :2], centre + dist[:, 2:]], axis=1) * s
        kps = flat[keep, 4 * reg_max + 1:].reshape(-1, 5, 3)[:, :, :2]
        landmarks = (2 * kps + cells[:, None, :]) * s
        parts.append(FaceCandidates(boxes.astype(np.float32), score[keep].astype(np.float32),
                                    landmarks.astype(np.float32)))
    return FaceCandidates.concat(parts)


class YoloV8FaceDetector(_OnnxDetector):
    """YOLOv8-face (lite-t): fixed 640 x 640 letterbox input, DFL box decoding."""

    family = "yolov8_face"
    input_size = 640
    max_input_side = 640
    score_shift = YOLOV8_SCORE_SHIFT

    def _raw_candidates(self, rgb: np.ndarray, raw_min: float) -> FaceCandidates:
        tensor, scale = preprocess_yolov8(rgb, self.input_size)
        return decode_yolov8(self.model.run(tensor), raw_min).mapped(scale)

    def min_face_px(self, width: int, height: int) -> float:
        return self.min_face * max(width, height) / self.input_size


# --------------------------------------------------------------------------- dlib HOG
# dlib's HOG detector returns SVM margins (about -1 .. 3; dlib's own decision
# threshold is 0). They are squashed with a logistic curve chosen so that
# margin 0 maps to 0.6, the project's default score threshold, and margin 1
# (a clear frontal face) to about 0.96: score = sigmoid(3 * margin + ln 1.5).
_HOG_SLOPE = 3.0
_HOG_OFFSET = math.log(1.5)
_HOG_WINDOW = 80.0  # px: the frontal detector's scanning window
_HOG_TARGET_SIDE = 800  # upsample small images until the long side reaches this
_HOG_MAX_UPSAMPLE = 2


def hog_margin_to_score(margin: np.ndarray | float) -> np.ndarray:
    """SVM margin -> score in (0, 1): sigmoid(3 * margin + ln 1.5); margin 0 -> 0.6."""
    return _sigmoid(_HOG_SLOPE * np.asarray(margin, np.float64) + _HOG_OFFSET)


def hog_score_to_margin(score: float) -> float:
    """Inverse of :func:`hog_margin_to_score` (score clamped into (0, 1))."""
    p = min(max(score, 1e-6), 1 - 1e-6)
    return (math.log(p / (1 - p)) - _HOG_OFFSET) / _HOG_SLOPE


def landmarks_from_shape68(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) iBUG points -> (..., 5, 2) in this module's landmark order.

    Eye centres are the means of points 36-41 and 42-47, the nose tip is 30,
    the mouth corners are 48 and 54. The iBUG annotation numbers the subject's
    right eye (image left) 36-41, so the result starts with the image-left eye.
    """
    p = np.asarray(points, np.float32)
    return np.stack([p[..., 36:42, :].mean(axis=-2), p[..., 42:48, :].mean(axis=-2),
                     p[..., 30, :], p[..., 48, :], p[..., 54, :]], axis=-2)


def _hog_upsample_times(width: int, height: int) -> int:
    long_side = max(width, height)
    times = 0
    while long_side * 2 ** times < _HOG_TARGET_SIDE and times < _HOG_MAX_UPSAMPLE:
        times += 1
    return times


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal face detector with 68-point landmarks."""

    max_input_side: int | None = None

    def __init__(self, shape68_path: str | Path, version: str) -> None:
        import dlib

        path = Path(shape68_path)
        if not path.is_file():
            raise ModelNotInstalled(f"dlib 68-point predictor not found at {path}",
                                    model="dlib_shape68")
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise ModelLoadFailed(f"could not load {path}: {exc}", model="dlib_shape68") from exc
        self._detector = dlib.get_frontal_face_detector()
        self._ref = ModelRef("dlib_hog", version, "cpu")

    @property
    def ref(self) -> ModelRef:
        return self._ref

    def min_face_px(self, width: int, height: int) -> float:
        return _HOG_WINDOW / 2 ** _hog_upsample_times(width, height)

    def candidates(self, rgb: np.ndarray, score_threshold: float) -> FaceCandidates:
        h, w = rgb.shape[:2]
        image = np.ascontiguousarray(rgb)
        rects, margins, _ = self._detector.run(image, _hog_upsample_times(w, h),
                                               hog_score_to_margin(score_threshold))
        if not rects:
            return FaceCandidates.empty()
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                         np.float32)
        points = np.array([[(p.x, p.y) for p in self._predictor(image, r).parts()]
                           for r in rects], np.float32)
        scores = hog_margin_to_score(np.asarray(margins)).astype(np.float32)
        keep = np.flatnonzero(scores >= score_threshold)
        return FaceCandidates(boxes, scores, landmarks_from_shape68(points)).select(keep)


# --------------------------------------------------------------------------- planning
MAX_UPSCALE = 2.0  # never enlarge the image more than this to reach a requested min face
LEVEL_RATIO = 2.0  # at most this scale factor between neighbouring pyramid levels
# With no explicit min_face_size, tiles are only worth their cost when they see
# faces this much smaller than the full pass does (an 800 px photo is not tiled
# for faces of 16 instead of 20 px). An explicit min_face_size is always honoured.
MIN_TILE_GAIN = 1.25
# A finer level takes the faces up to FACE_MARGIN x the smallest face the next
# coarser level finds reliably: detection right at that limit is unreliable.
FACE_MARGIN = 1.5
# A tile candidate whose box comes closer than EDGE_FRAC x its short side + EDGE_PX
# to a tile side inside the image is treated as cut by that side and dropped; the
# tile overlap guarantees that the whole face lies inside a neighbouring tile.
EDGE_FRAC = 0.15
EDGE_PX = 2.0


@dataclass(frozen=True, slots=True)
class PyramidLevel:
    """One pass: crops of the original image analysed at one scale."""

    scale: float  # detector px per original px
    tiles: np.ndarray  # (k, 4) int x1, y1, x2, y2 crops of the original image
    max_face: float  # larger faces (box short side, original px) are a coarser level's


@dataclass(frozen=True, slots=True)
class DetectionPlan:
    """The passes :func:`detect_faces` runs on one image size."""

    levels: tuple[PyramidLevel, ...]  # coarse to fine; the first is the full-image pass
    min_detectable: float  # smallest face side (original px) the finest level finds

    @property
    def scale(self) -> float:
        """Scale of the full-image pass."""
        return self.levels[0].scale

    @property
    def tile_count(self) -> int:
        """Tiles run in addition to the full-image pass."""
        return sum(len(level.tiles) for level in self.levels[1:])


def _axis_starts(length: int, tile: int, overlap: int) -> np.ndarray:
    """Evenly spread tile starts covering ``[0, length)`` with at least ``overlap``."""
    if length <= tile:
        return np.zeros(1, np.int64)
    count = math.ceil((length - overlap) / (tile - overlap))
    return np.round(np.linspace(0, length - tile, count)).astype(np.int64)


def tile_grid(width: int, height: int, tile: int, overlap: int) -> np.ndarray:
    """``(k, 4)`` int tiles (x1, y1, x2, y2) of side ``tile`` (clamped to the image)
    covering a ``width`` x ``height`` image; neighbours overlap by at least ``overlap``.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    tw, th = min(tile, width), min(tile, height)
    xs, ys = _axis_starts(width, tile, overlap), _axis_starts(height, tile, overlap)
    x0, y0 = (a.ravel() for a in np.meshgrid(xs, ys))
    return np.stack([x0, y0, x0 + tw, y0 + th], axis=1)


def _min_face(detector: FaceDetector, width: float, height: float, scale: float) -> float:
    """Smallest face side (original px) found in a ``width`` x ``height`` region at ``scale``."""
    sw, sh = max(1, round(width * scale)), max(1, round(height * scale))
    return detector.min_face_px(sw, sh) / scale


def _tiled_level(detector: FaceDetector, width: int, height: int, scale: float,
                 tile_size: int, max_face: float) -> tuple[PyramidLevel, float]:
    """Tiles at ``scale`` overlapping by more than ``max_face`` plus the cut margins.

    Returns the level and the smallest face side (original px) it finds.
    """
    overlap = math.ceil(max_face * scale * (1 + 2 * EDGE_FRAC) + 2 * EDGE_PX)  # detector px
    tile = max(tile_size, 2 * overlap)
    if detector.max_input_side and tile > detector.max_input_side:
        log.warning("%s: %d px tiles exceed its %d px input; faces near %.0f px may be missed",
                    detector.ref.id, tile, detector.max_input_side, max_face)
    tile_orig = round(tile / scale)
    tiles = tile_grid(width, height, tile_orig, min(math.ceil(overlap / scale), tile_orig - 1))
    level_min = _min_face(detector, min(tile_orig, width), min(tile_orig, height), scale)
    return PyramidLevel(scale, tiles, max_face), level_min


def plan_detection(detector: FaceDetector, width: int, height: int, *, max_side: int = 640,
                   tile_size: int = 640, min_face_size: float = 0,
                   tiling: bool = True) -> DetectionPlan:
    """The passes for a ``width`` x ``height`` image (see :func:`detect_faces`).

    The full-image pass runs at the largest scale <= 1 that keeps the long side
    within ``max_side`` (and the detector's fixed input), enlarged only when a
    small image needs it for ``min_face_size``. The finest scale is the one at
    which faces of ``min_face_size`` (0: the detector's own limit, i.e. native
    resolution) become detectable, at most ``MAX_UPSCALE``. With ``tiling``,
    when that scale is above the full pass's (by more than ``MIN_TILE_GAIN``
    if ``min_face_size`` is 0), tiled levels spaced by at most ``LEVEL_RATIO``
    lead from the full pass to it; each takes the faces its coarser neighbour
    may miss.
    """
    long_side = max(width, height)
    full_side = min(max_side, detector.max_input_side or max_side)
    native_min = detector.min_face_px(min(width, tile_size), min(height, tile_size))
    finest = min(native_min / (min_face_size or native_min), MAX_UPSCALE)
    full_scale = max(min(1.0, full_side / long_side), min(finest, full_side / long_side))
    whole = np.array([[0, 0, width, height]], np.int64)
    levels = [PyramidLevel(full_scale, whole, math.inf)]
    smallest = _min_face(detector, width, height, full_scale)
    gain = 1.001 if min_face_size else MIN_TILE_GAIN
    if tiling and finest > full_scale * gain:
        steps = math.ceil(math.log(finest / full_scale) / math.log(LEVEL_RATIO) - 1e-9)
        for i in range(1, steps + 1):
            scale = full_scale * (finest / full_scale) ** (i / steps)
            level, smallest = _tiled_level(detector, width, height, scale, tile_size,
                                           FACE_MARGIN * smallest)
            levels.append(level)
    return DetectionPlan(tuple(levels), smallest)


# --------------------------------------------------------------------------- running
def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _uncut(boxes: np.ndarray, tile: np.ndarray, width: int, height: int) -> np.ndarray:
    """Mask of boxes not touching a side of ``tile`` that lies inside the image."""
    x1, y1, x2, y2 = (float(v) for v in tile)
    edge = EDGE_FRAC * short_sides(boxes) + EDGE_PX
    ok = np.ones(len(boxes), bool)
    if x1 > 0:
        ok &= boxes[:, 0] >= x1 + edge
    if y1 > 0:
        ok &= boxes[:, 1] >= y1 + edge
    if x2 < width:
        ok &= boxes[:, 2] <= x2 - edge
    if y2 < height:
        ok &= boxes[:, 3] <= y2 - edge
    return ok


def _run_level(detector: FaceDetector, rgb: np.ndarray, level: PyramidLevel,
               score_threshold: float) -> FaceCandidates:
    """Candidates of every tile of a level, in original pixels, that are whole (not
    cut by an inner tile side) and small enough to be this level's job."""
    h, w = rgb.shape[:2]
    found = []
    for tile in level.tiles:
        x1, y1, x2, y2 = (int(v) for v in tile)
        crop = _resize(rgb[y1:y2, x1:x2], level.scale)
        exact = crop.shape[1] / (x2 - x1)  # the scale after rounding the crop's size
        cands = detector.candidates(crop, score_threshold).mapped(exact, (x1, y1))
        keep = _uncut(cands.boxes, tile, w, h) & (short_sides(cands.boxes) <= level.max_face)
        found.append(cands.select(np.flatnonzero(keep)))
    return FaceCandidates.concat(found)


def _largest_first(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices ordering faces by box area, largest first; ties by higher score."""
    return np.lexsort((-scores, -areas(boxes)))


def _validate(rgb: object, score_threshold: float, nms_iou: float, max_side: int,
              tile_size: int, min_face_size: float, max_faces: int) -> None:
    check_rgb(rgb)  # type: ignore[arg-type]
    values = {"score_threshold": score_threshold, "nms_iou": nms_iou, "max_side": max_side,
              "tile_size": tile_size, "min_face_size": min_face_size, "max_faces": max_faces}
    valid = {"score_threshold": 0.0 <= score_threshold <= 1.0, "nms_iou": 0.0 < nms_iou <= 1.0,
             "max_side": max_side >= 32, "tile_size": tile_size >= 64,
             "min_face_size": min_face_size >= 0, "max_faces": max_faces >= 0}
    bad = [name for name, ok in valid.items() if not ok]
    if bad:
        raise InvalidInput(f"invalid detection options: {', '.join(bad)}",
                           **{name: values[name] for name in bad})


def detect_faces(detector: FaceDetector, rgb: np.ndarray, *, score_threshold: float = 0.6,
                 nms_iou: float = 0.3, max_side: int = 640, tile_size: int = 640,
                 min_face_size: float = 0, max_faces: int = 0,
                 tiling: bool = True, tile_min_face: float = 0) -> Detections:
    """Find faces in an RGB uint8 image; boxes and landmarks in its own pixels.

    Passes (see :func:`plan_detection`): a full-image pass on a copy whose long
    side is at most ``max_side``; then, if that copy is downscaled so far that
    faces of ``min_face_size`` (0: the smallest the detector finds at native
    resolution) would be missed and ``tiling`` is on, tiled pyramid levels of
    ``tile_size`` detector pixels down to the scale where such faces are
    visible. Neighbouring tiles overlap by more than the largest face the
    coarser level may miss, and a tile candidate touching an inner tile side is
    dropped, so a face cut by a tile border is reported once, from the tile
    that holds all of it.

    All candidates go through ONE non-maximum suppression (``nms_iou``). Faces
    whose box's short side (before clipping) is below ``min_face_size`` are
    dropped. ``tile_min_face`` (used when ``min_face_size`` is 0) limits how fine the
    tiles go without filtering anything. The result is ordered largest box first (ties: higher score
    first), so ``max_faces`` (> 0) keeps the largest faces. Boxes are clipped to
    the image; landmarks are not. ``info`` reports the full-pass scale, the
    tiles run on all finer levels, the smallest face side the passes find
    reliably and the time taken.

    Raises :class:`~facesocial.errors.InvalidImage` for anything but an
    ``(h, w, 3)`` uint8 array and :class:`~facesocial.errors.InvalidInput` for
    out-of-range options.
    """
    _validate(rgb, score_threshold, nms_iou, max_side, tile_size, min_face_size, max_faces)
    start = time.perf_counter()
    h, w = rgb.shape[:2]
    # Planning floor: without an explicit min_face_size, tiles are run only as far as
    # faces of `tile_min_face` need (full-resolution tiles on every large photo cost
    # 4.5x the detection time for faces few callers want; bench/engine.py).
    plan = plan_detection(detector, w, h, max_side=max_side, tile_size=tile_size,
                          min_face_size=min_face_size or tile_min_face, tiling=tiling)
    found = FaceCandidates.concat(
        [_run_level(detector, rgb, level, score_threshold) for level in plan.levels])
    found = found.select(nms(found.boxes, found.scores, nms_iou))
    if min_face_size > 0:
        found = found.select(np.flatnonzero(short_sides(found.boxes) >= min_face_size))
    order = _largest_first(found.boxes, found.scores)
    found = found.select(order[:max_faces] if max_faces else order)
    info = DetectionInfo(input_size=(w, h), scale=plan.scale, tiles=plan.tile_count,
                         min_detectable_face=plan.min_detectable,
                         ms=(time.perf_counter() - start) * 1000)
    log.debug("%s on %dx%d: scale %.3f, %d tiles over %d levels, faces from %.1f px, "
              "%d found, %.1f ms", detector.ref.id, w, h, plan.scale, plan.tile_count,
              len(plan.levels), plan.min_detectable, len(found), info.ms)
    return Detections(clip_boxes(found.boxes, w, h), found.scores, found.landmarks,
                      detector.ref, info)
