"""Jobs end to end, with the embedded executor and with Celery workers on Redis.

Real processes throughout: the API is uvicorn over loopback; Celery workers are
`facesocial worker` processes; "killing a worker" is SIGKILL (for the embedded
executor the API process is the worker, so it is the one killed).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.jobs.deployment import Deployment, make_zip, ndjson, upload, wait_job


def _sixty(face_photos: list[tuple[str, bytes, int]]) -> list[tuple[str, bytes, int]]:
    """60 labelled items: every labelled face photo three times, under distinct names."""
    return [(f"r{k}_{name}", data, n) for k in range(3) for name, data, n in face_photos]


def _check_analysis(records: list[dict], expected: list[tuple[str, bytes, int]]) -> None:
    assert [r["index"] for r in records] == list(range(len(expected)))  # each item once
    for rec, (name, _data, faces) in zip(records, expected, strict=True):
        assert rec["name"] == name
        assert rec["state"] == "done", rec
        result = rec["result"]
        assert result["face_count"] == faces, (name, result["face_count"])
        for face in result["faces"]:
            assert face["embedding"]["dim"] == 512
            assert face["embedding"]["model"]["id"] == "w600k_mbf_folded"
        assert {m["id"] for m in result["models"]} >= {"yunet", "w600k_mbf_folded"}


@pytest.mark.parametrize("executor", ["embedded", "celery"])
def test_a_killed_worker_loses_nothing_and_counts_nothing_twice(
        executor: str, fresh_deployment, face_photos) -> None:  # noqa: ANN001
    dep: Deployment = fresh_deployment(executor)
    items = _sixty(face_photos)
    with dep.client() as c:
        r = c.post("/batch/submit", files=upload([(n, d) for n, d, _ in items]),
                   data={"tasks": "detect,embed"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["total"] == 60 and job["executor"] == executor
        wait_job(c, job["id"], lambda st: st["counts"]["done"] >= 5
                 and st["counts"]["running"] >= 1)
    dep.kill_processing()  # kill -9 while items are in flight
    in_flight = {seq for (seq,) in dep.db_rows(
        "SELECT seq FROM job_items WHERE job_id = :j AND state = 'running'", j=job["id"])}
    done_before = dep.db_rows("SELECT count(*) FROM job_items WHERE job_id = :j AND "
                              "state = 'done'", j=job["id"])[0][0]
    assert in_flight, "no item was running when the worker was killed"
    assert done_before < 60
    dep.start_processing()
    with dep.client() as c:
        st = wait_job(c, job["id"])
        assert st["state"] == "completed", st
        assert st["counts"] == {"pending": 0, "running": 0, "done": 60, "failed": 0,
                                "cancelled": 0}
        assert st["summary"]["faces"] == sum(n for _, _, n in items)
        records = ndjson(c, job["id"])
    _check_analysis(records, items)
    for rec in records:  # the items the killed process held were delivered again, once more
        if rec["index"] in in_flight:
            assert rec["attempts"] >= 2, rec
    # the spool is cleaned when the job ends
    assert not (dep.data / "spool" / job["id"]).exists()


@pytest.mark.parametrize("executor", ["embedded", "celery"])
def test_restarting_the_api_mid_job_keeps_the_job(executor: str, fresh_deployment,
                                                  face_photos) -> None:  # noqa: ANN001
    dep: Deployment = fresh_deployment(executor)
    items = _sixty(face_photos)
    with dep.client() as c:
        job = c.post("/batch/submit", files=upload([(n, d) for n, d, _ in items]),
                     data={"tasks": "detect,embed"}).json()
        before = wait_job(c, job["id"], lambda st: st["counts"]["done"] >= 5)
        assert before["state"] == "running"
    dep.restart_server()
    with dep.client() as c:
        st = c.get(f"/batch/status/{job['id']}").json()
        assert st["created_at"] == job["created_at"]
        assert st["started_at"] == before["started_at"]
        assert st["counts"]["done"] >= before["counts"]["done"]
        st = wait_job(c, job["id"])
        assert st["state"] == "completed" and st["counts"]["done"] == 60, st
        _check_analysis(ndjson(c, job["id"]), items)


def test_cancel_stops_pending_items(deployment: Deployment, face_photos) -> None:  # noqa: ANN001
    items = _sixty(face_photos)
    with deployment.client() as c:
        job = c.post("/batch/submit", files=upload([(n, d) for n, d, _ in items]),
                     data={"tasks": "detect,embed,antispoof"}).json()
        wait_job(c, job["id"], lambda st: st["counts"]["done"] >= 2)
        r = c.delete(f"/batch/cancel/{job['id']}")
        assert r.status_code == 200, r.text
        st = r.json()
        assert st["state"] == "cancelled" and st["finished_at"] is not None
        assert st["counts"]["cancelled"] > 0 and st["counts"]["pending"] == 0
        settled = wait_job(c, job["id"], lambda s: s["counts"]["running"] == 0, timeout=60)
        again = c.delete(f"/batch/cancel/{job['id']}")  # harmless
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
        time.sleep(3)  # the queue drains meanwhile: workers skip the cancelled items
        final = c.get(f"/batch/status/{job['id']}").json()
        assert final["counts"] == settled["counts"]
        assert final["counts"]["done"] < 60
        records = c.get(f"/batch/result/{job['id']}", params={"limit": 1000}).json()["items"]
        assert {r["state"] for r in records} <= {"done", "cancelled"}
        assert all("result" not in r for r in records if r["state"] == "cancelled")
        # a completed job cannot be cancelled
        small = c.post("/batch/submit", files=upload([(items[0][0], items[0][1])])).json()
        assert wait_job(c, small["id"])["state"] == "completed"
        late = c.delete(f"/batch/cancel/{small['id']}")
        assert late.status_code == 409 and late.json()["error"]["code"] == "job_finished"


def _import_zip(face_photos_labels: dict, testdata: Path) -> tuple[bytes, dict[str, int]]:
    """A zip with one folder per labelled person (single-face photos); returns it and the
    number of photos per person."""
    entries, per = [], {}
    for name, meta in face_photos_labels.items():
        if meta["faces"] == 1 and meta.get("identity"):
            entries.append((f"people/{meta['identity']}/{Path(name).name}",
                            (testdata / name).read_bytes()))
            per[meta["identity"]] = per.get(meta["identity"], 0) + 1
    entries.append(("people/README.txt", b"not an image"))
    # a person whose only photo has no face: the identity made for them must not stay behind
    blank = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(blank, "JPEG")
    entries.append(("people/nobody/wall.jpg", blank.getvalue()))
    return make_zip(entries), per


def test_gallery_import_enrols_once(deployment: Deployment, labels: dict,
                                    testdata: Path) -> None:
    archive, per = _import_zip(labels["faces"], testdata)
    with deployment.client() as c:
        r = c.post("/gallery/import", files={"archive": ("people.zip", archive)})
        assert r.status_code == 202, r.text
        first = wait_job(c, r.json()["id"])
        assert first["state"] == "completed"
        assert first["summary"]["identities"] == len(per) + 1  # + nobody
        assert first["summary"]["skipped_entries"] == ["people/README.txt"]
        records = ndjson(c, first["id"])
        done = [x for x in records if x["state"] == "done"]
        failed = [x for x in records if x["state"] == "failed"]
        assert len(records) == sum(per.values()) + 1
        nobody = [x for x in failed if x["error"]["code"] == "expected_one_face"]
        assert len(nobody) == 1 and nobody[0]["name"].endswith("nobody/wall.jpg")
        assert len(first["summary"]["identities_removed_empty"]) == 1
        # other refusals carry the enrolment reason (small or profile faces), never a crash
        assert {x["error"]["code"] for x in failed if x not in nobody} <= {"low_quality_face"}
        assert len(failed) <= 4
        assert first["summary"]["faces_created"] == len(done)
        identities = {i["name"]: i for i in c.get("/gallery/identities",
                                                  params={"limit": 200}).json()["items"]}
        for person in per:  # every labelled person got at least one face
            assert identities[person]["face_count"] >= 1, person
        assert set(identities) == set(per)  # no empty "nobody"
        # the enrolled people are recognised in a photo none of their faces came from
        group = (testdata / "faces/group_kit_rose.jpg").read_bytes()
        rec = c.post("/face/recognize", files={"image": ("g.jpg", group)}).json()
        assert {f["name"] for f in rec["faces"]} == {"kit_harington", "rose_leslie"}

        # the same import again adds nothing
        second = wait_job(c, c.post("/gallery/import",
                                    files={"archive": ("people.zip", archive)}).json()["id"])
        assert second["state"] == "completed"
        assert second["summary"]["faces_created"] == 0
        assert second["summary"]["faces_existing"] == len(done)
        after = {i["name"]: i for i in c.get("/gallery/identities",
                                             params={"limit": 200}).json()["items"]}
        assert {k: v["face_count"] for k, v in after.items()} == \
            {k: v["face_count"] for k, v in identities.items()}
        assert {k: v["id"] for k, v in after.items()} == {k: v["id"] for k, v in
                                                           identities.items()}


def _video(testdata: Path, labels: dict, seconds_each: int = 1, fps: int = 10,
           ) -> tuple[bytes, list[bool]]:
    """An H.264 video holding each labelled deepfake/real test frame for one second."""
    names = sorted(labels["deepfake"])
    order = [n for pair in zip([n for n in names if labels["deepfake"][n]["fake"]],
                               [n for n in names if not labels["deepfake"][n]["fake"]],
                               strict=True) for n in pair]  # fake, real, fake, real
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for name in order:
            rgb = np.asarray(Image.open(testdata / name).convert("RGB").resize((256, 256)))
            for _ in range(seconds_each * fps):
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue(), [labels["deepfake"][n]["fake"] for n in order]


def test_video_deepfake_scores_follow_the_labels(deployment: Deployment, labels: dict,
                                                 testdata: Path) -> None:
    video, fake_per_second = _video(testdata, labels)
    with deployment.client() as c:
        r = c.post("/video/deepfake", files={"video": ("clip.mp4", video, "video/mp4")},
                   data={"fps": "2"})
        assert r.status_code == 202, r.text
        st = wait_job(c, r.json()["id"])
        assert st["state"] == "completed" and st["kind"] == "video_deepfake"
        [record] = ndjson(c, st["id"])
    result = record["result"]
    assert result["frames_sampled"] == 2 * len(fake_per_second)
    assert {m["id"] for m in result["models"]} >= {"meso4_deepfake"}
    for frame in result["frames"]:
        fake = fake_per_second[int(frame["time_s"])]
        assert frame["faces"] == 1
        assert (frame["fake_score"] > result["threshold"]) == fake, frame
    assert st["summary"]["verdict"] == result["verdict"]
