"""JobService: what the API calls to submit, watch, read, cancel and clean up jobs.

One per API process. It spools inputs, writes the job and its items in one
transaction, hands the item ids to the executor, and runs a sweeper thread:

* heartbeat the embedded jobs this process runs, and take over embedded jobs
  whose process died (same host and that process is gone, or no heartbeat for
  ``batch_lease_s``): a restarted API process resumes its own jobs at start;
* publish again the open items of Celery jobs that made no progress for
  ``batch_stall_s`` (a broker restart lost the queue): duplicates are harmless;
* remove spooled inputs of ended jobs after ``batch_input_retention_s``, delete
  ended jobs after ``batch_job_retention_s``, and prune the gallery change log.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO

from sqlalchemy.orm import Session, sessionmaker

from facesocial.db.models import new_id, utcnow
from facesocial.errors import (
    EmptyBatch,
    FaceSocialError,
    InvalidArchive,
    InvalidInput,
    JobFinished,
    MissingIdentityName,
    QueueUnavailable,
    TooManyItems,
)
from facesocial.gallery import repository as repo
from facesocial.jobs import store
from facesocial.jobs.executors import CeleryExecutor, EmbeddedExecutor, Executor
from facesocial.jobs.handlers import IMPORT_SOURCE, end_import
from facesocial.jobs.model import CANCELLED, OPEN_ITEM, JobStatus, NewItem
from facesocial.jobs.runner import ItemRunner, finish_inputs
from facesocial.jobs.spool import Spool, folder_label, open_entry, zip_entries
from facesocial.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file from the request: its client-side name and a reader."""

    name: str
    file: BinaryIO


