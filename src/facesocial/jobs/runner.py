"""One delivery of one item: claim it, do the work, write its end state exactly once.

The same runner serves the embedded executor and Celery workers, so both
behave alike:

* an item that is already done, failed or cancelled, or whose job ended, is
  skipped (``duplicate``): re-delivered messages change nothing;
* an item delivered more than ``batch_max_attempts`` times (workers keep
  dying on it) fails with ``too_many_attempts`` instead of looping;
* transient errors (database busy or unreachable, model capacity, broker and
  network errors) put the item back to pending and ask for a retry after an
  exponential backoff, until the attempts run out (``retries_exhausted``);
* errors of the input itself (unreadable image, no face, spoof, low quality:
  every :class:`FaceSocialError` with a 4xx status) fail the item at once with
  that error's stable code; anything unexpected fails it as ``internal_error``;
* whoever finishes the last open item marks the job completed, writes its
  summary and removes its spooled inputs (when retention is 0); an import job's
  identities that received no face are deleted in the same transaction
  (``prune_import``).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from facesocial.db.models import Job, JobItem
from facesocial.errors import FaceSocialError, ModelLoadFailed
from facesocial.jobs import store
from facesocial.jobs.handlers import (
    HANDLERS,
    JobContext,
    end_import,
    prune_import,
    summarize,
)
from facesocial.jobs.model import DONE, ENDED_JOB, FAILED, Outcome
from facesocial.models.manager import ModelCapacityError

log = logging.getLogger(__name__)


def transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OperationalError, InterfaceError, ModelCapacityError,
                                         ModelLoadFailed, ConnectionError, TimeoutError]
    try:
        import redis

        errors += [redis.ConnectionError, redis.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return tuple(errors)


TRANSIENT = transient_errors()


def default_worker_name() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


class ItemRunner:
    def __init__(self, ctx: JobContext, worker: str | None = None,
                 handlers: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.worker = worker or default_worker_name()
        self.handlers = handlers or HANDLERS

    def process(self, item_id: str) -> Outcome:
        ctx, s = self.ctx, self.ctx.settings
        with ctx.sessions.begin() as session:
            claimed = store.claim(session, item_id, self.worker)
        if claimed is None:
            return Outcome("duplicate")
        item, job = claimed.item, claimed.job
        if item.attempts > s.batch_max_attempts:
            return self._end(item, job, FAILED, error=("too_many_attempts",
                             f"delivered {item.attempts} times without finishing (a worker "
                             f"died on it each time?); the limit is {s.batch_max_attempts}"))
        t0 = time.perf_counter()
        try:
            result = self.handlers[job.kind](ctx, job, item)
        except TRANSIENT as exc:
            return self._transient(item, job, exc)
        except FaceSocialError as exc:  # the input's own problem (or a missing model): final
            if exc.status >= 500:
                log.warning("item %s of job %s: %s", item.id, job.id, exc.message)
            return self._end(item, job, FAILED, error=(exc.code, exc.message))
        except Exception as exc:  # noqa: BLE001 - a bug must not take the worker down
            log.exception("item %s of job %s failed unexpectedly", item.id, job.id)
            return self._end(item, job, FAILED, error=("internal_error",
                                                  f"{type(exc).__name__}: {exc}"))
        result = {**result, "item_ms": round((time.perf_counter() - t0) * 1000, 1)}
        return self._end(item, job, DONE, result=result)

    # ------------------------------------------------------------- endings
    def _transient(self, item: JobItem, job: Job, exc: BaseException) -> Outcome:
        s = self.ctx.settings
        message = f"{type(exc).__name__}: {exc}"[:2000]
        if item.attempts >= s.batch_max_attempts:
            return self._end(item, job, FAILED, error=("retries_exhausted",
                             f"gave up after {item.attempts} attempts; last error: {message}"))
        with self.ctx.sessions.begin() as session:
            store.release(session, item.id, "transient_error", message)
        delay = s.batch_retry_base_s * (2 ** (item.attempts - 1))
        log.info("item %s: transient error (%s); retry %d in %.1f s", item.id, message,
                 item.attempts, delay)
        return Outcome("retry", retry_in=delay, error_code="transient_error")

    def _end(self, item: JobItem, job: Job, state: str, *,
             result: dict[str, Any] | None = None,
             error: tuple[str, str] | None = None) -> Outcome:
        code, message = error if error is not None else (None, None)
        with self.ctx.sessions.begin() as session:
            won = store.finish(session, item.id, state, result=result, error_code=code,
                               error_message=message)
            store.touch(session, item.job_id)
        if not won:
            return Outcome("duplicate")
        self.after_item(item.job_id, job.kind)
        return Outcome(state, error_code=code)

    def after_item(self, job_id: str, kind: str | None = None) -> None:
        """Complete the job if nothing is open; clean its inputs once it has ended. The
        summary is written in the same transaction as the state, so no reader ever sees a
        completed job without it. ``kind`` (when the caller knows it) spares other kinds
        the import check."""
        with self.ctx.sessions.begin() as session:
            completed = store.complete_if_done(session, job_id)
            if completed:
                job = store.get_job(session, job_id)
                results = [i.result for i in store.iter_items(session, job_id)
                           if i.state == DONE and i.result is not None]
                job.summary = {**(job.summary or {}), **summarize(job.kind, results)}
                prune_import(session, job)
                log.info("job %s completed", job_id)
        # an import cancelled while items ran: its last running item's end prunes it
        if not completed and kind in (None, "gallery_import"):
            end_import(self.ctx, job_id)
        finish_inputs(self.ctx, job_id)


def finish_inputs(ctx: JobContext, job_id: str) -> bool:
    """Remove an ended job's spooled inputs now when retention is 0 and nothing runs."""
    if ctx.settings.batch_input_retention_s > 0:
        return False  # the sweeper removes them once retention has passed
    with ctx.sessions.begin() as session:
        job = store.get_job(session, job_id)
        if job.state not in ENDED_JOB or job.inputs_removed_at is not None or \
                store.counts(session, job_id).get("running", 0):
            return False
        store.mark_inputs_removed(session, job_id)
    ctx.spool.remove(job_id)
    return True
