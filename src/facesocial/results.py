"""Typed, frozen results. Every model output names the model that made it.

Arrays stay numpy inside the engine; ``to_dict`` turns a result into plain
JSON-ready Python for the CLI and the HTTP layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesocial.runtime import ModelRef


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


@dataclass(frozen=True, slots=True)
class DetectionInfo:
    """How detection ran, so a caller can tell what it could and could not see."""

    input_size: tuple[int, int]  # (width, height) of the analysed image
    scale: float  # full-image pass scale (detector pixels per image pixel)
    tiles: int  # native-resolution tiles run in addition to the full pass
    min_detectable_face: float  # smallest face side (image px) the passes can find
    ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "scale": _r(self.scale),
                "tiles": self.tiles, "min_detectable_face_px": _r(self.min_detectable_face, 1),
                "ms": _r(self.ms, 2)}


@dataclass(frozen=True, slots=True)
class Detections:
    """Struct of arrays: n faces with xyxy boxes, scores and 5 landmarks each.

    Landmark order: right eye, left eye, nose tip, right mouth corner, left
    mouth corner (as seen in the image: the subject's right eye is on the
    image's left).
    """

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (n,) float32
    landmarks: np.ndarray  # (n, 5, 2) float32
    model: ModelRef
    info: DetectionInfo | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or \
                self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"inconsistent detection arrays: {self.boxes.shape}, "
                             f"{self.scores.shape}, {self.landmarks.shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, model: ModelRef, info: DetectionInfo | None = None) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0, 5, 2), np.float32), model, info)

    def select(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index],
                          self.model, self.info)


@dataclass(frozen=True, slots=True)
class Embedding:
    vector: np.ndarray  # (d,) float32, L2-normalised
    model: ModelRef
    flipped_tta: bool = False

    def to_dict(self, include_vector: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"model": self.model.to_dict(), "dim": int(self.vector.shape[0])}
        if include_vector:
            d["vector"] = [float(v) for v in self.vector]
        return d


@dataclass(frozen=True, slots=True)
class Liveness:
    """Combined passive anti-spoofing verdict."""

    verdict: str  # "live" | "print" | "replay" | "spoof"
    is_live: bool
    live_score: float  # combined probability of a live face
    binary_live: float | None  # antispoof_binary live probability
    classes: dict[str, float] | None  # antispoof_print_replay softmax
    threshold: float
    models: tuple[ModelRef, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "is_live": self.is_live,
                "live_score": _r(self.live_score),
                "binary_live": None if self.binary_live is None else _r(self.binary_live),
                "classes": None if self.classes is None else
                {k: _r(v) for k, v in self.classes.items()},
                "threshold": self.threshold, "models": [m.to_dict() for m in self.models]}


@dataclass(frozen=True, slots=True)
class Demographics:
    age: float
    age_range: tuple[float, float]  # central 80% of the age distribution
    gender: str  # "female" | "male"
    gender_confidence: float
    models: tuple[ModelRef, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"age": _r(self.age, 1), "age_range": [_r(a, 1) for a in self.age_range],
                "gender": self.gender, "gender_confidence": _r(self.gender_confidence),
                "models": [m.to_dict() for m in self.models]}


@dataclass(frozen=True, slots=True)
class Deepfake:
    real_probability: float
    fake_score: float
    is_fake: bool
    threshold: float
    model: ModelRef

    def to_dict(self) -> dict[str, Any]:
        return {"real_probability": _r(self.real_probability), "fake_score": _r(self.fake_score),
                "is_fake": self.is_fake, "threshold": self.threshold,
                "model": self.model.to_dict()}


@dataclass(frozen=True, slots=True)
class DetectedObject:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "score": _r(self.score),
                "box": [_r(v, 1) for v in self.box]}


@dataclass(frozen=True, slots=True)
class Objects:
    items: tuple[DetectedObject, ...]
    model: ModelRef

    def labelled(self, label: str) -> list[DetectedObject]:
        return [o for o in self.items if o.label == label]

    def to_dict(self) -> dict[str, Any]:
        return {"items": [o.to_dict() for o in self.items], "model": self.model.to_dict()}


@dataclass(frozen=True, slots=True)
class Face:
    index: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2)
    detector: ModelRef
    embedding: Embedding | None = None
    liveness: Liveness | None = None
    demographics: Demographics | None = None
    deepfake: Deepfake | None = None
    quality: Any = None  # vision.quality.FaceQuality

    def to_dict(self, include_vector: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "index": self.index, "box": [_r(v, 1) for v in self.box], "score": _r(self.score),
            "landmarks": [[_r(x, 1), _r(y, 1)] for x, y in self.landmarks],
            "detector": self.detector.to_dict(),
        }
        if self.quality is not None:
            d["quality"] = self.quality.to_dict()
        if self.embedding is not None:
            d["embedding"] = self.embedding.to_dict(include_vector)
        if self.liveness is not None:
            d["liveness"] = self.liveness.to_dict()
        if self.demographics is not None:
            d["demographics"] = self.demographics.to_dict()
        if self.deepfake is not None:
            d["deepfake"] = self.deepfake.to_dict()
        return d


@dataclass(frozen=True, slots=True)
class Analysis:
    width: int
    height: int
    faces: tuple[Face, ...]
    tasks: tuple[str, ...]
    detection: DetectionInfo | None = None
    objects: Objects | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def models(self) -> list[dict[str, str]]:
        refs: dict[str, ModelRef] = {}
        for f in self.faces:
            refs[f.detector.id] = f.detector
            if f.embedding:
                refs[f.embedding.model.id] = f.embedding.model
            for m in (f.liveness.models if f.liveness else ()):
                refs[m.id] = m
            for m in (f.demographics.models if f.demographics else ()):
                refs[m.id] = m
            if f.deepfake:
                refs[f.deepfake.model.id] = f.deepfake.model
        if self.objects:
            refs[self.objects.model.id] = self.objects.model
        return [r.to_dict() for r in refs.values()]

    def to_dict(self, include_vectors: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "width": self.width, "height": self.height, "tasks": list(self.tasks),
            "face_count": len(self.faces),
            "faces": [f.to_dict(include_vectors) for f in self.faces],
            "models": self.models(),
            "timings_ms": {k: _r(v, 2) for k, v in self.timings_ms.items()},
        }
        if self.detection is not None:
            d["detection"] = self.detection.to_dict()
        if self.objects is not None:
            d["objects"] = self.objects.to_dict()
        return d


@dataclass(frozen=True, slots=True)
class Verification:
    score: float  # cosine similarity
    threshold: float
    match: bool
    model: ModelRef
    false_match_rate: float | None  # estimated FMR at this score (from calibration)
    threshold_name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {"score": _r(self.score), "threshold": self.threshold, "match": self.match,
                "threshold_name": self.threshold_name,
                "estimated_false_match_rate": self.false_match_rate,
                "model": self.model.to_dict()}
