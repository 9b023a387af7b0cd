"""A Celery worker "on another machine": it shares only what the README says machines must
share (PostgreSQL, Redis, the spool directory) and has its own data directory, so any hidden
use of the API host's local files (SQLite, caches, spool under data_dir) would fail here."""

from __future__ import annotations

from pathlib import Path

from tests.gallery.conftest import _create_database, pg_admin_url  # noqa: F401 - fixture
from tests.jobs.deployment import deploy, ndjson, upload, wait_job


def test_a_worker_with_its_own_data_dir_runs_batch_and_import_jobs(
        tmp_path: Path, model_home: Path, pg_admin_url: str,  # noqa: F811
        face_photos: list[tuple[str, bytes, int]]) -> None:
    shared_spool = tmp_path / "nfs-spool"
    dep = deploy("celery", tmp_path / "api", model_home, workers=0,
                 FACESOCIAL_DATABASE_URL=_create_database(pg_admin_url),
                 FACESOCIAL_SPOOL_DIR=str(shared_spool))
    try:
        remote_data = tmp_path / "worker-host" / "data"
        remote_data.mkdir(parents=True)
        dep.server.env = {**dep.server.env, "FACESOCIAL_DATA_DIR": str(remote_data)}
        dep.start_worker()
        items = face_photos[:8]
        with dep.client() as c:
            r = c.post("/batch/submit", files=upload([(n, d) for n, d, _ in items]),
                       data={"tasks": "detect,embed"})
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["id"])
            assert job["state"] == "completed" and job["counts"]["done"] == len(items), job
            records = ndjson(c, job["id"])
            assert [x["result"]["face_count"] for x in records] == [n for _, _, n in items]

            # an import done by that worker lands in the shared gallery the API searches
            by_name = {n: d for n, d, _ in face_photos}
            person = [(n, by_name[n]) for n in ("obama_1.jpg", "obama_2.jpg")]
            r = c.post("/gallery/import", files=upload(person), data={"identity": "obama"})
            assert r.status_code == 202, r.text
            imp = wait_job(c, r.json()["id"])
            assert imp["state"] == "completed" and imp["summary"]["faces_created"] >= 1, imp
            rec = c.post("/face/recognize",
                         files={"image": ("p.jpg", by_name["obama_3.jpg"])}).json()
            assert [f["name"] for f in rec["faces"]] == ["obama"], rec
        # the worker wrote nothing into its own data dir that the job depended on, and the
        # API host's spool under its data dir was never used
        assert not (remote_data / "facesocial.db").exists()
        assert not (dep.data / "spool").exists()
    finally:
        dep.stop()
