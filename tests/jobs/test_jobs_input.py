"""Bad input to the job endpoints: clear 4xx codes at submit, per-item reasons inside a job,
and other principals' jobs stay invisible."""

from __future__ import annotations

from pathlib import Path

from tests.jobs.deployment import Deployment, make_zip, ndjson, upload, wait_job


def _error(r) -> str:  # noqa: ANN001
    return r.json()["error"]["code"]


def test_submit_refusals_have_stable_codes(deployment: Deployment, testdata: Path) -> None:
    photo = (testdata / "faces/obama_1.jpg").read_bytes()
    jobs_before = deployment.db_rows("SELECT count(*) FROM jobs")[0][0]
    with deployment.client() as c:
        r = c.post("/batch/submit", json={"images": []})
        assert r.status_code == 415 and _error(r) == "unsupported_media_type"
        r = c.post("/batch/submit", data={"tasks": "detect"}, files={"other": ("x", b"1")})
        assert r.status_code == 400 and _error(r) == "missing_image"
        r = c.post("/batch/submit", files=upload([("a.jpg", photo)]), data={"tasks": "telepathy"})
        assert r.status_code == 400 and _error(r) == "unknown_task"
        r = c.post("/batch/submit", files=upload([("a.jpg", photo)]), data={"tasks": "[1, 2"})
        assert r.status_code == 400 and _error(r) == "malformed_request"
        r = c.post("/batch/submit", files={"archive": ("a.zip", b"PK\x03\x04 not a zip")})
        assert r.status_code == 400 and _error(r) == "invalid_archive"
        r = c.post("/batch/submit", files={"archive": ("a.zip", make_zip([("notes.txt", b"x")]))})
        assert r.status_code == 400 and _error(r) == "empty_batch"
        big = b"\xff\xd8" + b"\0" * (20 * 1024 * 1024 + 10)  # over FACESOCIAL_MAX_IMAGE_BYTES
        r = c.post("/batch/submit", files=upload([("big.jpg", big)]))
        assert r.status_code == 413 and _error(r) == "payload_too_large"
        r = c.post("/gallery/import", files=upload([("a.jpg", photo)]))
        assert r.status_code == 400 and _error(r) == "missing_identity_name"
        r = c.post("/video/deepfake", files={"image": ("a.jpg", photo)})
        assert r.status_code == 400 and _error(r) == "missing_image"
        r = c.post("/video/deepfake", files={"video": ("v.mp4", b"x")}, data={"fps": "fast"})
        assert r.status_code == 400 and _error(r) == "malformed_request"
        for bad in ("/batch/status/nope", "/batch/result/nope"):
            r = c.get(bad)
            assert r.status_code == 404 and _error(r) == "not_found"
        assert c.delete("/batch/cancel/" + "x" * 300).status_code == 404
        r = c.get("/batch/result/nope", params={"limit": 0})
        assert r.status_code == 422
    # nothing of the refused requests was kept: no job row, no spooled file
    assert deployment.db_rows("SELECT count(*) FROM jobs")[0][0] == jobs_before
    live = {j for (j,) in deployment.db_rows("SELECT id FROM jobs")}
    assert {p.name for p in (deployment.data / "spool").iterdir()} <= live


