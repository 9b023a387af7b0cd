"""The HTTP API end to end: a real uvicorn process, httpx over loopback, real models."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import jwt
import pytest
from PIL import Image

from tests.e2e.server import ADMIN, DEV_SECRET, Server, start_server


def _file(path: Path, name: str = "image") -> dict[str, tuple[str, bytes, str]]:
    return {name: (path.name, path.read_bytes(), "application/octet-stream")}


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert body["error"]["code"] == code, body
    assert r.headers.get("x-request-id")
    return body


# ----------------------------------------------------------------------------- auth
def test_health_is_open_everything_else_needs_credentials(server: Server, testdata: Path) -> None:
    with server.client() as c:
        assert c.get("/system/health").json() == {"status": "ok"}
        _error(c.post("/face/detect", files=_file(testdata / "faces/obama_1.jpg")), 401,
               "unauthorized")
        _error(c.get("/system/models", headers={"Authorization": "Bearer nonsense"}), 401,
               "token_invalid")
        _error(c.get("/system/models", headers={"X-API-Key": "fsk_bad"}), 401, "api_key_invalid")
        assert c.get("/system/ready").json()["status"] == "ready"


def test_login_refresh_rotation_reuse_and_logout(server: Server) -> None:
    with server.client() as c:
        _error(c.post("/auth/login", json={"username": ADMIN[0], "password": "wrong"}), 401,
               "invalid_credentials")
        first = server.token()
        assert c.get("/system/models", headers={
            "Authorization": f"Bearer {first['access_token']}"}).status_code == 200
        second = c.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
        assert second["refresh_token"] != first["refresh_token"]
        # the spent token again: reuse -> the whole login is revoked
        _error(c.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}), 401,
               "token_reused")
        _error(c.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}), 401,
               "token_revoked")
        third = server.token()
        h = {"Authorization": f"Bearer {third['access_token']}"}
        assert c.post("/auth/logout", json={"refresh_token": third["refresh_token"]},
                      headers=h).json() == {"revoked": True}
        _error(c.post("/auth/refresh", json={"refresh_token": third["refresh_token"]}), 401,
               "token_revoked")


def test_expired_and_tampered_tokens(server: Server) -> None:
    token = server.token()["access_token"]
    claims = jwt.decode(token, DEV_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    expired = jwt.encode({**claims, "iat": int(time.time()) - 7200,
                          "exp": int(time.time()) - 3600}, DEV_SECRET, algorithm="HS256")
    forged = jwt.encode({**claims, "role": "admin"}, "another-secret-of-enough-length-000",
                        algorithm="HS256")
    head, body, sig = token.split(".")
    tampered = ".".join([head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")])
    with server.client() as c:
        for bad, code in ((expired, "token_expired"), (forged, "token_invalid"),
                          (tampered, "token_invalid")):
            _error(c.get("/system/vram", headers={"Authorization": f"Bearer {bad}"}), 401, code)


def test_api_keys_roles_and_scopes(server: Server, testdata: Path) -> None:
    admin = server.auth()
    with server.client() as c:
        r = c.post("/auth/keys", json={"name": "kiosk", "scopes": ["face"]}, headers=admin)
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        assert key.startswith("fsk_")
        listed = c.get("/auth/keys", headers=admin).json()
        assert any(k["name"] == "kiosk" and k["key"] is None for k in listed)
        kh = {"X-API-Key": key}
        r = c.post("/face/detect", files=_file(testdata / "faces/obama_1.jpg"), headers=kh)
        assert r.status_code == 200 and r.json()["face_count"] == 1
        _error(c.get("/gallery/identities", headers=kh), 403, "insufficient_scope")
        # a plain user may not manage keys
        r = c.post("/auth/users", json={"username": "alice", "password": "alice-password",
                                        "role": "user"}, headers=admin)
        assert r.status_code == 201, r.text
        user = server.auth(username="alice", password="alice-password")
        _error(c.post("/auth/keys", json={"name": "x", "scopes": ["face"]}, headers=user), 403,
               "insufficient_scope")
        _error(c.post("/system/models/yunet", json={"action": "unload"}, headers=user), 403,
               "insufficient_scope")
        key_id = next(k["id"] for k in listed if k["name"] == "kiosk")
        assert c.delete(f"/auth/keys/{key_id}", headers=admin).status_code == 200
        _error(c.post("/face/detect", files=_file(testdata / "faces/obama_1.jpg"), headers=kh),
               401, "api_key_invalid")


def test_rate_limits_429_with_retry_after(tmp_path: Path, model_home: Path,
                                         testdata: Path) -> None:
    srv = start_server(tmp_path, model_home, FACESOCIAL_RATE_LIMIT_LOGIN_PER_MINUTE="3",
                       FACESOCIAL_RATE_LIMIT_PER_MINUTE="5")
    try:
        h = srv.auth()  # login 1 of 3
        with srv.client() as c:
            codes = [c.get("/system/vram", headers=h).status_code for _ in range(7)]
            assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
            r = c.get("/system/vram", headers=h)
            body = _error(r, 429, "rate_limited")
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert body["error"]["details"]["retry_after"] >= 1
            # per endpoint: another endpoint of the same principal still answers
            assert c.get("/system/models", headers=h).status_code == 200
            logins = [c.post("/auth/login", json={"username": "x", "password": "y"}).status_code
                      for _ in range(3)]
            assert logins == [401, 401, 429]
    finally:
        srv.stop()


# ----------------------------------------------------------------------- face endpoints
def test_face_endpoints_multipart_and_base64(server: Server, testdata: Path) -> None:
    h = server.auth()
    with server.client(headers=h) as c:
        r = c.post("/face/detect", files=_file(testdata / "faces/group_kit_rose.jpg"))
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["face_count"] == 2 and d["models"][0]["id"] == "yunet"
        assert d["faces"][0]["quality"]["score"] > 0
        b64 = base64.b64encode((testdata / "liveness/print_attack.jpg").read_bytes()).decode()
        r = c.post("/face/antispoof", json={"image": b64})
        assert r.json()["faces"][0]["liveness"]["verdict"] == "print"
        r = c.post("/face/demographics", files=_file(testdata / "faces/rose_leslie_1.jpg"))
        assert r.json()["faces"][0]["demographics"]["gender"] == "female"
        r = c.post("/face/analyze", data={"tasks": "embed,deepfake,objects"},
                   files=_file(testdata / "faces/obama_1.jpg"))
        a = r.json()
        assert {m["id"] for m in a["models"]} >= {"yunet", "w600k_mbf_folded", "meso4_deepfake",
                                                  "yolox_nano"}
        assert a["cached"] is False
        again = c.post("/face/analyze", data={"tasks": "embed,deepfake,objects"},
                       files=_file(testdata / "faces/obama_1.jpg")).json()
        assert again["cached"] is True and again["faces"] == a["faces"]
        r = c.post("/face/verify", files={**_file(testdata / "faces/obama_1.jpg"),
                                          **_file(testdata / "faces/obama_2.jpg", "image_b")})
        v = r.json()
        assert v["match"] and v["threshold"] > 0 and v["model"]["id"] == "w600k_mbf_folded"
        r = c.post("/face/verify", files={**_file(testdata / "faces/obama_1.jpg"),
                                          **_file(testdata / "faces/biden_1.jpg", "image_b")})
        assert r.json()["match"] is False


@pytest.mark.parametrize("make, status, code", [
    (lambda t: {"files": {"other": ("x.jpg", b"abc", "image/jpeg")}}, 400, "missing_image"),
    (lambda t: {"files": {"image": ("x.txt", b"hello there, no image", "text/plain")}}, 415,
     "unsupported_image_format"),
    (lambda t: {"files": {"image": ("t.jpg", (t / "faces/obama_1.jpg").read_bytes()[:20000],
                                    "image/jpeg")}}, 400, "truncated_image"),
    (lambda t: {"files": {"image": ("big.jpg", b"\xff" * (4 * 1024 * 1024), "image/jpeg")}},
     413, "payload_too_large"),
    (lambda t: {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
     "malformed_request"),
    (lambda t: {"json": {"image": "***not base64***"}}, 400, "malformed_request"),
    (lambda t: {"json": ["a", "list"]}, 400, "malformed_request"),
    (lambda t: {"content": b"raw", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media_type"),
    (lambda t: {"data": {"tasks": "detect,teleport"},
                "files": {"image": ("a.jpg", (t / "faces/obama_1.jpg").read_bytes(), "x")}}, 400,
     "unknown_task"),
])
def test_bad_input_gets_a_clear_4xx(server: Server, testdata: Path, make, status: int,
                                    code: str) -> None:
    with server.client(headers=server.auth()) as c:
        for path in ("/face/analyze", "/face/detect"):
            kwargs = make(testdata)
            if path == "/face/detect" and code == "unknown_task":
                continue
            _error(c.post(path, **kwargs), status, code)


def test_system_models_metrics_and_admin_controls(server: Server, testdata: Path) -> None:
    h = server.auth()
    with server.client(headers=h) as c:
        c.post("/face/detect", files=_file(testdata / "faces/obama_1.jpg"))
        models = {m["id"]: m for m in c.get("/system/models").json()["models"]}
        assert models["yunet"]["state"] == "loaded" and models["yunet"]["zone"] == "critical"
        assert "zones" in c.get("/system/vram").json()
        assert c.post("/system/models/yunet", json={"action": "pin"}).json()["result"]["pinned"]
        r = c.post("/system/models/mobilefacenet", json={"action": "load"})
        assert r.json()["result"]["state"] == "loaded"
        assert c.post("/system/models/mobilefacenet",
                      json={"action": "unload"}).json()["result"]["state"] == "unloaded"
        _error(c.post("/system/models/nope", json={"action": "load"}), 404, "unknown_model")
        _error(c.post("/system/models/yunet", json={"action": "explode"}), 422,
               "validation_error")
        text = c.get("/system/metrics").text
        assert "facesocial_http_requests_total" in text
        assert "facesocial_model_loads_total" in text
        assert 'endpoint="/api/v1/face/detect"' in text


# ------------------------------------------------------------------------------ gallery
def test_gallery_enrol_recognize_and_strangers(gallery_server: Server, testdata: Path,
                                               labels: dict) -> None:
    """Enrol the labelled people, then each is found top-1 and strangers are unknown."""
    srv = gallery_server
    enrol = {"obama": ["obama_1.jpg", "obama_3.jpg"], "biden": ["biden_1.jpg"],
             "kit_harington": ["kit_harington_1.jpg"], "rose_leslie": ["rose_leslie_1.jpg"]}
    probes = {"obama": "obama_2.jpg", "biden": "biden_2.jpg",
              "kit_harington": "kit_harington_2.jpg", "rose_leslie": "rose_leslie_2.jpg"}
    strangers = ["alex_lacamoire_1.jpg", "lin_manuel_miranda.png"]
    with srv.client(headers=srv.auth()) as c:
        ids = {}
        for person, files in enrol.items():
            r = c.post("/gallery/identities", json={"name": person, "metadata": {"team": "t1"}})
            assert r.status_code == 201, r.text
            ids[person] = r.json()["id"]
            multipart = {f"image{i}" if i else "image": (
                f, (testdata / "faces" / f).read_bytes(), "image/jpeg")
                for i, f in enumerate(files)}
            r = c.post(f"/gallery/identities/{ids[person]}/faces", files=multipart)
            assert r.status_code == 201, r.text
            assert len(r.json()["faces"]) == len(files)
        # idempotent: the same image again adds nothing
        r = c.post(f"/gallery/identities/{ids['biden']}/faces",
                   files=_file(testdata / "faces/biden_1.jpg"))
        assert r.json()["faces"][0]["outcome"] == "existing"
        listed = c.get("/gallery/identities", params={"name": "bid"}).json()
        assert listed["total"] == 1 and listed["items"][0]["face_count"] == 1
        assert c.get("/gallery/identities", params={"meta": "team=t1"}).json()["total"] == 4
        for person, probe in probes.items():
            r = c.post("/face/recognize", files=_file(testdata / "faces" / probe))
            assert r.status_code == 200, r.text
            face = r.json()["faces"][0]
            assert face["identity_id"] == ids[person], (person, face)
            r = c.post("/face/verify", data={"identity_id": ids[person]},
                       files=_file(testdata / "faces" / probe))
            assert r.json()["match"] is True
        for probe in strangers:
            face = c.post("/face/recognize", files=_file(testdata / "faces" / probe)).json()
            assert face["faces"][0]["identity_id"] is None, face
        # one image, two enrolled people: each gets its own identity
        group = c.post("/face/recognize", files=_file(testdata / "faces/group_kit_rose.jpg"))
        got = {f["identity_id"] for f in group.json()["faces"]}
        assert got == {ids["kit_harington"], ids["rose_leslie"]}
        r = c.post("/gallery/search", files=_file(testdata / "faces/obama_4.jpg"))
        assert r.json()["matches"][0]["identity_id"] == ids["obama"]


def test_enrolment_refusals_and_deletes(gallery_server: Server, testdata: Path) -> None:
    srv = gallery_server
    with srv.client(headers=srv.auth()) as c:
        iid = c.post("/gallery/identities", json={"name": "refusals"}).json()["id"]
        base = f"/gallery/identities/{iid}/faces"
        _error(c.post(base, files=_file(testdata / "liveness/print_attack.jpg")), 422,
               "spoof_detected")
        _error(c.post(base, files=_file(testdata / "faces/group_obama_biden.jpg")), 422,
               "expected_one_face")
        blank = io.BytesIO()
        Image.new("RGB", (320, 240), (128, 128, 128)).save(blank, "JPEG")
        _error(c.post(base, files={"image": ("blank.jpg", blank.getvalue(), "image/jpeg")}),
               422, "expected_one_face")
        # a real but small face: refused for quality, with the reasons
        body = _error(c.post(base, files=_file(testdata / "phone/nophone2.jpg")), 422,
                      "low_quality_face")
        assert body["error"]["details"]["reasons"]
        _error(c.post("/gallery/identities/unknown-id/faces",
                      files=_file(testdata / "faces/obama_1.jpg")), 404, "not_found")
        _error(c.get("/gallery/identities/unknown-id"), 404, "not_found")
        # found by schemathesis: an offset beyond the database's integers was a 500
        _error(c.get(f"{base}", params={"offset": 10**27}), 422, "validation_error")
        _error(c.get("/gallery/identities", params={"offset": 10**27}), 422, "validation_error")
        r = c.post(base, files=_file(testdata / "faces/kit_harington_3.jpg"))
        assert r.status_code == 201, r.text
        face_id = r.json()["faces"][0]["id"]
        assert c.get(base).json()["total"] == 1
        assert c.delete(f"{base}/{face_id}").status_code == 200
        assert c.get(base).json()["total"] == 0
        assert c.delete(f"/gallery/identities/{iid}").status_code == 200
        _error(c.get(f"/gallery/identities/{iid}"), 404, "not_found")
