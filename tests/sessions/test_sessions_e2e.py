"""Continuous authentication end to end: a real server over loopback, real WebSocket clients
(facesocial.client) streaming the labelled test photos as frames."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from PIL import Image

from facesocial.client import SessionStream, StreamClosed
from tests.sessions.conftest import OWNER_LIVE, Env, blank_jpeg


def stream(env: Env, client_id: str, key: str) -> SessionStream:
    return SessionStream.connect(env.server.url, client_id, key)


def decide(s: SessionStream, frame: bytes, times: int = 1) -> list[dict]:
    out = []
    for _ in range(times):
        msg = s.send_frame(frame)
        assert msg["type"] == "decision", msg
        out.append(msg)
    return out


def stored(env: Env, client_id: str) -> list[dict]:
    return env.admin.session_decisions(client_id)["items"]


def test_the_enrolled_person_live_is_allowed(env: Env) -> None:
    client_id, key = env.new_client("owner")
    with stream(env, client_id, key) as s:
        assert s.session["policy_version"] == "test-2026.1"
        assert s.session["reference"]["faces"] == 2
        for name in OWNER_LIVE * 2:
            d = decide(s, env.frame(name))[0]
            assert d["decision"] == "allow" and d["raw"] == "allow", (name, d)
            assert d["scores"]["identity_match"] and d["scores"]["live"]
            assert d["policy_version"] == "test-2026.1" and d["evidence_id"] is None
            assert any(m.startswith("w600k_mbf_folded@") for m in d["models"])
            assert any(m.startswith("antispoof_binary@") for m in d["models"])
    # no evidence, no audit row for allow
    assert stored(env, client_id) == []


@pytest.mark.parametrize("attack", ["liveness/print_attack.jpg", "liveness/replay_attack.jpg"])
def test_print_and_replay_attacks_sign_out(env: Env, attack: str) -> None:
    client_id, key = env.new_client("spoof")
    with stream(env, client_id, key) as s:
        decisions = decide(s, env.frame(attack), 2)
    kind = "print" if "print" in attack else "replay"
    assert all(d["raw"] == "sign_out" for d in decisions)
    assert decisions[-1]["decision"] == "sign_out"
    assert f"spoof:{kind}" in decisions[-1]["reasons"]
    assert decisions[-1]["scores"]["attack"] == kind


def test_another_person_locks_the_screen(env: Env) -> None:
    client_id, key = env.new_client("stranger")
    with stream(env, client_id, key) as s:
        decisions = decide(s, env.frame("faces/biden_1.jpg"), 1) + \
            decide(s, env.frame("faces/biden_2.jpg"), 2)
    assert decisions[0]["decision"] == "allow"  # one frame is not enough (smoothing)
    assert [d["decision"] for d in decisions[1:]] == ["lock_screen", "lock_screen"]
    assert decisions[-1]["reasons"] == ["not_bound_identity"]
    assert not decisions[-1]["scores"]["identity_match"]


@pytest.mark.parametrize("photo", ["phone/phone.png", "phone/phone_img.jpg"])
def test_a_phone_at_the_camera_signs_out(env: Env, photo: str) -> None:
    client_id, key = env.new_client("phone")
    with stream(env, client_id, key) as s:
        decisions = decide(s, env.frame(photo), 2)
    assert decisions[-1]["decision"] == "sign_out" and "phone" in decisions[-1]["reasons"]
    assert decisions[-1]["scores"]["phone_score"] >= 0.15


def test_no_face_locks_only_after_the_grace_period(env: Env) -> None:
    client_id, key = env.new_client("away")
    blank = blank_jpeg()
    with stream(env, client_id, key) as s:
        t0 = time.monotonic()
        seen = []
        while time.monotonic() - t0 < 3.0:
            d = decide(s, blank)[0]
            seen.append((time.monotonic() - t0, d))
            if d["decision"] == "lock_screen":
                break
            time.sleep(0.15)
    assert seen[0][1]["decision"] == "allow" and seen[0][1]["reasons"] == ["no_face_grace"]
    locks = [t for t, d in seen if d["decision"] == "lock_screen"]
    assert locks, "no lock_screen within 3 s of frames without a face"
    assert locks[0] >= 1.0  # the policy's grace period
    assert all(d["decision"] == "allow" for t, d in seen if t < 1.0)
    assert seen[-1][1]["reasons"] == ["no_face"]


def test_one_spoof_frame_among_live_frames_does_not_flip(env: Env) -> None:
    client_id, key = env.new_client("smooth")
    live = env.frame("faces/obama_3.jpg")
    with stream(env, client_id, key) as s:
        decisions = decide(s, live, 3) + decide(s, env.frame("liveness/print_attack.jpg")) + \
            decide(s, live, 3)
    assert decisions[3]["raw"] == "sign_out"  # the spoof frame was seen for what it is
    assert [d["decision"] for d in decisions] == ["allow"] * 7
    assert stored(env, client_id) == []


def test_evidence_and_audit_rows_for_every_non_allow_decision(env: Env) -> None:
    client_id, key = env.new_client("evidence")
    with stream(env, client_id, key) as s:
        got = decide(s, env.frame("faces/obama_3.jpg"), 2) + \
            decide(s, env.frame("faces/biden_1.jpg"), 3) + \
            decide(s, env.frame("liveness/replay_attack.jpg"), 2)
    non_allow = [d for d in got if d["decision"] != "allow"]
    assert {d["decision"] for d in non_allow} == {"lock_screen", "sign_out"}
    rows = {r["id"]: r for r in stored(env, client_id)}
    assert set(rows) == {d["evidence_id"] for d in non_allow}
    assert all(d["evidence_id"] is None for d in got if d["decision"] == "allow")
    http = env.server.client(headers=env.server.auth())
    for d in non_allow:
        row = rows[d["evidence_id"]]
        assert row["decision"] == d["decision"] and row["policy_version"] == "test-2026.1"
        assert row["scores"] == d["scores"] and row["models"] == d["models"]
        frame = http.get(f"/sessions/decisions/{row['id']}/evidence")
        assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(frame.content)).size[0] > 0
        record = http.get(f"/sessions/decisions/{row['id']}/evidence",
                          params={"part": "record"}).json()
        assert record["decision"] == d["decision"] and record["client_id"] == client_id
        assert record["policy"]["version"] == "test-2026.1"
    http.close()


def test_repeated_sign_outs_block_the_client(env: Env) -> None:
    client_id, key = env.new_client("repeat")
    attack = env.frame("liveness/print_attack.jpg")
    with stream(env, client_id, key) as s:
        decisions = decide(s, attack, 4)  # sign-outs 1 and 2
        assert [d["decision"] for d in decisions].count("sign_out") == 2
        s.send_frame(attack)
        last = s.send_frame(attack)  # the third sign-out is a block
        assert last["decision"] == "block" and "repeated_sign_outs" in last["reasons"]
        with pytest.raises(StreamClosed) as closed:
            s.recv_until(("decision",), timeout=10)
        assert closed.value.code == 4003
    assert env.admin.get_session_client(client_id)["state"] == "blocked"
    with pytest.raises(StreamClosed) as refused:
        stream(env, client_id, key)
    assert refused.value.code == 4003 and "client_blocked" in refused.value.reason
    assert stored(env, client_id)[0]["decision"] == "block"


def test_admin_block_closes_a_live_session_and_unblock_lets_it_back(env: Env) -> None:
    client_id, key = env.new_client("admin")
    live = env.frame("faces/obama_3.jpg")
    with stream(env, client_id, key) as s:
        assert decide(s, live)[0]["decision"] == "allow"
        env.admin.set_client_state(client_id, "block", "lost laptop")
        msg = s.recv_until(("blocked",), timeout=10)
        assert msg["reason"] == "lost laptop"
        with pytest.raises(StreamClosed) as closed:
            s.recv(timeout=10)
        assert closed.value.code == 4003
    with pytest.raises(StreamClosed):
        stream(env, client_id, key)
    env.admin.set_client_state(client_id, "unblock")
    with stream(env, client_id, key) as s:
        assert decide(s, live)[0]["decision"] == "allow"
        env.admin.set_client_state(client_id, "pause", "presentation")
        s.recv_until(("status",), timeout=10)
        paused = s.send_frame(live)
        assert paused["type"] == "status" and paused["state"] == "paused"
        env.admin.set_client_state(client_id, "unblock")
        s.recv_until(("status",), timeout=10)
        assert decide(s, live)[0]["decision"] == "allow"
    with env.server.client(headers=env.server.auth()) as http:
        r = http.get("/system/audit", params={"target": client_id})
    assert r.status_code == 200
    actions = [(e["action"], e["actor"]) for e in r.json()["items"]]
    assert {a for a, _ in actions} >= {"session.client.create", "session.client.block",
                                       "session.client.unblock", "session.client.pause"}
    assert all(actor and actor.startswith("user:") for _, actor in actions)


def test_bad_input_gets_errors_and_the_server_keeps_serving(env: Env) -> None:
    client_id, key = env.new_client("bad")
    other_id, other_key = env.new_client("other")
    live = env.frame("faces/obama_3.jpg")
    results: dict[str, list[str]] = {"other": []}

    def other_client() -> None:
        with stream(env, other_id, other_key) as o:
            for _ in range(4):
                results["other"].append(o.send_frame(live)["decision"])

    t = threading.Thread(target=other_client)
    t.start()
    with stream(env, client_id, key) as s:
        s.ws.send("{not json")
        assert s.recv_until(("error",))["code"] == "malformed_message"
        s.send_json({"type": "frame", "data": "%%%", "request_id": "b64"})
        assert s.recv_until(("error",))["code"] == "malformed_message"
        s.send_json({"type": "teleport", "request_id": "x"})
        assert s.recv_until(("error",))["code"] == "unknown_type"
        s.send_bytes(b"this is not an image")
        assert s.recv_until(("error",))["code"] == "unsupported_image_format"
        s.send_bytes(b"\xff\xd8\xff" + b"\0" * 2_000_000)  # over the 1.5 MB frame limit
        err = s.recv_until(("error",))
        assert err["code"] == "payload_too_large"
        ok = s.send_frame(live, request_id="after-errors")  # still served
        assert ok["decision"] == "allow" and ok["request_id"] == "after-errors"
    t.join(60)
    assert results["other"] == ["allow"] * 4
    # bad credentials: policy-violation close
    with pytest.raises(StreamClosed) as bad_key:
        SessionStream.connect(env.server.url, client_id, other_key)  # another client's key
    assert bad_key.value.code == 1008
    with pytest.raises(StreamClosed) as unknown:
        SessionStream.connect(env.server.url, "nobody", key)
    assert unknown.value.code == 1008
    with pytest.raises(StreamClosed) as garbage:
        SessionStream.connect(env.server.url, client_id, "fsk_nope")
    assert garbage.value.code == 1008


def test_frames_faster_than_analysis_drop_the_stale_ones(env: Env) -> None:
    client_id, key = env.new_client("flood")
    live = env.frame("faces/obama_3.jpg")
    with stream(env, client_id, key) as s:
        for _ in range(12):
            s.send_bytes(live)
        replies = []
        while True:
            msg = s.recv_until(("decision",), timeout=60)
            replies.append(msg)
            if msg["frame"] == 12:
                break
    assert len(replies) < 12  # stale frames were dropped, not queued
    assert replies[-1]["dropped"] == 12 - len(replies)
    assert all(r["decision"] == "allow" for r in replies)


def test_session_registry_and_status(env: Env) -> None:
    client_id, key = env.new_client("status")
    with stream(env, client_id, key) as s, \
            env.server.client(headers=env.server.auth()) as http:
        live = http.get("/sessions/live").json()["items"]
        assert any(x["client_id"] == client_id for x in live)
        st = http.get("/sessions/status").json()
        assert st["capacity"] == 8 and st["policy_version"] == "test-2026.1"
        assert any(x["session_id"] == s.session["session_id"] for x in st["this_process"])
    with env.server.client(headers=env.server.auth()) as http:
        assert all(x["client_id"] != client_id for x in http.get("/sessions/live").json()
                   ["items"])
        r = http.post("/sessions/clients", json={"client_id": "x y", "identity_id": "nope"})
        assert r.status_code == 422
        r = http.post("/sessions/clients", json={"client_id": "ok", "identity_id": "nope"})
        assert r.status_code == 404
        r = http.post(f"/sessions/clients/{client_id}/explode", json={})
        assert r.status_code in (404, 405)


def test_session_endpoint_needs_json_auth_fields(env: Env) -> None:
    """Credentials may also come in the first message; anything else is a policy close."""
    from websockets.sync.client import connect

    client_id, key = env.new_client("firstmsg")
    url = env.server.url.replace("http", "ws") + "/api/v1/ws/session"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "auth", "client_id": client_id, "api_key": key}))
        assert json.loads(ws.recv(timeout=30))["type"] == "session"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "frame"}))
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=30)
        assert "1008" in str(closed.value)


def test_a_clients_new_session_replaces_its_live_one(env: Env) -> None:
    client_id, key = env.new_client("twice")
    live = env.frame("faces/obama_3.jpg")
    with stream(env, client_id, key) as first:
        assert decide(first, live)[0]["decision"] == "allow"
        with stream(env, client_id, key) as second:
            msg = first.recv_until(("replaced",), timeout=10)
            assert msg["replaced_by"] == second.session["session_id"]
            with pytest.raises(StreamClosed) as closed:
                first.recv(timeout=10)
            assert closed.value.code == 4409
            assert decide(second, live)[0]["decision"] == "allow"
    with env.server.client(headers=env.server.auth()) as http:
        r = http.get("/system/audit", params={"target": client_id})
    replaced = [e for e in r.json()["items"] if e["action"] == "session.replaced"]
    assert len(replaced) == 1 and replaced[0]["actor"] == "system"
