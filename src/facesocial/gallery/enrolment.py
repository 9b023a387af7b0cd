"""The checks an image passes before its face is enrolled: one face, live, good enough.

Used by the enrolment endpoint and by gallery import jobs, so both refuse the
same images for the same reasons (stable error codes).
"""

from __future__ import annotations

import hashlib
from typing import Any

from facesocial.errors import ExpectedOneFace, LowQualityFace, SpoofDetected
from facesocial.gallery.service import EnrolItem
from facesocial.settings import Settings
from facesocial.vision.quality import enrolment_problems


def enrolment_candidate(engine: Any, settings: Settings, image: bytes, *,
                        waive_liveness: bool = False, embedder: str | None = None) -> EnrolItem:
    """Check one enrolment image; returns what will be stored, or raises with a reason."""
    s = settings
    tasks = ("detect", "embed") if waive_liveness or not s.enrol_require_live else (
        "detect", "embed", "antispoof")
    analysis = engine.analyze(image, tasks, embedder=embedder)
    if len(analysis.faces) != 1:
        raise ExpectedOneFace(f"an enrolment image must show exactly one face; found "
                              f"{len(analysis.faces)}", faces=len(analysis.faces))
    face = analysis.faces[0]
    if face.liveness is not None and not face.liveness.is_live:
        raise SpoofDetected(f"the face looks like a {face.liveness.verdict} attack",
                            verdict=face.liveness.verdict,
                            live_score=round(face.liveness.live_score, 4))
    problems = enrolment_problems(face.quality, s.enrol_min_quality, s.enrol_min_face_px)
    if problems:
        raise LowQualityFace(f"the face is not good enough to enrol: {', '.join(problems)}",
                             reasons=problems, quality=round(face.quality.score, 3),
                             size_px=round(face.quality.size_px, 1))
    if face.embedding is None:  # "embed" was requested; a missing one is a bug
        raise RuntimeError("enrolment analysis returned no embedding")
    return EnrolItem(embedding=face.embedding, image_sha256=hashlib.sha256(image).hexdigest(),
                     quality=float(face.quality.score))
