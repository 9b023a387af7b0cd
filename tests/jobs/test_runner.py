"""The item runner's policy and the job store's races, in process on a real SQLite database.

The work itself is replaced by small handler functions here (what the runner does with
an item is the subject, not the analysis, which the end-to-end tests cover).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from facesocial.db.session import engine_for_url, session_factory, upgrade
from facesocial.errors import InvalidArchive, PayloadTooLarge, TooManyItems, TruncatedImage
from facesocial.jobs import store
from facesocial.jobs.executors import EmbeddedExecutor
from facesocial.jobs.runner import ItemRunner
from facesocial.jobs.service import JobService, UploadedFile
from facesocial.jobs.spool import Spool, zip_entries
from facesocial.settings import Settings
from tests.gallery.conftest import _create_database, pg_admin_url  # noqa: F401 - fixture
from tests.jobs.deployment import make_zip


class Ctx:
    """A JobContext without models: the runner never touches them with these handlers."""

    def __init__(self, tmp: Path, database_url: str | None = None) -> None:
        self.settings = Settings(data_dir=tmp, database_url=database_url, batch_max_attempts=3,
                                 batch_retry_base_s=0.5)
        db = engine_for_url(self.settings.sqlalchemy_url)
        upgrade(db)
        self.sessions = session_factory(db)
        self.engine = self.gallery = None
        self.spool = Spool(self.settings.spool_path)

    def job(self, n: int = 1, kind: str = "batch") -> tuple[str, list[str]]:
        svc = JobService(self.settings, self.sessions, None, None,
                         executor=_NullExecutor())
        st = svc.submit(kind=kind, owner="t", tasks=["detect"], options={},
                        files=[UploadedFile(f"{i}.jpg", io.BytesIO(b"img%d" % i))
                               for i in range(n)], archives=[])
        with self.sessions() as s:
            return st.id, store.item_ids(s, st.id)

    def item(self, item_id: str) -> Any:
        with self.sessions() as s:
            from facesocial.db.models import JobItem

            return s.get(JobItem, item_id)

    def status(self, job_id: str) -> Any:
        with self.sessions() as s:
            return store.status(s, store.get_job(s, job_id))


class _NullExecutor:
    name = "embedded"

    def submit(self, job_id: str, item_ids: list[str]) -> None:
        pass

    def forget(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 30.0) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Ctx:
    """The job store on SQLite and on a real PostgreSQL (a fresh database each test)."""
    if request.param == "sqlite":
        return Ctx(tmp_path)
    return Ctx(tmp_path, _create_database(request.getfixturevalue("pg_admin_url")))


def runner(ctx: Ctx, work: Callable[..., dict[str, Any]]) -> ItemRunner:
    return ItemRunner(ctx, worker="test", handlers={"batch": work})  # type: ignore[arg-type]


def test_transient_errors_are_retried_with_backoff_then_succeed(ctx: Ctx) -> None:
    job_id, [item_id] = ctx.job()
    calls: list[int] = []

    def flaky(_ctx: Any, _job: Any, item: Any) -> dict[str, Any]:
        calls.append(item.attempts)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        return {"ok": True}

    r = runner(ctx, flaky)
    first, second, third = r.process(item_id), r.process(item_id), r.process(item_id)
    assert (first.state, first.retry_in) == ("retry", 0.5)
    assert (second.state, second.retry_in) == ("retry", 1.0)  # exponential
    assert third.state == "done" and calls == [1, 2, 3]
    item = ctx.item(item_id)
    assert item.state == "done" and item.attempts == 3 and item.result["ok"] is True
    assert ctx.status(job_id).state == "completed"


def test_transient_errors_give_up_after_max_attempts(ctx: Ctx) -> None:
    _job_id, [item_id] = ctx.job()

    def down(*_: Any) -> dict[str, Any]:
        raise ConnectionError("broker unreachable")

    r = runner(ctx, down)
    outcomes = [r.process(item_id).state for _ in range(3)]
    assert outcomes == ["retry", "retry", "failed"]
    item = ctx.item(item_id)
    assert item.error_code == "retries_exhausted" and "broker unreachable" in item.error_message
    assert r.process(item_id).state == "duplicate"  # a late re-delivery changes nothing


def test_input_errors_fail_at_once_and_bugs_are_recorded(ctx: Ctx) -> None:
    job_id, (a, b) = ctx.job(2)

    def work(_ctx: Any, _job: Any, item: Any) -> dict[str, Any]:
        if item.seq == 0:
            raise TruncatedImage("the image data ends early")
        raise KeyError("a bug")

    r = runner(ctx, work)
    assert r.process(a).state == "failed" and r.process(b).state == "failed"
    assert (ctx.item(a).error_code, ctx.item(a).attempts) == ("truncated_image", 1)
    assert ctx.item(b).error_code == "internal_error" and "KeyError" in ctx.item(b).error_message
    st = ctx.status(job_id)
    assert st.state == "completed" and st.counts == {"failed": 2}


def test_an_item_that_keeps_killing_workers_stops_being_delivered(ctx: Ctx) -> None:
    _job_id, [item_id] = ctx.job()
    for _ in range(3):  # three deliveries whose worker died mid-item: claimed, never finished
        with ctx.sessions.begin() as s:
            assert store.claim(s, item_id, "doomed") is not None
    out = runner(ctx, lambda *_: {"ok": True}).process(item_id)
    assert out.state == "failed" and ctx.item(item_id).error_code == "too_many_attempts"


def test_concurrent_deliveries_finish_an_item_once(ctx: Ctx) -> None:
    job_id, [item_id] = ctx.job()
    gate = threading.Barrier(2)
    results: list[str] = []

    def slow(*_: Any) -> dict[str, Any]:
        gate.wait(10)  # both deliveries are inside the work at the same time
        return {"ok": True}

    r = runner(ctx, slow)
    threads = [threading.Thread(target=lambda: results.append(r.process(item_id).state))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["done", "duplicate"]
    st = ctx.status(job_id)
    assert st.counts == {"done": 1} and st.state == "completed"


def test_cancelled_items_are_skipped_and_inputs_removed(ctx: Ctx) -> None:
    job_id, ids = ctx.job(5)
    r = runner(ctx, lambda *_: {"ok": True})
    assert r.process(ids[0]).state == "done"
    svc = JobService(ctx.settings, ctx.sessions, None, None, executor=_NullExecutor())
    st = svc.cancel(job_id)
    assert st.state == "cancelled" and st.counts == {"done": 1, "cancelled": 4}
    assert [r.process(i).state for i in ids[1:]] == ["duplicate"] * 4
    assert not ctx.spool.job_dir(job_id).exists()


def test_an_orphaned_embedded_job_is_taken_over(ctx: Ctx) -> None:
    """A job claimed by a process of this host that no longer exists is resumed at once."""
    job_id, ids = ctx.job(3)
    dead = subprocess_pid_that_exited()
    with ctx.sessions.begin() as s:
        store.get_job(s, job_id).claimed_by = f"{socket.gethostname()}:{dead}:0000"
    svc = JobService(ctx.settings, ctx.sessions, None, None)
    svc.runner.handlers = {"batch": lambda *_: {"ok": True}}
    assert isinstance(svc.executor, EmbeddedExecutor)
    svc.start()
    try:
        deadline = time.monotonic() + 30
        while ctx.status(job_id).state != "completed":
            assert time.monotonic() < deadline, ctx.status(job_id)
            time.sleep(0.05)
    finally:
        svc.stop()
    with ctx.sessions() as s:
        assert store.get_job(s, job_id).claimed_by == svc.identity
    # a job of a live process on this host is left alone
    job2, _ = ctx.job(1)
    with ctx.sessions.begin() as s:
        live = store.get_job(s, job2)
        live.claimed_by = f"{socket.gethostname()}:{os.getppid()}:0000"
        live.heartbeat_at = store.utcnow()
    other = JobService(ctx.settings, ctx.sessions, None, None, executor=_NullExecutor())
    assert other._take_over_orphans(store.utcnow()) == 0  # noqa: SLF001


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_zip_limits(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ok = make_zip([("a/1.jpg", b"x"), ("../../etc/2.jpg", b"y"), ("__MACOSX/a/._1.jpg", b"z"),
                   ("a/.hidden.jpg", b"h"), ("a/notes.txt", b"t")])
    zf, entries, skipped = zip_entries(io.BytesIO(ok), max_entries=10, max_entry_bytes=10,
                                       max_total_bytes=100)
    assert [(e.name, e.label) for e in entries] == [("a/1.jpg", "a"), ("../../etc/2.jpg", "etc")]
    assert set(skipped) == {"__MACOSX/a/._1.jpg", "a/.hidden.jpg", "a/notes.txt"}
    item = spool.write("job1", 1, entries[1].name, zf.open(entries[1].name), max_bytes=10)
    assert item.input_path == "job1/000001.jpg"  # named by number: no path from the client
    assert spool.read(item.input_path) == b"y"
    with pytest.raises(PayloadTooLarge):
        zip_entries(io.BytesIO(make_zip([("a.jpg", b"0" * 50)])), max_entries=10,
                    max_entry_bytes=10, max_total_bytes=100)
    with pytest.raises(PayloadTooLarge):
        zip_entries(io.BytesIO(make_zip([(f"{i}.jpg", b"0" * 9) for i in range(20)])),
                    max_entries=100, max_entry_bytes=10, max_total_bytes=100)
    with pytest.raises(TooManyItems):
        zip_entries(io.BytesIO(make_zip([(f"{i}.jpg", b"0") for i in range(11)])),
                    max_entries=10, max_entry_bytes=10, max_total_bytes=100)
    with pytest.raises(InvalidArchive):
        zip_entries(io.BytesIO(b"PK\x03\x04garbage"), max_entries=10, max_entry_bytes=10,
                    max_total_bytes=100)


def test_an_import_removes_the_identities_left_without_a_face(ctx: Ctx) -> None:
    """An import creates its new identities at submit; when it ends, those that got no face
    are deleted (on completion and on cancel), except one another running import uses."""
    from facesocial.db.models import Identity
    from facesocial.gallery import repository as repo

    svc = JobService(ctx.settings, ctx.sessions, None, None, executor=_NullExecutor())

    def submit(label: str, n: int) -> tuple[str, list[str], str]:
        st = svc.submit(kind="gallery_import", owner="t", tasks=[], options={},
                        files=[UploadedFile(f"{label}{i}.jpg", io.BytesIO(b"img%d" % i))
                               for i in range(n)], archives=[], default_label=label)
        with ctx.sessions() as s:
            job = store.get_job(s, st.id)
            return st.id, store.item_ids(s, st.id), job.options["identities"][label]

    def enrol_first(_ctx: Any, job: Any, item: Any) -> dict[str, Any]:
        if item.seq == 0:  # the first image of the person enrols, the others are refused
            with ctx.sessions.begin() as s:
                repo.add_face(s, job.options["identities"][item.label],
                              embedding=np.array([1.0, 0.0], np.float32), model_id="m",
                              model_version="1", quality=0.9, image_sha256=item.input_sha256)
            return {"outcome": "created"}
        raise TruncatedImage("not an image")

    def refuse(*_: Any) -> dict[str, Any]:
        raise TruncatedImage("not an image")

    def alive() -> set[str]:
        with ctx.sessions() as s:
            return set(s.scalars(select(Identity.name)))

    kept_job, kept_items, _ = submit("kept", 2)
    r = ItemRunner(ctx, worker="t", handlers={"gallery_import": enrol_first})  # type: ignore[arg-type]
    assert [r.process(i).state for i in kept_items] == ["done", "failed"]
    assert ctx.status(kept_job).summary.get("identities_removed_empty") is None

    gone_job, gone_items, gone_id = submit("gone", 2)
    shared_job, shared_items, shared_id = submit("gone", 1)  # reuses the identity: still runs
    assert shared_id == gone_id
    r = ItemRunner(ctx, worker="t", handlers={"gallery_import": refuse})  # type: ignore[arg-type]
    assert [r.process(i).state for i in gone_items] == ["failed", "failed"]
    assert ctx.status(gone_job).state == "completed"
    assert "gone" in alive()  # the running import still needs it
    svc.cancel(shared_job)  # cancelled with nothing done: the empty identity goes now
    assert alive() == {"kept"}
    assert ctx.status(shared_job).summary["identities_removed_empty"] == [gone_id]
