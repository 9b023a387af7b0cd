"""Job and item state in the database: the one place every process reads and writes.

Functions take an open session; the caller commits. State changes that more
than one process may attempt at once (claiming an item, finishing it,
finishing the job, cancelling, taking over an orphaned job) are single
conditional UPDATEs, so exactly one of the racers wins and the others see a
row count of 0. Counts are always derived from item rows, never stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.orm import Session

from facesocial.db.models import Job, JobItem, new_id, utcnow
from facesocial.errors import NotFound
from facesocial.jobs.model import (
    ACTIVE_JOB,
    CANCELLED,
    COMPLETED,
    DONE,
    ENDED_JOB,
    FAILED,
    OPEN_ITEM,
    PENDING,
    QUEUED,
    RUNNING,
    TERMINAL_ITEM,
    JobStatus,
    NewItem,
)


def create_job(session: Session, *, kind: str, executor: str, owner: str | None,
               tasks: list[str], options: dict[str, Any], items: list[NewItem],
               spool_dir: str | None, summary: dict[str, Any] | None = None,
               job_id: str | None = None, claimed_by: str | None = None) -> Job:
    job = Job(id=job_id or new_id(), kind=kind, state=QUEUED, executor=executor, owner=owner,
              tasks=list(tasks), options=dict(options), total=len(items), summary=summary or {},
              spool_dir=spool_dir, claimed_by=claimed_by,
              heartbeat_at=utcnow() if claimed_by else None)
    session.add(job)
    session.flush()
    session.add_all([JobItem(job_id=job.id, seq=i, name=it.name, label=it.label,
                             input_path=it.input_path, input_sha256=it.sha256,
                             input_bytes=it.size, state=PENDING, attempts=0)
                     for i, it in enumerate(items)])
    session.flush()
    return job


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job:
    """The job; with ``owner``, only that principal's (others get the same 404)."""
    job = session.get(Job, job_id) if isinstance(job_id, str) and len(job_id) <= 32 else None
    if job is None or (owner is not None and job.owner != owner):
        raise NotFound(f"job '{str(job_id)[:64]}' not found", resource="job")
    return job


def item_ids(session: Session, job_id: str, states: tuple[str, ...] = OPEN_ITEM) -> list[str]:
    return list(session.scalars(select(JobItem.id).where(
        JobItem.job_id == job_id, JobItem.state.in_(states)).order_by(JobItem.seq)))


def counts(session: Session, job_id: str) -> dict[str, int]:
    rows = session.execute(select(JobItem.state, func.count()).where(JobItem.job_id == job_id)
                           .group_by(JobItem.state))
    return {state: int(n) for state, n in rows}


def status(session: Session, job: Job) -> JobStatus:
    c = counts(session, job.id)
    finished = c.get(DONE, 0) + c.get(FAILED, 0)
    rate = eta = None
    if job.started_at is not None and finished:
        end = aware(job.finished_at) or utcnow()
        elapsed = max((end - aware(job.started_at)).total_seconds(), 1e-3)
        rate = finished / elapsed
        left = c.get(PENDING, 0) + c.get(RUNNING, 0)
        if job.state in ACTIVE_JOB and left:
            eta = utcnow() + timedelta(seconds=left / rate)
    return JobStatus(id=job.id, kind=job.kind, state=job.state, executor=job.executor,
                     tasks=tuple(job.tasks or ()), total=job.total, counts=c,
                     created_at=aware(job.created_at), started_at=aware(job.started_at),
                     finished_at=aware(job.finished_at), estimated_finish_at=eta,
                     items_per_second=rate, summary=dict(job.summary or {}), error=job.error)


@overload
def aware(t: datetime) -> datetime: ...
@overload
def aware(t: None) -> None: ...
def aware(t: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive (they were stored as UTC)."""
    if t is None or t.tzinfo is not None:
        return t
    return t.replace(tzinfo=UTC)


# ------------------------------------------------------------ one item's life
@dataclass(frozen=True, slots=True)
class Claimed:
    item: JobItem
    job: Job


def claim(session: Session, item_id: str, worker: str) -> Claimed | None:
    """Mark an open item running for ``worker`` (attempts + 1); None when it is already
    done, failed or cancelled (a re-delivery) or its job has ended."""
    now = utcnow()
    job_open = exists().where(Job.id == JobItem.job_id, Job.state.in_(ACTIVE_JOB))
    won = session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.state.in_(OPEN_ITEM), job_open)
        .values(state=RUNNING, attempts=JobItem.attempts + 1, worker=worker[:160],
                started_at=now).execution_options(synchronize_session=False)).rowcount
    if not won:
        return None
    item = session.get(JobItem, item_id, populate_existing=True)
    assert item is not None
    session.execute(update(Job).where(Job.id == item.job_id, Job.state == QUEUED)
                    .values(state=RUNNING, started_at=now)
                    .execution_options(synchronize_session=False))
    job = session.get(Job, item.job_id, populate_existing=True)
    assert job is not None
    return Claimed(item, job)


def finish(session: Session, item_id: str, state: str, *, result: dict[str, Any] | None = None,
           error_code: str | None = None, error_message: str | None = None) -> bool:
    """Write an item's terminal state, once: False when another delivery already did."""
    assert state in TERMINAL_ITEM
    won = session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.state.in_(OPEN_ITEM))
        .values(state=state, result=result, error_code=error_code,
                error_message=None if error_message is None else error_message[:2000],
                finished_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    return bool(won)


def release(session: Session, item_id: str, error_code: str, error_message: str) -> bool:
    """A transient failure: the item goes back to pending (its attempts are kept)."""
    return bool(session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.state == RUNNING)
        .values(state=PENDING, error_code=error_code, error_message=error_message[:2000])
        .execution_options(synchronize_session=False)).rowcount)