def test_bad_items_fail_alone_with_their_reason(deployment: Deployment, testdata: Path) -> None:
    photo = (testdata / "faces/biden_1.jpg").read_bytes()
    items = [("good.jpg", photo), ("truncated.jpg", photo[: len(photo) // 3]),
             ("text.jpg", b"this is not an image at all"), ("empty.png", b"")]
    with deployment.client() as c:
        r = c.post("/batch/submit", files=upload(items), data={"tasks": "detect,antispoof"})
        assert r.status_code == 202, r.text
        st = wait_job(c, r.json()["id"])
        assert st["state"] == "completed"
        assert st["counts"]["done"] == 1 and st["counts"]["failed"] == 3
        got = {rec["name"]: rec for rec in ndjson(c, st["id"])}
    assert got["good.jpg"]["result"]["face_count"] == 1
    assert got["good.jpg"]["result"]["faces"][0]["liveness"]["is_live"]
    assert got["truncated.jpg"]["error"]["code"] == "truncated_image"
    assert got["text.jpg"]["error"]["code"] == "unsupported_image_format"
    assert got["empty.png"]["error"]["code"] == "empty_image"
    for name in ("truncated.jpg", "text.jpg", "empty.png"):
        assert got[name]["attempts"] == 1  # input errors are not retried


def test_jobs_are_private_to_their_owner(deployment: Deployment, testdata: Path) -> None:
    photo = (testdata / "faces/biden_1.jpg").read_bytes()
    with deployment.client() as admin:
        job = admin.post("/batch/submit", files=upload([("a.jpg", photo)])).json()
        name = f"user-{job['id'][:8]}"
        r = admin.post("/auth/users", json={"username": name, "password": "a-long-password-1",
                                            "role": "user"})
        assert r.status_code == 201, r.text
    headers = deployment.server.auth(username=name, password="a-long-password-1")
    with deployment.server.client(headers=headers) as other:
        for r in (other.get(f"/batch/status/{job['id']}"),
                  other.get(f"/batch/result/{job['id']}"),
                  other.delete(f"/batch/cancel/{job['id']}")):
            assert r.status_code == 404 and _error(r) == "not_found"
        assert all(j["id"] != job["id"] for j in other.get("/batch/jobs").json()["items"])
        mine = other.post("/batch/submit", files=upload([("b.jpg", photo)])).json()
        assert wait_job(other, mine["id"])["state"] == "completed"
    with deployment.client() as admin:  # admins see every job
        assert admin.get(f"/batch/status/{mine['id']}").status_code == 200
        assert wait_job(admin, job["id"])["state"] == "completed"


def test_the_executor_reports_its_queue(deployment: Deployment) -> None:
    with deployment.client() as c:
        info = c.get("/system/jobs").json()
    assert info["executor"] == deployment.executor
    assert "queued" in info and "error" not in info


def test_a_video_that_is_not_a_video_fails_with_its_reason(deployment: Deployment) -> None:
    with deployment.client() as c:
        r = c.post("/video/deepfake", files={"video": ("clip.mp4", b"\x00\x00\x00 ftyp junk")})
        assert r.status_code == 202
        st = wait_job(c, r.json()["id"])
        [rec] = ndjson(c, st["id"])
    assert rec["state"] == "failed" and rec["error"]["code"] == "invalid_video"


def test_cli_batch_submit_writes_results(deployment: Deployment, testdata: Path,
                                         tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.e2e.server import ADMIN

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    names = ["obama_1.jpg", "biden_1.jpg", "group_kit_rose.jpg"]
    for i, name in enumerate(names):
        target = folder / ("sub" if i == 2 else "") / name
        target.write_bytes((testdata / "faces" / name).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "results.ndjson"
    env = {"PATH": "/usr/bin:/bin", "FACESOCIAL_API_URL": deployment.server.url,
           "FACESOCIAL_API_USER": ADMIN[0], "FACESOCIAL_API_PASSWORD": ADMIN[1]}
    done = subprocess.run([sys.executable, "-m", "facesocial", "batch", "submit", str(folder),
                           "--tasks", "detect", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 items" in done.stderr and "completed: 3 done, 0 failed" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["name"] for r in records) == sorted(["obama_1.jpg", "biden_1.jpg",
                                                         "sub/group_kit_rose.jpg"])
    faces = {r["name"]: r["result"]["face_count"] for r in records}
    assert faces["sub/group_kit_rose.jpg"] == 2 and faces["obama_1.jpg"] == 1
    bad = subprocess.run([sys.executable, "-m", "facesocial", "batch", "status", "nope"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3 and "not_found" in bad.stderr
