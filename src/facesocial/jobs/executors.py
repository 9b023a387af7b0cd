"""Where items run: threads in the API process, or Celery workers fed through Redis.

Both executors only move item ids around; the state lives in the database and
:class:`~facesocial.jobs.runner.ItemRunner` does the work, so a duplicate or
lost hand-off costs time, never correctness.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Protocol

from facesocial.errors import QueueUnavailable
from facesocial.jobs.runner import ItemRunner
from facesocial.models.batching import batch_priority

log = logging.getLogger(__name__)


class Executor(Protocol):
    name: str

    def submit(self, job_id: str, item_ids: list[str]) -> None: ...
    def forget(self, job_id: str) -> None: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 30.0) -> None: ...
    def describe(self) -> dict[str, Any]: ...


class EmbeddedExecutor:
    """A few threads in this process, at batch priority (realtime requests go first for every
    model: see :mod:`facesocial.models.batching`). Retries wait in a time-ordered queue."""

    name = "embedded"

    def __init__(self, runner: ItemRunner, threads: int = 1) -> None:
        self.runner = runner
        self.threads = threads
        self._heap: list[tuple[float, int, str, str]] = []  # (ready_at, order, job, item)
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._busy = 0
        self.processed = 0

    def submit(self, job_id: str, item_ids: list[str], delay: float = 0.0) -> None:
        ready = time.monotonic() + delay
        with self._cv:
            for item_id in item_ids:
                heapq.heappush(self._heap, (ready, next(self._order), job_id, item_id))
            self._cv.notify_all()

    def forget(self, job_id: str) -> None:
        """Drop a cancelled job's queued items (the database already says cancelled)."""
        with self._cv:
            self._heap = [e for e in self._heap if e[2] != job_id]
            heapq.heapify(self._heap)

    def queued(self) -> int:
        with self._cv:
            return len(self._heap)

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"facesocial-batch-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking items; the items being worked on finish (up to ``timeout``)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._workers.clear()

    def _next(self) -> tuple[str, str] | None:
        with self._cv:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _ready, _o, job_id, item_id = heapq.heappop(self._heap)
                        self._busy += 1
                        return job_id, item_id
                    self._cv.wait(min(wait, 1.0))
                else:
                    self._cv.wait(1.0)
            return None

    def _loop(self) -> None:
        while (entry := self._next()) is not None:
            job_id, item_id = entry
            try:
                with batch_priority():
                    outcome = self.runner.process(item_id)
                if outcome.retry_in is not None:
                    self.submit(job_id, [item_id], delay=outcome.retry_in)
                self.processed += 1
            except Exception:  # noqa: BLE001 - e.g. the database is down: try again later
                log.exception("embedded executor: item %s could not be run; requeued", item_id)
                self.submit(job_id, [item_id], delay=self.runner.ctx.settings.batch_retry_base_s)
            finally:
                with self._cv:
                    self._busy -= 1

    def describe(self) -> dict[str, Any]:
        with self._cv:
            return {"executor": self.name, "threads": self.threads, "queued": len(self._heap),
                    "busy": self._busy, "processed": self.processed}


class CeleryExecutor:
    """Publishes one message per item to the Celery queue (Redis); workers do the rest."""

    name = "celery"

    def __init__(self, app: Any) -> None:
        self.app = app

    def submit(self, job_id: str, item_ids: list[str]) -> None:
        from facesocial.jobs.celery_app import TASK_NAME

        try:
            with self.app.producer_or_acquire() as producer:
                for item_id in item_ids:
                    self.app.send_task(TASK_NAME, args=[job_id, item_id], producer=producer)
        except Exception as exc:  # noqa: BLE001 - kombu/redis raise many connection types
            raise QueueUnavailable(f"the job queue cannot be reached: {exc}") from exc

    def forget(self, job_id: str) -> None:
        """Nothing to do: workers skip the items of a cancelled job when they get them."""

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 30.0) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"executor": self.name, "broker": _redact(self.app.conf.broker_url)}
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                with conn.channel() as channel:
                    q = channel.queue_declare(self.app.conf.task_default_queue)  # size only
                    info["queued"] = q.message_count
        except Exception as exc:  # noqa: BLE001
            info["error"] = str(exc)[:200]
        return info


def _redact(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
