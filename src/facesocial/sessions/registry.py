"""Live sessions and client events, shared by the API processes (Redis) or kept in one.

* live sessions: who is connected, where (process, pipeline) and since when; every
  process heartbeats its own, so a crashed process's sessions age out;
* events: an administrator (or the policy) blocks, pauses or unblocks a client in
  one process; every process hears it and acts on the sessions it holds.

The client's state itself lives in the database (``session_clients``), which every
process reads at connect and re-reads while a session runs; events only make the
change immediate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]


class Registry(Protocol):
    def register(self, session_id: str, info: dict[str, Any]) -> None: ...
    def heartbeat(self, session_ids: list[str]) -> None: ...
    def unregister(self, session_id: str) -> None: ...
    def live(self) -> list[dict[str, Any]]: ...
    def publish(self, event: dict[str, Any]) -> None: ...
    def subscribe(self, listener: Listener) -> None: ...
    def close(self) -> None: ...


class MemoryRegistry:
    """One process: a dict and direct calls."""

    backend = "memory"

    def __init__(self) -> None:
        self._live: dict[str, dict[str, Any]] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def register(self, session_id: str, info: dict[str, Any]) -> None:
        with self._lock:
            self._live[session_id] = {**info, "session_id": session_id}

    def heartbeat(self, session_ids: list[str]) -> None:
        pass

    def unregister(self, session_id: str) -> None:
        with self._lock:
            self._live.pop(session_id, None)

    def live(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._live.values())

    def publish(self, event: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(event)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def close(self) -> None:
        self._listeners.clear()


class RedisRegistry:
    """Several processes: a sorted set of live sessions scored by when their heartbeat
    expires, a hash of their details, and a pub/sub channel for client events."""

    backend = "redis"

    def __init__(self, url: str, prefix: str, ttl_s: float = 30.0) -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._live_key = f"{prefix}:sessions:live"
        self._info_key = f"{prefix}:sessions:info"
        self._channel = f"{prefix}:sessions:events"
        self.ttl_s = ttl_s
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, session_id: str, info: dict[str, Any]) -> None:
        pipe = self._r.pipeline()
        pipe.zadd(self._live_key, {session_id: time.time() + self.ttl_s})
        pipe.hset(self._info_key, session_id, json.dumps({**info, "session_id": session_id}))
        pipe.execute()

    def heartbeat(self, session_ids: list[str]) -> None:
        if session_ids:
            self._r.zadd(self._live_key, {s: time.time() + self.ttl_s for s in session_ids})

    def unregister(self, session_id: str) -> None:
        pipe = self._r.pipeline()
        pipe.zrem(self._live_key, session_id)
        pipe.hdel(self._info_key, session_id)
        pipe.execute()

    def live(self) -> list[dict[str, Any]]:
        now = time.time()
        stale = self._r.zrangebyscore(self._live_key, "-inf", now)
        if stale:  # sessions of processes that stopped heartbeating
            pipe = self._r.pipeline()
            pipe.zremrangebyscore(self._live_key, "-inf", now)
            pipe.hdel(self._info_key, *stale)
            pipe.execute()
        ids = self._r.zrangebyscore(self._live_key, now, "+inf")
        if not ids:
            return []
        return [json.loads(v) for v in self._r.hmget(self._info_key, ids) if v]

    def publish(self, event: dict[str, Any]) -> None:
        self._r.publish(self._channel, json.dumps(event))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="session-events",
                                            daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                pubsub = self._r.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    event = json.loads(msg["data"])
                    for listener in list(self._listeners):
                        listener(event)
                pubsub.close()
            except Exception:  # noqa: BLE001 - Redis went away: listen again shortly
                log.warning("session events: Redis subscription lost; retrying", exc_info=True)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        self._r.close()


def make_registry(redis_url: str | None, prefix: str) -> MemoryRegistry | RedisRegistry:
    return RedisRegistry(redis_url, prefix) if redis_url else MemoryRegistry()
