"""Annotated images for ``facesocial analyze --draw``: boxes, landmarks, labels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facesocial.results import Analysis, Face

_FACE = (40, 200, 40)
_SPOOF = (220, 40, 40)
_OBJ = (40, 120, 230)
_LANDMARK_COLOURS = ((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255))


def _label(face: Face) -> str:
    parts = [f"{face.score:.2f}"]
    if face.demographics:
        parts.append(f"{face.demographics.gender[0].upper()}{face.demographics.age:.0f}")
    if face.liveness:
        parts.append(face.liveness.verdict)
    if face.deepfake and face.deepfake.is_fake:
        parts.append("FAKE")
    return " ".join(parts)


def annotate(rgb: np.ndarray, analysis: Analysis) -> np.ndarray:
    """A copy of ``rgb`` with every face and object drawn on it."""
    img = np.ascontiguousarray(rgb.copy())
    thick = max(1, round(max(img.shape[:2]) / 500))
    font = 0.4 + max(img.shape[:2]) / 2000
    for face in analysis.faces:
        bad = (face.liveness is not None and not face.liveness.is_live) or (
            face.deepfake is not None and face.deepfake.is_fake)
        colour = _SPOOF if bad else _FACE
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
        for (x, y), c in zip(face.landmarks, _LANDMARK_COLOURS, strict=True):
            cv2.circle(img, (int(round(x)), int(round(y))), thick + 1, c, -1)
        cv2.putText(img, _label(face), (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, font,
                    colour, thick, cv2.LINE_AA)
    if analysis.objects is not None:
        for obj in analysis.objects.items:
            x1, y1, x2, y2 = (int(round(v)) for v in obj.box)
            cv2.rectangle(img, (x1, y1), (x2, y2), _OBJ, thick)
            cv2.putText(img, f"{obj.label} {obj.score:.2f}", (x1, min(img.shape[0] - 4, y2 + 14)),
                        cv2.FONT_HERSHEY_SIMPLEX, font, _OBJ, thick, cv2.LINE_AA)
    return img


def save_annotated(rgb: np.ndarray, analysis: Analysis, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(annotate(rgb, analysis), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write {path}")
    return path