class JobService:
    """Implements :class:`facesocial.jobs.handlers.JobContext` for the embedded executor."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], engine: Any,
                 gallery: Any, executor: Executor | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.engine = engine
        self.gallery = gallery
        self.spool = Spool(settings.spool_path)
        # who this process is, for the embedded jobs it claims (the token tells a restarted
        # process with the same pid, as in a container, from the one that died)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.runner = ItemRunner(self, worker=f"embedded:{self.identity}")
        if executor is None:
            if settings.batch_executor == "celery":
                from facesocial.jobs.celery_app import make_celery

                executor = CeleryExecutor(make_celery(settings))
            else:
                executor = EmbeddedExecutor(self.runner, settings.batch_workers)
        self.executor = executor
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.spool.root.mkdir(parents=True, exist_ok=True)
        self.executor.start()
        self.sweep()  # resume what a previous run of this process left behind
        self._sweeper = threading.Thread(target=self._sweep_loop, name="facesocial-jobs-sweep",
                                         daemon=True)
        self._sweeper.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.executor.stop(timeout)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.batch_sweep_interval_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - e.g. database briefly unreachable
                log.exception("job sweep failed; trying again next interval")

    # --------------------------------------------------------------- submit
    def submit(self, *, kind: str, owner: str | None, tasks: list[str],
               options: dict[str, Any], files: list[UploadedFile],
               archives: list[UploadedFile], default_label: str | None = None,
               max_item_bytes: int | None = None) -> JobStatus:
        """Spool the inputs, record the job, queue its items. All or nothing: a refused
        request leaves no job and no files behind."""
        job_id = new_id()
        try:
            items, skipped = self._spool_inputs(job_id, files, archives, default_label,
                                                max_item_bytes or self.settings.max_image_bytes)
            if not items:
                raise EmptyBatch("the request holds no images to process"
                                 + (f" ({len(skipped)} entries skipped: not images)"
                                    if skipped else ""), skipped=skipped[:20])
            summary: dict[str, Any] = {"skipped_entries": skipped[:100]} if skipped else {}
            if kind == "gallery_import":
                options = {**options, "identities": self._resolve_identities(items, job_id)}
                summary["identities"] = len(set(options["identities"].values()))
            embedded = isinstance(self.executor, EmbeddedExecutor)
            with self.sessions.begin() as session:
                store.create_job(session, job_id=job_id, kind=kind,
                                 executor=self.executor.name, owner=owner, tasks=tasks,
                                 options=options, items=items,
                                 spool_dir=str(self.spool.job_dir(job_id)), summary=summary,
                                 claimed_by=self.identity if embedded else None)
                ids = store.item_ids(session, job_id)
        except BaseException:
            self.spool.remove(job_id)
            raise
        try:
            self.executor.submit(job_id, ids)
        except QueueUnavailable as exc:
            with self.sessions.begin() as session:
                store.fail_job(session, job_id, exc.message)
            finish_inputs(self, job_id)
            raise
        log.info("job %s (%s): %d items queued on %s", job_id, kind, len(ids), self.executor.name)
        return self.status(job_id)

    def _spool_inputs(self, job_id: str, files: list[UploadedFile],
                      archives: list[UploadedFile], default_label: str | None,
                      max_item_bytes: int) -> tuple[list[NewItem], list[str]]:
        s = self.settings
        items: list[NewItem] = []
        skipped: list[str] = []

        def add(name: str, src: BinaryIO, label: str | None) -> None:
            if len(items) >= s.batch_max_items:
                raise TooManyItems(f"a job holds at most {s.batch_max_items} items",
                                   limit=s.batch_max_items)
            items.append(self.spool.write(job_id, len(items), name, src,
                                          max_bytes=max_item_bytes, label=label))

        for f in files:
            add(f.name, f.file, folder_label(f.name) or default_label)
        for a in archives:
            zf, entries, skip = zip_entries(a.file, max_entries=s.batch_max_items,
                                            max_entry_bytes=max_item_bytes,
                                            max_total_bytes=s.batch_max_spool_bytes)
            skipped += skip
            with zf:
                for entry in entries:
                    try:
                        add(entry.name, open_entry(zf, entry), entry.label or default_label)
                    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                        raise InvalidArchive(f"zip entry '{entry.name[:100]}' is corrupt: "
                                             f"{exc}") from None
        return items, skipped

    def _resolve_identities(self, items: list[NewItem], job_id: str) -> dict[str, str]:
        """Identity id per label: the oldest identity of that exact name, or a new one.
        Done once at submit, so items running in parallel never race to create one."""
        unnamed = [it.name for it in items if not (it.label and it.label.strip())]
        if unnamed:
            raise MissingIdentityName(
                f"{len(unnamed)} images have no identity name: put them in a folder named "
                "after the person in the zip, or send an 'identity' field",
                names=unnamed[:20])
        out: dict[str, str] = {}
        with self.sessions.begin() as session:
            for label in dict.fromkeys(it.label.strip() for it in items if it.label):
                if len(label) > 256:
                    raise InvalidInput("identity names are at most 256 characters",
                                       name=label[:64])
                found = repo.find_identity_by_name(session, label)
                if found is None:
                    found = repo.create_identity(session, label, {"source": IMPORT_SOURCE,
                                                                  "job_id": job_id})
                out[label] = found.id
        return {it.label: out[it.label.strip()] for it in items if it.label}

    # ---------------------------------------------------------------- read
    def status(self, job_id: str, owner: str | None = None) -> JobStatus:
        with self.sessions() as session:
            return store.status(session, store.get_job(session, job_id, owner))

    def results(self, job_id: str, owner: str | None, offset: int, limit: int,
                ) -> dict[str, Any]:
        with self.sessions() as session:
            job = store.get_job(session, job_id, owner)
            st = store.status(session, job)
            items = [store.item_dict(i) for i in store.items_page(session, job_id, offset, limit)]
        return {"job": st.to_dict(), "items": items, "offset": offset, "limit": limit,
                "total": st.total}

    def stream(self, job_id: str, owner: str | None) -> Iterator[dict[str, Any]]:
        """Every item's record in order (for NDJSON), read in chunks."""
        with self.sessions() as session:
            store.get_job(session, job_id, owner)
        with self.sessions() as session:
            for item in store.iter_items(session, job_id):
                yield store.item_dict(item)

    def list_jobs(self, owner: str | None, offset: int, limit: int) -> dict[str, Any]:
        with self.sessions() as session:
            jobs, total = store.list_jobs(session, owner, offset, limit)
            items = [store.status(session, j).to_dict() for j in jobs]
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    # -------------------------------------------------------------- cancel
    def cancel(self, job_id: str, owner: str | None = None) -> JobStatus:
        with self.sessions.begin() as session:
            job = store.get_job(session, job_id, owner)
            won, n = store.cancel(session, job_id)
            state = job.state if not won else CANCELLED
        if not won and state != CANCELLED:
            raise JobFinished(f"job '{job_id}' already ended ({state})", state=state)
        if won:
            self.executor.forget(job_id)
            log.info("job %s cancelled: %d pending items will not run", job_id, n)
        end_import(self, job_id)  # else the last running item's end does it
        finish_inputs(self, job_id)
        return self.status(job_id)

    # --------------------------------------------------------------- sweep
    def sweep(self) -> dict[str, int]:
        s = self.settings
        now = utcnow()
        report = {"resumed_items": 0, "republished_items": 0, "inputs_removed": 0,
                  "jobs_purged": 0, "gallery_changes_pruned": 0}
        if isinstance(self.executor, EmbeddedExecutor):
            with self.sessions.begin() as session:
                store.heartbeat(session, self.identity)
            report["resumed_items"] = self._take_over_orphans(now)
        elif isinstance(self.executor, CeleryExecutor):
            report["republished_items"] = self._republish_stalled(now)
        for job in self._ended_with_inputs(now - timedelta(seconds=s.batch_input_retention_s)):
            self.spool.remove(job)
            report["inputs_removed"] += 1
        with self.sessions.begin() as session:
            report["jobs_purged"] = len(store.purge_ended(
                session, now - timedelta(seconds=s.batch_job_retention_s)))
            report["gallery_changes_pruned"] = repo.prune_changes(
                session, now - timedelta(seconds=s.gallery_change_retention_s))
        if any(report.values()):
            log.info("job sweep: %s", report)
        return report

    def _ended_with_inputs(self, cutoff: Any) -> list[str]:
        with self.sessions.begin() as session:
            jobs = [j.id for j in store.inputs_to_remove(session, cutoff)]
            for job_id in jobs:
                store.mark_inputs_removed(session, job_id)
        return jobs

    def _orphaned(self, claimed_by: str | None, heartbeat: Any, now: Any) -> bool:
        if claimed_by is None:
            return True
        if claimed_by == self.identity:
            return False
        if heartbeat is None or now - store.aware(heartbeat) > timedelta(
                seconds=self.settings.batch_lease_s):
            return True
        host, _, rest = claimed_by.partition(":")
        pid_text = rest.partition(":")[0]
        if host != socket.gethostname() or not pid_text.isdigit():
            return False  # another machine's job with a live heartbeat
        pid = int(pid_text)
        if pid == os.getpid():
            return True  # this pid, another token: the process that ran before us here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _take_over_orphans(self, now: Any) -> int:
        resumed = 0
        with self.sessions() as session:
            candidates = store.embedded_jobs(session)
        for job_id, claimed_by, heartbeat in candidates:
            if not self._orphaned(claimed_by, heartbeat, now):
                continue
            with self.sessions.begin() as session:
                if not store.take_over(session, job_id, claimed_by, self.identity):
                    continue
                ids = store.item_ids(session, job_id, OPEN_ITEM)
            log.info("job %s: taking over %d open items from %s", job_id, len(ids), claimed_by)
            self.executor.submit(job_id, ids)
            resumed += len(ids)
        return resumed

    def _republish_stalled(self, now: Any) -> int:
        cutoff = now - timedelta(seconds=self.settings.batch_stall_s)
        published = 0
        with self.sessions() as session:
            stalled = store.stalled_jobs(session, "celery", cutoff)
        for job_id in stalled:
            with self.sessions.begin() as session:
                ids = store.item_ids(session, job_id, OPEN_ITEM)
                store.touch(session, job_id)  # restart the stall clock
            if not ids:
                self.runner.after_item(job_id)
                continue
            try:
                self.executor.submit(job_id, ids)
            except FaceSocialError as exc:
                log.warning("job %s stalled and could not be re-published: %s", job_id, exc)
                continue
            log.warning("job %s made no progress for %.0f s: re-published %d open items",
                        job_id, self.settings.batch_stall_s, len(ids))
            published += len(ids)
        return published

    def describe(self) -> dict[str, Any]:
        return {**self.executor.describe(), "spool": str(self.spool.root)}
