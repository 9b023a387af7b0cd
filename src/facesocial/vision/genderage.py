"""Gender and age with InsightFace's ``genderage`` model (buffalo_l, 1.3 MB).

Pre- and post-processing follow insightface's
``python-package/insightface/model_zoo/attribute.py`` (``Attribute.get``) and
``utils/face_align.py`` (``transform``), read at deepinsight/insightface
commit 10942a38:

- crop: a similarity transform with no rotation, centred on the *box* centre
  (not on landmarks), scale ``96 / (1.5 * max(w, h))``, so the square crop
  covers 1.5x the longer box side; ``cv2.warpAffine`` bilinear, zero border,
  96x96 output;
- input: ``cv2.dnn.blobFromImage(crop, 1 / std, (96, 96), (mean,) * 3,
  swapRB=True)`` on insightface's BGR image, i.e. RGB, NCHW, float32,
  ``(x - mean) / std``. insightface picks mean 0 and std 1 when the graph
  normalises itself (an MXNet export starting with ``bn_data`` or Sub/Mul
  nodes, as genderage.onnx does; the catalog records ``"scale": "raw 0..255"``)
  and 127.5 / 128 otherwise. Mean 0 and std 1 are the defaults here; a
  catalog entry may override them with ``"preprocess": {"mean": .., "std": ..}``;
- output ``fc1`` ``[N, 3]``: two gender logits in the order (female, male)
  (insightface: ``gender = argmax(pred[:2])``, ``Face.sex`` is "M" for 1) and
  ``age / 100``.

Beyond insightface: ``gender_confidence`` is the softmax of the two logits
(insightface reports only the argmax); age is kept as a float (insightface
rounds it) and clipped at 0. The model gives one age, not a distribution, so
``Demographics.age_range`` here is a fixed ``(age - 5, age + 5)`` band
(lower end clipped at 0) for display; it is NOT a confidence interval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from facesocial.errors import ModelLoadFailed
from facesocial.results import Demographics
from facesocial.runtime import LoadedModel, ModelRef
from facesocial.vision.boxes import as_boxes
from facesocial.vision.image import check_rgb
from facesocial.vision.liveness import run_batched

log = logging.getLogger(__name__)

__all__ = ["GenderAgeEstimator", "crop_matrices", "crop_faces", "preprocess_genderage",
           "decode_genderage", "INPUT_SIZE", "CROP_FACTOR", "AGE_HALF_WIDTH", "GENDERS"]

INPUT_SIZE = 96
CROP_FACTOR = 1.5  # the crop's side over the box's longer side (insightface)
INPUT_MEAN, INPUT_STD = 0.0, 1.0  # the graph normalises itself (insightface's check)
AGE_HALF_WIDTH = 5.0  # age_range = (age - 5, age + 5): a display band, not a distribution
GENDERS = ("female", "male")  # column order of the two logits


# --- pure helpers -------------------------------------------------------------
def crop_matrices(boxes: np.ndarray, size: int = INPUT_SIZE,
                  factor: float = CROP_FACTOR) -> np.ndarray:
    """(n, 4) xyxy boxes -> (n, 2, 3) maps from image pixels to the ``size`` crop.

    ``M = [[s, 0, size/2 - s*cx], [0, s, size/2 - s*cy]]`` with
    ``s = size / (factor * max(w, h))`` and (cx, cy) the box centre: insightface's
    ``transform(img, center, size, s, rotation=0)``.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    s = size / (factor * np.maximum(np.maximum(w, h), 1e-6))
    m = np.zeros((len(b), 2, 3))
    m[:, 0, 0] = m[:, 1, 1] = s
    m[:, 0, 2] = size / 2 - s * cx
    m[:, 1, 2] = size / 2 - s * cy
    return m


def crop_faces(rgb: np.ndarray, boxes: np.ndarray, size: int = INPUT_SIZE,
               factor: float = CROP_FACTOR) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB crops, zero outside the image (as insightface)."""
    ms = crop_matrices(boxes, size, factor)
    if len(ms) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
                     for m in ms])


def preprocess_genderage(crops: np.ndarray, mean: float = INPUT_MEAN,
                         std: float = INPUT_STD) -> np.ndarray:
    """(n, s, s, 3) uint8 RGB crops -> (n, 3, s, s) float32 ``(x - mean) / std``."""
    x = np.asarray(crops, np.float32)
    x = (x - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def decode_genderage(out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 3) raw outputs -> (gender index (n,), gender confidence (n,), age in years (n,)).

    Gender index 0 = female, 1 = male (argmax of the two logits, ties -> female);
    confidence = the softmax probability of the chosen class; age = 100 * out[:, 2],
    clipped at 0.
    """
    o = np.asarray(out, np.float64)
    if o.ndim != 2 or o.shape[1] != 3:
        raise ValueError(f"genderage output must have shape (n, 3), got {o.shape}")
    logits = o[:, :2]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    idx = p.argmax(axis=1)
    conf = p[np.arange(len(o)), idx]
    age = np.maximum(o[:, 2] * 100.0, 0.0)
    return idx, conf, age


# --- the adapter ----------------------------------------------------------------
class GenderAgeEstimator:
    """Gender and age for given face boxes, with insightface's ``genderage`` graph."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        inputs, outputs = model.session.get_inputs(), model.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadFailed(f"'{model.spec.id}' must have one input and one output, "
                                  f"got {len(inputs)} and {len(outputs)}", model=model.spec.id)
        shape = list(inputs[0].shape)
        out_dim = outputs[0].shape[-1] if outputs[0].shape else None
        if len(shape) != 4 or (isinstance(out_dim, int) and out_dim != 3):
            raise ModelLoadFailed(f"'{model.spec.id}' is not a gender-age graph: input "
                                  f"{shape}, output {outputs[0].shape}", model=model.spec.id)
        side = shape[-1]
        self.size = side if isinstance(side, int) and side > 0 else INPUT_SIZE
        pre = model.spec.extra.get("preprocess", {})
        self.mean = float(pre.get("mean", INPUT_MEAN))
        self.std = float(pre.get("std", INPUT_STD))
        self.models: tuple[ModelRef, ...] = (model.ref,)

    def inputs(self, rgb: np.ndarray,
               boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """The network input for ``boxes``: (n, 3, size, size) float32."""
        check_rgb(rgb)
        arr = as_boxes(boxes)
        return preprocess_genderage(crop_faces(rgb, arr, self.size), self.mean, self.std)

    def predict(self, rgb: np.ndarray,
                boxes: np.ndarray | Sequence[Sequence[float]]) -> list[Demographics]:
        """One :class:`Demographics` per box, in box order; one batched call where the
        graph allows it (a fixed batch of 1 runs face by face)."""
        x = self.inputs(rgb, boxes)
        if len(x) == 0:
            return []
        out = np.asarray(run_batched(self.model, x)).reshape(len(x), -1)
        idx, conf, age = decode_genderage(out)
        return [Demographics(age=float(age[i]),
                             age_range=(max(0.0, float(age[i]) - AGE_HALF_WIDTH),
                                        float(age[i]) + AGE_HALF_WIDTH),
                             gender=GENDERS[int(idx[i])], gender_confidence=float(conf[i]),
                             models=self.models)
                for i in range(len(x))]
