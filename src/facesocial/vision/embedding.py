"""Face embeddings: ArcFace-style ONNX models and dlib's ResNet.

Every embedder returns L2-normalised float32 vectors tagged with the model
that made them. A face's embedding never depends on the other faces in the
same call: models whose graph is not batch-independent (fixed batch 1, or
dynamically quantised activations) are run one face per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from facesocial.results import Embedding
from facesocial.runtime import LoadedModel, ModelRef
from facesocial.vision.alignment import align_faces


class Embedder(Protocol):
    model: ModelRef
    dim: int

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray,
              boxes: np.ndarray | None = None) -> np.ndarray: ...


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def preprocess_arcface(crops: np.ndarray, mean: float, std: float, bgr: bool = False) -> np.ndarray:
    """(n, 112, 112, 3) uint8 RGB -> (n, 3, 112, 112) float32, (x - mean) / std."""
    x = np.asarray(crops, dtype=np.float32)
    if bgr:
        x = x[..., ::-1]
    x = (x - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _batch_independent(model: LoadedModel) -> bool:
    shape = model.session.get_inputs()[0].shape
    dynamic_batch = not isinstance(shape[0], int) or shape[0] != 1
    return dynamic_batch and not bool(model.spec.extra.get("batch_dependent", False))


class ArcFaceEmbedder:
    """112x112 aligned face -> embedding (MobileFaceNet, w600k_*, glintr100)."""

    def __init__(self, model: LoadedModel, flip_tta: bool = False) -> None:
        self._model = model
        pre = model.spec.extra.get("preprocess", {})
        self.mean = float(pre.get("mean", 127.5))
        self.std = float(pre.get("std", 127.5))
        self.bgr = pre.get("color", "RGB") == "BGR"
        self.flip_tta = flip_tta
        self.batched = _batch_independent(model)
        self.dim = int(model.session.get_outputs()[0].shape[-1])

    @property
    def model(self) -> ModelRef:
        return self._model.ref

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(n, 112, 112, 3) aligned uint8 RGB crops -> (n, d) L2-normalised."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = preprocess_arcface(crops, self.mean, self.std, self.bgr)
        feats = self._run(x)
        if self.flip_tta:
            feats = feats + self._run(np.ascontiguousarray(x[..., ::-1]))
        return l2_normalize(feats)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.batched:
            return np.asarray(self._model.run(x)[0], np.float32).reshape(len(x), -1)
        return np.concatenate(
            [np.asarray(self._model.run(x[i:i + 1])[0], np.float32).reshape(1, -1)
             for i in range(len(x))])

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray,
              boxes: np.ndarray | None = None) -> np.ndarray:
        return self.embed_crops(align_faces(rgb, landmarks, 112))


class DlibResNetEmbedder:
    """dlib's ResNet face descriptor (128-d) on dlib's own 150 px face chips.

    dlib aligns with its 5-point shape predictor run on the face box, so the
    detector's landmarks are not used here.
    """

    def __init__(self, model_path: Path, shape5_path: Path, ref: ModelRef) -> None:
        import dlib

        self._net = dlib.face_recognition_model_v1(str(model_path))
        self._shape = dlib.shape_predictor(str(shape5_path))
        self._ref = ref
        self.dim = 128

    @property
    def model(self) -> ModelRef:
        return self._ref

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray,
              boxes: np.ndarray | None = None) -> np.ndarray:
        import dlib

        if boxes is None or len(boxes) == 0:
            return np.zeros((0, self.dim), np.float32)
        img = np.ascontiguousarray(rgb)
        shapes = dlib.full_object_detections()
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64):
            rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
            shapes.append(self._shape(img, rect))
        desc = self._net.compute_face_descriptor(img, shapes, 0)
        return l2_normalize(np.array([np.asarray(d) for d in desc], dtype=np.float32))


def embeddings_to_results(vectors: np.ndarray, ref: ModelRef,
                          flipped: bool = False) -> list[Embedding]:
    return [Embedding(vector=v, model=ref, flipped_tta=flipped) for v in vectors]
