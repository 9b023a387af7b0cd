"""Throughput helpers for the model manager: priorities, bounded concurrency, micro-batching.

* ``priority`` is a context variable: ``with batch_priority(): ...`` marks the
  work done inside as batch work, so realtime requests go first.
* :class:`PrioritySemaphore` bounds concurrent inferences per model and wakes
  realtime waiters before batch waiters.
* :class:`MicroBatcher` gathers rows from concurrent callers (up to
  ``max_batch`` or ``max_wait_ms``) into one inference call and hands each
  caller its own rows back.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

REALTIME, BATCH = 0, 1
_priority: contextvars.ContextVar[int] = contextvars.ContextVar("facesocial_priority",
                                                               default=REALTIME)


def current_priority() -> int:
    return _priority.get()


@contextlib.contextmanager
def batch_priority() -> Iterator[None]:
    """Work inside runs behind realtime requests on the same machine."""
    token = _priority.set(BATCH)
    try:
        yield
    finally:
        _priority.reset(token)


class PrioritySemaphore:
    """A counting semaphore whose waiters are served by (priority, arrival)."""

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError("semaphore value must be >= 1")
        self._value = value
        self._cond = threading.Condition()
        self._waiters: list[tuple[int, int]] = []
        self._seq = itertools.count()

    def acquire(self, priority: int | None = None, timeout: float | None = None) -> bool:
        prio = current_priority() if priority is None else priority
        me = (prio, next(self._seq))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            heapq.heappush(self._waiters, me)
            try:
                while not (self._value > 0 and self._waiters[0] == me):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._value -= 1
                return True
            finally:
                self._waiters.remove(me)
                heapq.heapify(self._waiters)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._value += 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


@dataclass(order=True)
class _Item:
    priority: int
    seq: int
    rows: np.ndarray = field(compare=False)
    future: Future = field(compare=False)


class MicroBatcher:
    """Coalesce concurrent ``run(rows)`` calls into batched calls of ``fn``.

    ``fn`` maps an (n, ...) array to an (n, ...) array row by row (the model
    must be batch-independent). A daemon thread waits for the first item, then
    gathers more until ``max_batch`` rows or ``max_wait_ms`` pass, realtime
    items first.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait_ms: float = 2.0, name: str = "batcher",
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._heap: list[_Item] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def depth(self) -> int:
        with self._cond:
            return len(self._heap)

    def submit(self, rows: np.ndarray) -> Future:
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            heapq.heappush(self._heap, _Item(current_priority(), next(self._seq), rows, fut))
            self._cond.notify_all()
        return fut

    def run(self, rows: np.ndarray) -> np.ndarray:
        return self.submit(rows).result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> list[_Item]:
        with self._cond:
            while not self._heap and not self._closed:
                self._cond.wait()
            if not self._heap:
                return []
            deadline = time.monotonic() + self.max_wait
            while sum(len(i.rows) for i in self._heap) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            items, count = [], 0
            while self._heap and (not items or count + len(self._heap[0].rows) <= self.max_batch):
                item = heapq.heappop(self._heap)
                items.append(item)
                count += len(item.rows)
            return items

    def _loop(self) -> None:
        while True:
            items = self._take()
            if not items:
                return
            try:
                out = self.fn(np.concatenate([i.rows for i in items]))
                if self.on_batch:
                    self.on_batch(sum(len(i.rows) for i in items))
                start = 0
                for item in items:
                    item.future.set_result(out[start:start + len(item.rows)])
                    start += len(item.rows)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
