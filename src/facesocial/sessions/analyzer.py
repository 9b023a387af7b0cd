"""Measure one session frame: faces, identity against the bound person, liveness, phones.

The largest face is the subject: it is embedded and compared with the bound
identity's enrolled faces of the same embedding model and version (the best
cosine; embeddings of other models are never compared), and it gets the
anti-spoofing verdict (binary + print/replay). Phones are looked for in the whole
frame (YOLOX-nano "cell phone"). Every model used is named in the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from facesocial.errors import NoGalleryForModel
from facesocial.gallery import repository as repo
from facesocial.runtime import ModelRef
from facesocial.sessions.policy import FrameScores, IdentityTrack, Policy

#: phone scores are reported from this floor up (the decision uses the policy's threshold)
PHONE_REPORT_FLOOR = 0.05


@dataclass(frozen=True, slots=True)
class Reference:
    """The bound identity's enrolled embeddings for one model version, and the threshold."""

    identity_id: str
    model: ModelRef
    vectors: np.ndarray  # (n, dim), unit rows
    threshold: float
    threshold_name: str

    def score(self, vector: np.ndarray) -> float:
        return float(np.max(self.vectors @ vector))


class FrameAnalyzer:
    def __init__(self, engine: Any, policy: Policy, sessions: sessionmaker[Session]) -> None:
        self.engine = engine
        self.policy = policy
        self.sessions = sessions

    def current_model(self) -> ModelRef:
        """The embedding model and pipeline version frames will be embedded with now."""
        spec = self.engine.resolve("face_embedding")
        live = {s["id"]: s["version"] for s in self.engine.manager.status() if s["version"]}
        return ModelRef(spec.id, live.get(spec.id, spec.version)
                        + self.engine.pipeline_suffix(spec.id))

    def reference(self, identity_id: str, model: ModelRef) -> Reference:
        """The identity's faces embedded by ``model``; refused when it has none."""
        with self.sessions() as session:
            repo.get_identity(session, identity_id)
            data = repo.identity_embeddings(session, model.id, model.version, [identity_id])
        if len(data) == 0:
            raise NoGalleryForModel(
                f"identity '{identity_id}' has no face enrolled with {model.id}@{model.version}"
                "; enrol it again with the current embedding model", model=model.to_dict())
        spec = self.engine.catalog.get(model.id)
        which = self.policy.verify_threshold
        if isinstance(which, (int, float)):
            threshold, name = float(which), "policy"
        else:
            threshold, name = self.engine.threshold(spec, which)
        return Reference(identity_id, model, data.vectors, threshold, name)

    def analyze(self, rgb: np.ndarray, ref: Reference, track: IdentityTrack | None = None,
                now: float = 0.0) -> tuple[FrameScores, Reference]:
        """Scores of one frame; returns the reference used (reloaded if the embedding model
        version changed since the last frame, e.g. after a hot reload). With a ``track``,
        the identity score of a subject that stayed in place is carried between
        verifications (see :class:`IdentityTrack`)."""
        e, timings = self.engine, {}
        t = time.perf_counter()
        dets = e.detect(rgb)
        timings["detect"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        objects = e.objects().detect(rgb, min(PHONE_REPORT_FLOOR, self.policy.phone_min_score))
        timings["objects"] = (time.perf_counter() - t) * 1000
        phone = max((o.score for o in objects.items if o.label == "cell phone"), default=0.0)
        models = [f"{dets.model.id}@{dets.model.version}",
                  f"{objects.model.id}@{objects.model.version}"]
        if len(dets) == 0:
            return FrameScores(faces=0, phone_score=phone, models=tuple(models),
                               timings_ms=timings), ref
        areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
        subject = dets.select(np.array([int(np.argmax(areas))]))
        box = tuple(float(v) for v in subject.boxes[0])
        key = (ref.model.id, ref.model.version)
        carried = track.carry(box, now, self.policy, key) if track is not None else None
        if carried is None:
            t = time.perf_counter()
            emb = e.embed_detections(rgb, subject)[0]
            timings["embed"] = (time.perf_counter() - t) * 1000
            if (emb.model.id, emb.model.version) != key:
                ref = self.reference(ref.identity_id, emb.model)
            identity, age = ref.score(emb.vector), 0.0
            if track is not None:
                track.verified(box, identity, now, (ref.model.id, ref.model.version))
            models_emb = [f"{emb.model.id}@{emb.model.version}"]
        else:
            assert track is not None
            identity, age = carried, now - track.at
            models_emb = [f"{ref.model.id}@{ref.model.version}"]
        t = time.perf_counter()
        liveness = e.antispoofer().predict(rgb, subject.boxes)[0]
        timings["antispoof"] = (time.perf_counter() - t) * 1000
        live = liveness.is_live if self.policy.live_threshold is None \
            else liveness.live_score >= self.policy.live_threshold
        models += models_emb + [f"{m.id}@{m.version}" for m in liveness.models]
        scores = FrameScores(
            faces=len(dets), identity_score=identity, identity_age_s=age,
            identity_threshold=ref.threshold, live_score=liveness.live_score, live=live,
            attack=None if live else (liveness.verdict if liveness.verdict != "live"
                                      else "spoof"),
            phone_score=phone, models=tuple(models), timings_ms=timings)
        return scores, ref
