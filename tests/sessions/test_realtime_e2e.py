"""/ws/realtime end to end, and the session limits that need servers of their own:
capacity (queue, then system_full), idle timeout, and state shared through Redis."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from facesocial.client import FaceSocialClient, RealtimeStream, SessionStream, StreamClosed
from tests.e2e.server import ADMIN
from tests.sessions.conftest import Env, enrol_owner, start_session_server

REDIS_URL = "redis://127.0.0.1:6379/0"


def realtime(env: Env, **kw: str) -> RealtimeStream:
    return RealtimeStream.connect(env.server.url, token=env.server.token()["access_token"],
                                  **kw)


def test_realtime_streams_answer_with_request_ids_and_models(env: Env) -> None:
    group = env.frame("faces/group_obama_biden.jpg")
    with realtime(env) as rt:
        assert set(rt.ready["streams"]) == {"face_detection_stream", "face_recognition_stream",
                                            "antispoof_stream"}
        det = rt.analyze(env.frame("faces/group_kit_rose.jpg"), "face_detection_stream",
                         request_id="d-1")
        assert det["type"] == "face_detection_stream_result" and det["request_id"] == "d-1"
        assert len(det["faces"]) == 2 and det["models"][0]["id"] == "yunet"
        rec = rt.analyze(group, "face_recognition_stream", request_id="r-1")
        names = [f["name"] for f in rec["recognition"]["faces"]]
        assert names.count("obama") == 1 and len(names) == 3  # biden and the child: unknown
        assert rec["recognition"]["model"]["id"] == "w600k_mbf_folded"
        spoof = rt.analyze(env.frame("liveness/replay_attack.jpg"), "antispoof_stream",
                           request_id=7)
        assert spoof["request_id"] == "7"
        assert spoof["faces"][0]["liveness"]["verdict"] == "replay"
        assert {m["id"] for m in spoof["models"]} >= {"antispoof_binary", "antispoof_print_replay"}
        status = rt.status()
        assert any(m["id"] == "yunet" for m in status["models"])
        assert status["sessions"]["capacity"] == 8
        # options are checked
        rt.send_json({"type": "face_detection_stream", "request_id": "o",
                      "data": base64.b64encode(group).decode(), "options": {"max_faces": "x"}})
        assert rt.recv_until(("error",))["code"] == "malformed_message"
    # binary frames use ?stream= (or the last type sent)
    with realtime(env, stream="antispoof_stream") as rt:
        rt.send_bytes(env.frame("liveness/print_attack.jpg"))
        got = rt.recv_until(("antispoof_stream_result",))
        assert got["faces"][0]["liveness"]["verdict"] == "print" and got["request_id"] is None


def test_realtime_auth_by_first_message_api_key_and_bad_tokens(env: Env) -> None:
    from websockets.sync.client import connect

    url = env.server.url.replace("http", "ws") + "/api/v1/ws/realtime"
    with env.server.client(headers=env.server.auth()) as http:
        key = http.post("/auth/keys", json={"name": f"rt-{uuid.uuid4().hex[:6]}",
                                            "scopes": ["face"]}).json()["key"]
        gallery_only = http.post("/auth/keys", json={"name": f"g-{uuid.uuid4().hex[:6]}",
                                                     "scopes": ["gallery"]}).json()["key"]
    with connect(url) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": key}))
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
    root = env.server.url.replace("http", "ws") + f"/ws/realtime?api_key={key}"  # also at /
    with connect(root) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
    for params in ({"token": "not-a-token"}, {"api_key": "fsk_bad_key"},
                   {"api_key": gallery_only}):
        with pytest.raises(StreamClosed) as closed:
            RealtimeStream.connect(env.server.url, **params)
        assert closed.value.code == 1008, params
    with pytest.raises(StreamClosed) as closed:
        RealtimeStream.connect(env.server.url, api_key=gallery_only)
    assert closed.value.reason == "insufficient_scope"


def test_realtime_rate_limit_and_backpressure(env: Env) -> None:
    with realtime(env) as rt:
        for i in range(60):  # over the 30 messages/s limit at once
            rt.send_json({"type": "ping", "request_id": f"p{i}"})
        kinds: list[str] = []
        deadline = time.monotonic() + 20
        while len(kinds) < 60 and time.monotonic() < deadline:
            try:
                kinds.append(rt.recv(timeout=2)["type"])
            except TimeoutError:
                break
        assert "error" in kinds and 0 < kinds.count("pong") < 60
    with realtime(env) as rt:
        photo = env.frame("faces/obama_1.jpg")
        for _ in range(10):
            rt.send_bytes(photo)
        replies = []
        while not replies or replies[-1]["frame"] != 10:
            replies.append(rt.recv_until(("face_detection_stream_result",)))
        assert len(replies) < 10 and replies[-1]["dropped"] == 10 - len(replies)


def test_capacity_queues_then_refuses_with_system_full(tmp_path: Path, model_home: Path,
                                                       testdata: Path) -> None:
    server = start_session_server(tmp_path, model_home, FACESOCIAL_SESSION_PIPELINES="1",
                                  FACESOCIAL_SESSIONS_PER_PIPELINE="1",
                                  FACESOCIAL_SESSION_QUEUE_TIMEOUT_S="3")
    try:
        admin, identity_id = enrol_owner(server, testdata)
        keys = [admin.create_session_client(f"cap-{i}", identity_id)["api_key"]
                for i in range(3)]
        live = (testdata / "faces/obama_3.jpg").read_bytes()
        first = SessionStream.connect(server.url, "cap-0", keys[0])
        assert first.send_frame(live)["decision"] == "allow"
        admitted: dict[str, object] = {}

        def second() -> None:
            s = SessionStream.connect(server.url, "cap-1", keys[1])
            admitted["stream"] = s
            admitted["at"] = time.monotonic()

        t = threading.Thread(target=second)
        t.start()
        time.sleep(1.0)
        assert "stream" not in admitted  # waiting in the queue
        freed = time.monotonic()
        first.close()
        t.join(10)
        s2 = admitted["stream"]
        assert isinstance(s2, SessionStream) and s2.queued and s2.queued[0]["position"] == 1
        assert admitted["at"] >= freed  # admitted when the place came free, not before
        with pytest.raises(StreamClosed) as full:
            SessionStream.connect(server.url, "cap-2", keys[2])  # s2 holds the only place
        assert full.value.code == 1013 and full.value.reason == "system_full"
        assert s2.send_frame(live)["decision"] == "allow"  # the admitted session still works
        s2.close()
        admin.close()
    finally:
        server.stop()


def test_idle_connections_are_closed(tmp_path: Path, model_home: Path) -> None:
    server = start_session_server(tmp_path, model_home, FACESOCIAL_WS_IDLE_TIMEOUT_S="1")
    try:
        with RealtimeStream.connect(server.url, token=server.token()["access_token"]) as rt:
            with pytest.raises(StreamClosed) as closed:
                rt.recv(timeout=10)
        assert closed.value.code == 4408 and closed.value.reason == "idle_timeout"
    finally:
        server.stop()


def test_two_api_processes_share_blocks_replacements_and_live_sessions_via_redis(
        tmp_path: Path, model_home: Path, testdata: Path) -> None:
    prefix = f"fs-sess-{uuid.uuid4().hex[:8]}"
    env = {"FACESOCIAL_REDIS_URL": REDIS_URL, "FACESOCIAL_REDIS_PREFIX": prefix}
    data = tmp_path / "shared-data"
    a = start_session_server(tmp_path / "a", model_home, data_dir=data, **env)
    b = start_session_server(tmp_path / "b", model_home, data_dir=data, **env)
    try:
        admin_a, identity_id = enrol_owner(a, testdata)
        key = admin_a.create_session_client("shared-1", identity_id)["api_key"]
        admin_b = FaceSocialClient.login(b.url, *ADMIN)
        with SessionStream.connect(a.url, "shared-1", key) as s:
            live = (testdata / "faces/obama_3.jpg").read_bytes()
            assert s.send_frame(live)["decision"] == "allow"
            with b.client(headers=b.auth()) as http:  # B sees A's session
                seen = http.get("/sessions/live").json()["items"]
            assert [x["client_id"] for x in seen] == ["shared-1"]
            # the same client connects through B: its session on A is replaced, not doubled
            with SessionStream.connect(b.url, "shared-1", key) as s2:
                msg = s.recv_until(("replaced",), timeout=10)
                assert msg["replaced_by"] == s2.session["session_id"]
                with pytest.raises(StreamClosed) as closed:
                    s.recv(timeout=10)
                assert closed.value.code == 4409 and closed.value.reason == "session_replaced"
                assert s2.send_frame(live)["decision"] == "allow"
                with a.client(headers=a.auth()) as http:  # A unregisters it as it ends
                    for _ in range(50):
                        seen = [x["session_id"] for x in http.get("/sessions/live").json()
                                ["items"]]
                        if seen == [s2.session["session_id"]]:
                            break
                        time.sleep(0.1)
                assert seen == [s2.session["session_id"]]
                admin_b.set_client_state("shared-1", "block", "from process B")
                assert s2.recv_until(("blocked",), timeout=10)["reason"] == "from process B"
                with pytest.raises(StreamClosed) as closed:
                    s2.recv(timeout=10)
                assert closed.value.code == 4003
        with pytest.raises(StreamClosed):  # refused by A too (the state is in the database)
            SessionStream.connect(a.url, "shared-1", key)
        admin_a.close()
        admin_b.close()
    finally:
        a.stop()
        b.stop()
        r = redis.Redis.from_url(REDIS_URL)
        for k in r.scan_iter(f"{prefix}:*"):
            r.delete(k)


@pytest.mark.parametrize("budget_mb,expect", [("6144", "sim:0"), ("1", "cpu")])
def test_pipelines_take_models_through_the_model_manager(tmp_path: Path, model_home: Path,
                                                         testdata: Path, budget_mb: str,
                                                         expect: str) -> None:
    """On a (simulated) 6 GB card the session models go to the device; with the device
    budget spent they fall back to CPU, and the session says where its models run."""
    server = start_session_server(tmp_path, model_home, FACESOCIAL_DEVICE="sim",
                                  FACESOCIAL_SIM_GPU_BUDGET_MB=budget_mb)
    try:
        admin, identity_id = enrol_owner(server, testdata)
        key = admin.create_session_client("gpu-1", identity_id)["api_key"]
        with SessionStream.connect(server.url, "gpu-1", key) as s:
            devices = s.session["devices"]
            assert set(devices) >= {"yunet", "w600k_mbf_folded", "yolox_nano",
                                    "antispoof_binary"}
            assert set(devices.values()) == {expect}, devices
            assert s.send_frame((testdata / "faces/obama_3.jpg").read_bytes())["decision"] \
                == "allow"
        with server.client(headers=server.auth()) as http:
            models = {m["id"]: m for m in http.get("/system/models").json()["models"]}
        assert models["yunet"]["device"] == expect
        if expect == "cpu":
            assert models["yunet"]["fallbacks"] >= 1
        admin.close()
    finally:
        server.stop()