def touch(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(last_progress_at=utcnow())
                    .execution_options(synchronize_session=False))


def complete_if_done(session: Session, job_id: str) -> bool:
    """Mark the job completed when no item is open; True for the one caller that did."""
    open_items = exists().where(JobItem.job_id == job_id, JobItem.state.in_(OPEN_ITEM))
    return bool(session.execute(
        update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_JOB), ~open_items)
        .values(state=COMPLETED, finished_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount)


def cancel(session: Session, job_id: str) -> tuple[bool, int]:
    """Cancel an active job: pending items are cancelled now, running ones may finish.
    Returns (whether this call cancelled it, pending items cancelled)."""
    won = session.execute(
        update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_JOB))
        .values(state=CANCELLED, finished_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if not won:
        return False, 0
    n = session.execute(
        update(JobItem).where(JobItem.job_id == job_id, JobItem.state == PENDING)
        .values(state=CANCELLED, finished_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    return True, int(n or 0)


def fail_job(session: Session, job_id: str, error: str) -> None:
    """A job-level failure (nothing could be queued): open items are cancelled."""
    session.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_JOB))
                    .values(state=FAILED, error=error[:2000], finished_at=utcnow())
                    .execution_options(synchronize_session=False))
    session.execute(update(JobItem).where(JobItem.job_id == job_id, JobItem.state == PENDING)
                    .values(state=CANCELLED, finished_at=utcnow())
                    .execution_options(synchronize_session=False))


# ------------------------------------------------------------------- results
def items_page(session: Session, job_id: str, offset: int, limit: int) -> list[JobItem]:
    return list(session.scalars(select(JobItem).where(JobItem.job_id == job_id)
                                .order_by(JobItem.seq).offset(offset).limit(limit)))


def iter_items(session: Session, job_id: str, chunk: int = 500) -> Iterator[JobItem]:
    """Every item in order, fetched ``chunk`` rows at a time (keyset paging)."""
    last = -1
    while True:
        rows = list(session.scalars(select(JobItem).where(JobItem.job_id == job_id,
                                                          JobItem.seq > last)
                                    .order_by(JobItem.seq).limit(chunk)))
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1].seq


def item_dict(item: JobItem) -> dict[str, Any]:
    out: dict[str, Any] = {"index": item.seq, "name": item.name, "state": item.state,
                           "attempts": item.attempts}
    if item.label is not None:
        out["label"] = item.label
    if item.state == DONE:
        out["result"] = item.result
    elif item.error_code is not None and item.state != PENDING:
        out["error"] = {"code": item.error_code, "message": item.error_message}
    return out


def list_jobs(session: Session, owner: str | None, offset: int, limit: int,
              ) -> tuple[list[Job], int]:
    stmt = select(Job)
    if owner is not None:
        stmt = stmt.where(Job.owner == owner)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = list(session.scalars(stmt.order_by(Job.created_at.desc(), Job.id)
                                .offset(offset).limit(limit)))
    return rows, int(total)


# ------------------------------------------------------------- housekeeping
def heartbeat(session: Session, claimed_by: str) -> int:
    return int(session.execute(
        update(Job).where(Job.claimed_by == claimed_by, Job.state.in_(ACTIVE_JOB))
        .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        or 0)


def embedded_jobs(session: Session) -> list[tuple[str, str | None, datetime | None]]:
    """(id, claimed_by, heartbeat_at) of active jobs run by embedded executors."""
    return [(i, c, h) for i, c, h in session.execute(
        select(Job.id, Job.claimed_by, Job.heartbeat_at)
        .where(Job.executor == "embedded", Job.state.in_(ACTIVE_JOB)))]


def take_over(session: Session, job_id: str, old: str | None, new: str) -> bool:
    cond = Job.claimed_by.is_(None) if old is None else Job.claimed_by == old
    return bool(session.execute(
        update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE_JOB), cond)
        .values(claimed_by=new, heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount)


def stalled_jobs(session: Session, executor: str, older_than: datetime) -> list[str]:
    """Active jobs with open items whose last progress (or creation) is before the cutoff."""
    since = func.coalesce(Job.last_progress_at, Job.started_at, Job.created_at)
    return list(session.scalars(select(Job.id).where(
        Job.executor == executor, Job.state.in_(ACTIVE_JOB), since < older_than)))


def inputs_to_remove(session: Session, ended_before: datetime) -> list[Job]:
    """Ended jobs whose spooled inputs are still there and no item of which still runs."""
    running = exists().where(JobItem.job_id == Job.id, JobItem.state == RUNNING)
    return list(session.scalars(select(Job).where(
        Job.state.in_(ENDED_JOB), Job.inputs_removed_at.is_(None),
        Job.finished_at <= ended_before, ~running)))


def mark_inputs_removed(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(inputs_removed_at=utcnow())
                    .execution_options(synchronize_session=False))


def purge_ended(session: Session, ended_before: datetime) -> list[str]:
    """Delete jobs (and their items) that ended before the cutoff; returns their ids."""
    ids = list(session.scalars(select(Job.id).where(
        Job.state.in_(ENDED_JOB), Job.finished_at < ended_before,
        Job.inputs_removed_at.is_not(None))))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        session.execute(delete(JobItem).where(JobItem.job_id.in_(chunk)))
        session.execute(delete(Job).where(and_(Job.id.in_(chunk))))
    return ids

