"""COCO object detection with YOLOX (``yolox`` family; the catalog's ``yolox_nano``).

Input: the image letterboxed into the model's square input (416 for
``yolox_nano``): resized keeping the aspect ratio into the top-left corner,
the rest filled with 114; BGR, raw 0..255, NCHW float32. Output ``[1, A, 85]``
over the grid cells of strides 8, 16 and 32: box centre
``(out[:2] + cell) * stride``, size ``exp(out[2:4]) * stride``, class score =
objectness x class probability; then per-class NMS.

The phone test images are small person crops (150-600 px on the long side):
the letterbox scales them *up* to the input size, as YOLOX itself does.
Keeping small images at native size (pad only, ``upscale=False``) lost the
phone in phone.png (206 px: 0.43 -> 0.05) and in phone3.png (0.07 -> 0.005).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from facesocial.errors import InvalidInput
from facesocial.results import DetectedObject, Objects
from facesocial.runtime import LoadedModel
from facesocial.vision.boxes import nms
from facesocial.vision.image import check_rgb

log = logging.getLogger(__name__)

COCO_80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)
PERSON, CELL_PHONE = 0, 67
STRIDES = (8, 16, 32)
PAD_VALUE = 114
DEFAULT_INPUT_SIZE = 416
NMS_IOU = 0.45
# Default score threshold for "a phone is present", measured on the labelled
# phone photos (YOLOX-nano, letterbox with upscaling): phone.png 0.43,
# phone_img.jpg 0.22, phone3.png 0.07 (missed at any usable threshold); the
# highest cell-phone score anywhere in nophone2 / nophone3 is 0.0009 / 0.0004.
# 0.15 keeps both findable phones with a 1.5x margin below the weaker one.
# Beyond the labelled set, on 360 NUAA webcam frames + 5 WIDER photos with no
# phone labels, 7 images (1.9%) have a "cell phone" >= 0.15 (4 at >= 0.2):
# mostly hands holding a printed photo (up to 0.37, i.e. above the real phone
# in phone_img.jpg). The model cannot separate those; the threshold cannot fix
# it. Five labelled images: a sanity figure, not a calibration.
PHONE_SCORE_THRESHOLD = 0.15
DEFAULT_SCORE_THRESHOLD = PHONE_SCORE_THRESHOLD


# --- pure helpers -------------------------------------------------------------
def letterbox(rgb: np.ndarray, size: int, upscale: bool = True) -> tuple[np.ndarray, float]:
    """BGR (size, size, 3) uint8 letterbox (top-left, pad 114) and the scale used."""
    h, w = rgb.shape[:2]
    r = min(size / h, size / w)
    if not upscale:
        r = min(r, 1.0)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR) \
        if (nw, nh) != (w, h) else rgb
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[:nh, :nw] = resized[:, :, ::-1]
    return out, r


def grid_cells(size: int, strides: Sequence[int] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(A, 2) cell indices (x, y) and (A, 1) strides for a square input, YOLOX order."""
    cells, cell_strides = [], []
    for s in strides:
        n = size // s
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full((n * n, 1), s))
    return (np.concatenate(cells).astype(np.float32),
            np.concatenate(cell_strides).astype(np.float32))


def decode(raw: np.ndarray, cells: np.ndarray,
           strides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, 5 + C) raw output -> (A, 4) xyxy boxes in input pixels, (A, C) class scores."""
    xy = (raw[:, :2] + cells) * strides
    wh = np.exp(raw[:, 2:4]) * strides
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    return boxes, raw[:, 4:5] * raw[:, 5:]


def per_class_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                  iou: float) -> np.ndarray:
    """Greedy NMS within each class (boxes of different classes never suppress)."""
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    # Shift each class into its own region so one NMS pass keeps classes apart.
    offset = (class_ids.astype(np.float64) * (float(np.abs(boxes).max()) + 1.0))[:, None]
    return nms(boxes + offset, scores, iou)


# --- the adapter ----------------------------------------------------------------
class ObjectDetector:
    """COCO objects (persons, phones, ...) in an RGB image."""

    def __init__(self, model: LoadedModel, labels: Sequence[str] = COCO_80,
                 nms_iou: float = NMS_IOU, upscale: bool = True) -> None:
        self.model = model
        self.labels = tuple(labels)
        self.nms_iou = float(nms_iou)
        self.upscale = upscale
        self.size = _input_size(model)
        self.cells, self.strides = grid_cells(self.size)

    def detect(self, rgb: np.ndarray,
               score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> Objects:
        """Objects scoring at least ``score_threshold``, best first."""
        check_rgb(rgb)
        if not 0.0 <= score_threshold <= 1.0:
            raise InvalidInput(f"score_threshold must be in [0, 1], got {score_threshold}")
        boxes, scores, class_ids = self.candidates(rgb, score_threshold)
        keep = per_class_nms(boxes, scores, class_ids, self.nms_iou)
        items = tuple(self._item(boxes[i], float(scores[i]), int(class_ids[i])) for i in keep)
        log.debug("yolox: %d candidates >= %.3f, %d after NMS", len(boxes), score_threshold,
                  len(items))
        return Objects(items=items, model=self.model.ref)

    def _item(self, box: np.ndarray, score: float, class_id: int) -> DetectedObject:
        x1, y1, x2, y2 = (float(v) for v in box)
        return DetectedObject(label=self.labels[class_id], class_id=class_id, score=score,
                              box=(x1, y1, x2, y2))

    def candidates(self, rgb: np.ndarray,
                   score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (box, score, class) pair at or above the threshold, before NMS;
        boxes in image pixels, clipped to the image."""
        img, r = letterbox(rgb, self.size, self.upscale)
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))
        raw = np.asarray(self.model.run(x)[0])[0]
        if raw.shape != (len(self.cells), 5 + len(self.labels)):
            raise ValueError(f"unexpected YOLOX output shape {raw.shape}")
        boxes, scores = decode(raw, self.cells, self.strides)
        idx, cls = np.nonzero(scores >= score_threshold)
        h, w = rgb.shape[:2]
        out = boxes[idx] / r
        out[:, 0::2] = out[:, 0::2].clip(0, w)
        out[:, 1::2] = out[:, 1::2].clip(0, h)
        return out, scores[idx, cls], cls


def _input_size(model: LoadedModel) -> int:
    """The model's square input side (DEFAULT_INPUT_SIZE when it is symbolic)."""
    shape = model.session.get_inputs()[0].shape
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int):
        if h != w:
            raise InvalidInput(f"YOLOX input must be square, got {h}x{w}")
        return h
    return DEFAULT_INPUT_SIZE
