"""The continuous-authentication policy: raw verdicts, grace, smoothing, the policy file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facesocial.errors import ConfigurationError
from facesocial.sessions.policy import (
    ALLOW,
    LOCK,
    SIGN_OUT,
    FrameScores,
    IdentityTrack,
    Policy,
    PolicyState,
    frame_verdict,
)

P = Policy(version="t1", no_face_grace_s=2.0, smoothing_window=5, smoothing_min_frames=3)
OWNER = FrameScores(faces=1, identity_score=0.7, identity_threshold=0.25, live_score=0.99,
                    live=True)
STRANGER = FrameScores(faces=1, identity_score=0.05, identity_threshold=0.25, live_score=0.99,
                       live=True)
PRINT = FrameScores(faces=1, identity_score=0.7, identity_threshold=0.25, live_score=0.01,
                    live=False, attack="print")
PHONE = FrameScores(faces=0, phone_score=0.4)
NOBODY = FrameScores(faces=0)
TWO = FrameScores(faces=2, identity_score=0.7, identity_threshold=0.25, live_score=0.99,
                  live=True)


def test_raw_verdicts_and_their_precedence() -> None:
    assert frame_verdict(P, OWNER) == (ALLOW, [])
    assert frame_verdict(P, STRANGER) == (LOCK, ["not_bound_identity"])
    assert frame_verdict(P, PRINT) == (SIGN_OUT, ["spoof:print"])
    assert frame_verdict(P, PHONE) == (SIGN_OUT, ["phone"])
    assert frame_verdict(P, NOBODY) == ("no_face", ["no_face"])
    assert frame_verdict(P, TWO) == (LOCK, ["multiple_faces"])
    allow_two = Policy(version="t", multiple_faces=ALLOW)
    assert frame_verdict(allow_two, TWO) == (ALLOW, [])
    # a spoof of a stranger signs out (the worse outcome wins)
    spoofed_stranger = FrameScores(faces=1, identity_score=0.0, identity_threshold=0.25,
                                   live=False, attack="replay")
    assert frame_verdict(P, spoofed_stranger)[0] == SIGN_OUT


def run(state: PolicyState, frames: list[FrameScores], dt: float = 0.2) -> list[str]:
    return [state.decide(f, i * dt).decision for i, f in enumerate(frames)]


def test_one_bad_frame_among_good_ones_does_not_flip_the_decision() -> None:
    frames = [OWNER] * 4 + [PRINT] + [OWNER] * 4 + [STRANGER] + [OWNER] * 3
    assert set(run(PolicyState(P), frames)) == {ALLOW}


def test_sustained_attacks_decide_after_min_frames() -> None:
    assert run(PolicyState(P), [OWNER, PRINT, PRINT, PRINT]) == [ALLOW, ALLOW, ALLOW, SIGN_OUT]
    assert run(PolicyState(P), [STRANGER] * 4) == [ALLOW, ALLOW, LOCK, LOCK]
    # without smoothing each frame decides alone
    raw = PolicyState(Policy(version="t", smoothing_window=1, smoothing_min_frames=1))
    assert run(raw, [OWNER, PRINT, OWNER, STRANGER]) == [ALLOW, SIGN_OUT, ALLOW, LOCK]


def test_a_sign_out_rests_on_its_own_frames() -> None:
    state = PolicyState(P)
    out = run(state, [PRINT] * 6)
    assert out == [ALLOW, ALLOW, SIGN_OUT, ALLOW, ALLOW, SIGN_OUT]


def test_no_face_locks_only_after_the_grace_period() -> None:
    state = PolicyState(Policy(version="t", no_face_grace_s=2.0, smoothing_window=1,
                               smoothing_min_frames=1))
    decisions = [(t, state.decide(NOBODY, t)) for t in (0.0, 1.0, 1.9, 2.0, 3.0)]
    assert [d.decision for _, d in decisions] == [ALLOW, ALLOW, ALLOW, LOCK, LOCK]
    assert decisions[0][1].reasons == ("no_face_grace",)
    assert decisions[3][1].reasons == ("no_face",)
    assert state.decide(OWNER, 3.2).decision == ALLOW  # the face is back: the timer resets
    assert state.decide(NOBODY, 3.4).decision == ALLOW


def test_policy_files_are_validated(tmp_path: Path) -> None:
    default = Policy.load()
    assert default.version and default.smoothing_min_frames <= default.smoothing_window
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"version": "x", "smoothing": {"window": 2, "min_frames": 5},
                                "verify_threshold": 0.4}))
    p = Policy.load(good)
    assert (p.smoothing_window, p.smoothing_min_frames, p.verify_threshold) == (2, 2, 0.4)
    for bad in ({"version": "x", "grace": 1}, {"smoothing": {}}, {"version": "x",
                                                                  "phone_min_score": 2}):
        f = tmp_path / "bad.json"
        f.write_text(json.dumps(bad))
        with pytest.raises(ConfigurationError):
            Policy.load(f)
    with pytest.raises(ConfigurationError):
        Policy.load(tmp_path / "missing.json")


def test_identity_is_carried_only_while_the_subject_stays_put() -> None:
    p = Policy(version="t", reverify_interval_s=1.0, track_min_iou=0.5)
    m = ("emb", "v1")
    track = IdentityTrack()
    box = (100.0, 100.0, 200.0, 220.0)
    assert track.carry(box, 0.0, p, m) is None  # nothing verified yet
    track.verified(box, 0.8, 0.0, m)
    assert track.carry((105.0, 98.0, 204.0, 221.0), 0.5, p, m) == 0.8  # moved a little
    assert track.carry((300.0, 100.0, 400.0, 220.0), 0.5, p, m) is None  # another place
    assert track.carry(box, 1.0, p, m) is None  # the interval has passed
    assert track.carry(box, 0.5, p, ("emb", "v2")) is None  # another model version
    every_frame = Policy(version="t", reverify_interval_s=0.0)
    assert track.carry(box, 0.0, every_frame, m) is None
