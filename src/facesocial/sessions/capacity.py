"""Admission: at most N sessions on each of M pipelines, then a queue, then ``system_full``.

A pipeline is a lane of work: one thread that runs its sessions' frames one
after another, with the models it takes through the model manager (placed on
the device while its budget lasts, on CPU after; the placement is recorded when
the pipeline starts). A session is admitted into the least busy pipeline with a
free place; when every place is taken it waits, first come first served, up to
``queue_timeout_s``, then is refused with :class:`SystemFull`.

Lives on the event loop: admit/release are called from WebSocket handlers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from facesocial.errors import SystemFull

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    index: int
    capacity: int
    sessions: set[str] = field(default_factory=set)
    devices: dict[str, str] = field(default_factory=dict)  # model id -> device at start
    executor: ThreadPoolExecutor | None = None
    frames: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, place_models: Callable[[], dict[str, str]]) -> None:
        with self._lock:
            if self.executor is None:
                self.devices = place_models()
                self.executor = ThreadPoolExecutor(
                    1, thread_name_prefix=f"session-pipeline-{self.index}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "sessions": len(self.sessions), "capacity": self.capacity,
                "started": self.executor is not None, "devices": self.devices,
                "frames": self.frames}


class PipelinePool:
    def __init__(self, pipelines: int, per_pipeline: int, queue_timeout_s: float,
                 place_models: Callable[[], dict[str, str]]) -> None:
        self.pipelines = [Pipeline(i, per_pipeline) for i in range(pipelines)]
        self.queue_timeout_s = queue_timeout_s
        self._place_models = place_models
        self._waiters: deque[tuple[str, asyncio.Future[Pipeline]]] = deque()
        self._where: dict[str, Pipeline] = {}
        self.refused = 0

    @property
    def capacity(self) -> int:
        return sum(p.capacity for p in self.pipelines)

    def active(self) -> int:
        return len(self._where)

    def waiting(self) -> int:
        return sum(1 for _, f in self._waiters if not f.done())

    def _free(self) -> Pipeline | None:
        free = [p for p in self.pipelines if len(p.sessions) < p.capacity]
        if not free:
            return None
        return min(free, key=lambda p: (p.executor is None, len(p.sessions), p.index))

    def _assign(self, session_id: str, p: Pipeline) -> Pipeline:
        p.sessions.add(session_id)
        self._where[session_id] = p
        return p

    async def admit(self, session_id: str,
                    on_queued: Callable[[int], Any] | None = None) -> Pipeline:
        """A place for the session (waiting in line when full); SystemFull after the timeout.
        ``on_queued(position)`` is awaited once when the session has to wait."""
        p = self._free() if not self.waiting() else None
        if p is None:
            fut: asyncio.Future[Pipeline] = asyncio.get_running_loop().create_future()
            self._waiters.append((session_id, fut))
            if on_queued is not None:
                await on_queued(self.waiting())
            try:
                p = await asyncio.wait_for(fut, self.queue_timeout_s)
            except TimeoutError:
                self.refused += 1
                raise SystemFull(f"all {self.capacity} session places are taken; waited "
                                 f"{self.queue_timeout_s:g} s", capacity=self.capacity) from None
            finally:
                self._waiters = deque((s, f) for s, f in self._waiters if f is not fut)
        else:
            self._assign(session_id, p)
        if p.executor is None:
            await asyncio.get_running_loop().run_in_executor(None, p.start, self._place_models)
        return p

    def release(self, session_id: str) -> None:
        p = self._where.pop(session_id, None)
        if p is None:
            return
        p.sessions.discard(session_id)
        while self._waiters:
            free = self._free()
            if free is None:
                break
            sid, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(self._assign(sid, free))

    def close(self) -> None:
        for p in self.pipelines:
            if p.executor is not None:
                p.executor.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "active": self.active(), "waiting": self.waiting(),
                "refused": self.refused, "queue_timeout_s": self.queue_timeout_s,
                "pipelines": [p.to_dict() for p in self.pipelines]}
