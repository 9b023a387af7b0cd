"""Result cache keyed by (image sha256, tasks, options, model versions).

Redis when configured (shared by every API process), else an in-process LRU
with a TTL. Values are JSON documents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

log = logging.getLogger(__name__)


class ResultCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, key: str, value: dict[str, Any]) -> None: ...


def cache_key(image: bytes, tasks: tuple[str, ...], options: dict[str, Any],
              models: list[str]) -> str:
    h = hashlib.sha256(image).hexdigest()
    opt = json.dumps(options, sort_keys=True, default=str)
    return "fs:res:" + hashlib.sha256(
        f"{h}|{','.join(tasks)}|{opt}|{','.join(sorted(models))}".encode()).hexdigest()


class MemoryCache:
    def __init__(self, size: int, ttl_s: float) -> None:
        self.size, self.ttl = size, ttl_s
        self._data: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] < time.monotonic():
                self._data.pop(key, None)
                return None
            self._data.move_to_end(key)
            return item[1]

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class RedisCache:
    def __init__(self, url: str, ttl_s: float, prefix: str = "facesocial") -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=1.0)
        self.ttl = int(ttl_s)
        self.prefix = prefix

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self._r.get(f"{self.prefix}:{key}")
        except Exception as exc:  # noqa: BLE001 - a cache miss, never an error for the caller
            log.warning("result cache unavailable: %s", exc)
            return None
        return None if raw is None else json.loads(raw)

    def put(self, key: str, value: dict[str, Any]) -> None:
        try:
            self._r.set(f"{self.prefix}:{key}", json.dumps(value), ex=max(1, self.ttl))
        except Exception as exc:  # noqa: BLE001
            log.warning("result cache unavailable: %s", exc)


def make_cache(settings: Any) -> ResultCache:
    """The result cache the settings ask for: off when ``result_cache_size`` or
    ``result_cache_ttl_s`` is 0 (with or without Redis), else in Redis when configured (shared
    by the API processes), else in process."""
    if settings.result_cache_size <= 0 or settings.result_cache_ttl_s <= 0:
        return MemoryCache(0, 0)  # stores nothing: every request is analysed
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.result_cache_ttl_s, settings.redis_prefix)
    return MemoryCache(settings.result_cache_size, settings.result_cache_ttl_s)
