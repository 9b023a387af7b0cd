"""The continuous-authentication policy: per-frame scores in, one decision out.

A policy is data (a JSON file with a ``version``; the packaged default is
``default_policy.json``, another one is ``FACESOCIAL_SESSION_POLICY_FILE``).
Each frame first gets a raw verdict:

* ``sign_out``: a phone is pointed at the camera (``phone_min_score``), or the
  face is a spoof (print / replay) by the anti-spoofing verdict;
* ``lock_screen``: the face is not the bound identity (cosine under the
  verification threshold), several faces when ``multiple_faces`` says lock, or
  no face for longer than ``no_face_grace_s`` (within the grace period a frame
  without a face is ``allow``);
* ``allow`` otherwise.

Identity is verified (the subject embedded and compared) at least every
``reverify_interval_s``; in between, while the subject's box overlaps the last
verified box by ``track_min_iou`` or more, the last score is carried (its age is
reported). A box that jumps (another person sliding in) is verified at once;
liveness and phones are checked on every frame. 0 verifies every frame.

Smoothing: the decision is ``sign_out`` when at least ``min_frames`` of the
last ``window`` raw verdicts were sign_out, ``lock_screen`` when at least that
many were lock_screen or worse, ``allow`` otherwise; so one bad frame among good
ones does not flip the decision (window 1 / min_frames 1 turns smoothing off).
After a sign_out the window starts afresh, so each sign_out rests on its own
frames. ``block`` is decided by the service: ``block.sign_outs`` sign-outs of one
client within ``block.window_s``.

Everything here is pure: the clock is passed in.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facesocial.errors import ConfigurationError

ALLOW, LOCK, SIGN_OUT, BLOCK = "allow", "lock_screen", "sign_out", "block"
DECISIONS = (ALLOW, LOCK, SIGN_OUT, BLOCK)
SEVERITY = {ALLOW: 0, LOCK: 1, SIGN_OUT: 2, BLOCK: 3}
DEFAULT_POLICY = Path(__file__).resolve().parent / "default_policy.json"


class _Smoothing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int = Field(default=5, ge=1, le=100)
    min_frames: int = Field(default=3, ge=1, le=100)


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sign_outs: int = Field(default=3, ge=1, le=1000)
    window_s: float = Field(default=600.0, gt=0)


class _PolicyFile(BaseModel):
    """The file's schema: unknown keys are refused, so a typo cannot pass silently."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)
    about: str | None = None
    verify_threshold: Literal["default", "strict"] | float = "default"
    live_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    phone_min_score: float = Field(default=0.15, gt=0.0, le=1.0)
    no_face_grace_s: float = Field(default=3.0, ge=0.0)
    multiple_faces: Literal["lock_screen", "allow"] = "lock_screen"
    smoothing: _Smoothing = Field(default_factory=_Smoothing)
    block: _Block = Field(default_factory=_Block)
    evidence_jpeg_quality: int = Field(default=90, ge=30, le=100)
    reverify_interval_s: float = Field(default=1.0, ge=0.0, le=60.0)
    track_min_iou: float = Field(default=0.5, gt=0.0, le=1.0)


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    verify_threshold: str | float = "default"
    live_threshold: float | None = None
    phone_min_score: float = 0.15
    no_face_grace_s: float = 3.0
    multiple_faces: str = LOCK
    smoothing_window: int = 5
    smoothing_min_frames: int = 3
    block_sign_outs: int = 3
    block_window_s: float = 600.0
    evidence_jpeg_quality: int = 90
    reverify_interval_s: float = 1.0
    track_min_iou: float = 0.5

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Policy:
        try:
            f = _PolicyFile.model_validate(doc)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid session policy: {exc}") from None
        return cls(version=f.version, verify_threshold=f.verify_threshold,
                   live_threshold=f.live_threshold, phone_min_score=f.phone_min_score,
                   no_face_grace_s=f.no_face_grace_s, multiple_faces=f.multiple_faces,
                   smoothing_window=f.smoothing.window,
                   smoothing_min_frames=min(f.smoothing.min_frames, f.smoothing.window),
                   block_sign_outs=f.block.sign_outs, block_window_s=f.block.window_s,
                   evidence_jpeg_quality=f.evidence_jpeg_quality,
                   reverify_interval_s=f.reverify_interval_s, track_min_iou=f.track_min_iou)

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        p = Path(path) if path else DEFAULT_POLICY
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read the session policy {p}: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigurationError(f"the session policy {p} must be a JSON object")
        return cls.from_dict(doc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FrameScores:
    """What one frame measured (the largest face is the subject)."""

    faces: int
    identity_score: float | None = None  # best cosine to the bound identity's faces
    identity_threshold: float | None = None
    live_score: float | None = None
    live: bool | None = None
    attack: str | None = None  # print | replay | spoof when not live
    phone_score: float = 0.0  # best "cell phone" score in the frame
    identity_age_s: float | None = None  # 0: verified on this frame; >0: carried by tracking
    models: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def identity_match(self) -> bool | None:
        if self.identity_score is None or self.identity_threshold is None:
            return None
        return self.identity_score >= self.identity_threshold

    def to_dict(self) -> dict[str, Any]:
        r = (lambda v: None if v is None else round(float(v), 4))  # noqa: E731
        return {"faces": self.faces, "identity_score": r(self.identity_score),
                "identity_threshold": r(self.identity_threshold),
                "identity_match": self.identity_match, "live_score": r(self.live_score),
                "live": self.live, "attack": self.attack, "phone_score": r(self.phone_score),
                "identity_age_s": r(self.identity_age_s)}


def frame_verdict(policy: Policy, s: FrameScores) -> tuple[str, list[str]]:
    """The raw verdict of one frame, ignoring time (no face is reported as ``no_face``)."""
    reasons: list[str] = []
    if s.phone_score >= policy.phone_min_score:
        reasons.append("phone")
    if s.faces and s.live is False:
        reasons.append(f"spoof:{s.attack or 'spoof'}")
    if reasons:
        return SIGN_OUT, reasons
    if s.faces == 0:
        return "no_face", ["no_face"]
    if s.faces > 1 and policy.multiple_faces == LOCK:
        reasons.append("multiple_faces")
    if s.identity_match is False:
        reasons.append("not_bound_identity")
    return (LOCK, reasons) if reasons else (ALLOW, [])


@dataclass(frozen=True, slots=True)
class Decision:
    decision: str
    reasons: tuple[str, ...]
    raw: str  # this frame's own verdict, before smoothing
    raw_reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": list(self.reasons), "raw": self.raw,
                "raw_reasons": list(self.raw_reasons)}


class PolicyState:
    """One session's memory: the smoothing window and how long no face has been seen."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._window: deque[tuple[str, tuple[str, ...]]] = deque(maxlen=policy.smoothing_window)
        self._no_face_since: float | None = None

    def decide(self, scores: FrameScores, now: float) -> Decision:
        p = self.policy
        raw, reasons = frame_verdict(p, scores)
        if raw == "no_face":
            if self._no_face_since is None:
                self._no_face_since = now
            if now - self._no_face_since >= p.no_face_grace_s:
                raw, reasons = LOCK, ["no_face"]
            else:
                raw, reasons = ALLOW, ["no_face_grace"]
        else:
            self._no_face_since = None
        self._window.append((raw, tuple(reasons)))
        decision = self._smoothed()
        why = self._reasons_for(decision)
        if decision == SIGN_OUT:
            self._window.clear()  # the next sign-out must rest on frames of its own
        return Decision(decision, why, raw, tuple(reasons))

    def _smoothed(self) -> str:
        k = self.policy.smoothing_min_frames
        verdicts = [v for v, _ in self._window]
        if verdicts.count(SIGN_OUT) >= k:
            return SIGN_OUT
        if sum(SEVERITY[v] >= SEVERITY[LOCK] for v in verdicts) >= k:
            return LOCK
        return ALLOW

    def _reasons_for(self, decision: str) -> tuple[str, ...]:
        if decision == ALLOW:
            return self._window[-1][1] if self._window and self._window[-1][0] == ALLOW else ()
        level = SEVERITY[decision]
        out: dict[str, None] = {}
        for verdict, reasons in self._window:
            if SEVERITY[verdict] >= level:
                out.update(dict.fromkeys(reasons))
        return tuple(out)


@dataclass(slots=True)
class IdentityTrack:
    """The last verified subject of a session: its box, score and when it was verified."""

    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    at: float = 0.0
    model: tuple[str, str] | None = None

    def carry(self, box: tuple[float, float, float, float], now: float, policy: Policy,
              model: tuple[str, str]) -> float | None:
        """The score to reuse for this frame's subject, or None when it must be verified."""
        if self.box is None or self.score is None or self.model != model:
            return None
        if now - self.at >= policy.reverify_interval_s:
            return None
        return self.score if box_iou(self.box, box) >= policy.track_min_iou else None

    def verified(self, box: tuple[float, float, float, float], score: float, now: float,
                 model: tuple[str, str]) -> None:
        self.box, self.score, self.at, self.model = box, score, now, model


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float],
            ) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
