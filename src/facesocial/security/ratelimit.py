"""Rate limits: a sliding-window log, in process or shared through Redis.

Semantics (both back ends): at most ``limit_per_minute`` hits are allowed in
any window of ``window_s`` (60 s) seconds; denied hits are not counted (a
client that keeps hammering is let through again as soon as its oldest allowed
hit leaves the window, and ``retry_after_s`` says exactly when that is).

* :class:`MemoryRateLimiter`: one process, thread-safe, a deque of timestamps
  per key (memory O(limit) per active key; idle keys are swept).
* :class:`RedisRateLimiter`: one sorted set per key, updated by a Lua script
  that runs atomically in Redis and takes the time from the Redis server
  (``TIME``), so any number of API processes on any hosts share one limit
  exactly, whatever their clocks say.

Redis failures (down, timeout, auth...): by default (``on_error="local"``)
the limiter *degrades* to an in-process :class:`MemoryRateLimiter`: the
service stays up and each process still enforces the limit on its own (so the
effective cap is limit x processes while Redis is away). One warning is
logged when Redis is lost and one info line when it is back; Redis is not
retried for ``retry_interval_s`` after a failure, so an outage does not add a
connect timeout to every request. ``on_error="open"`` allows everything and
``on_error="closed"`` denies everything while Redis is away.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from facesocial.errors import RateLimited
from facesocial.settings import Settings

log = logging.getLogger(__name__)

OnError = Literal["local", "open", "closed"]


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    remaining: int  # hits still allowed in the current window after this one
    retry_after_s: float  # 0 when allowed; else seconds until one more hit is allowed
    limit: int = 0

    @property
    def retry_after_header(self) -> int:
        """Whole seconds for ``Retry-After`` (rounded up, at least 1 when denied)."""
        return max(1, math.ceil(self.retry_after_s)) if not self.allowed else 0


@runtime_checkable
class RateLimiter(Protocol):
    def hit(self, key: str, limit_per_minute: int) -> RateDecision: ...


def enforce(limiter: RateLimiter, key: str, limit_per_minute: int) -> RateDecision:
    """Count one hit; raise RateLimited (429, retry_after) when it is over the limit."""
    decision = limiter.hit(key, limit_per_minute)
    if not decision.allowed:
        raise RateLimited("rate limit exceeded", retry_after=decision.retry_after_s,
                          limit=decision.limit)
    return decision


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit_per_minute must be a positive int, got {limit!r}")
    return limit


class MemoryRateLimiter:
    """In-process sliding-window log. Thread-safe; one lock for all keys."""

    def __init__(self, *, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, sweep_every: int = 4096) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = float(window_s)
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._sweep_every = sweep_every
        self._since_sweep = 0

    def hit(self, key: str, limit_per_minute: int) -> RateDecision:
        limit = _check_limit(limit_per_minute)
        with self._lock:
            now = self.clock()
            cutoff = now - self.window_s
            self._since_sweep += 1
            if self._since_sweep >= self._sweep_every:
                self._sweep(cutoff)
            dq = self._hits.get(key)
            if dq is None:
                dq = self._hits[key] = deque()
            while dq and dq[0] <= cutoff:
                dq.popleft()
            count = len(dq)
            if count < limit:
                dq.append(now)
                return RateDecision(True, limit - count - 1, 0.0, limit)
            # the (count - limit + 1)-th oldest hit must leave the window first
            oldest_blocking = dq[count - limit]
            return RateDecision(False, 0, max(0.0, oldest_blocking + self.window_s - now), limit)

    def _sweep(self, cutoff: float) -> None:
        self._since_sweep = 0
        for k in [k for k, dq in self._hits.items() if not dq or dq[-1] <= cutoff]:
            del self._hits[k]

    def __len__(self) -> int:  # keys tracked (tests, metrics)
        return len(self._hits)


# KEYS[1] = the sorted set; ARGV = limit, window (microseconds), unique member.
# Scores are Redis server time in microseconds (< 2^53: exact in doubles).
_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1000)
  return {1, limit - count - 1, 0}
end
local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
local retry = tonumber(blocking[2]) + window - now
if retry < 0 then retry = 0 end
return {0, 0, retry}
"""


class RedisRateLimiter:
    """Sliding-window log in Redis, shared exactly by every process using the same prefix."""

    def __init__(self, redis_url: str | None = None, prefix: str = "facesocial:rl", *,
                 client: object | None = None, window_s: float = 60.0,
                 on_error: OnError = "local", socket_timeout_s: float = 0.5,
                 retry_interval_s: float = 5.0) -> None:
        import redis

        if on_error not in ("local", "open", "closed"):
            raise ValueError("on_error must be 'local', 'open' or 'closed'")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        if client is None:
            if not redis_url:
                raise ValueError("RedisRateLimiter needs redis_url or client")
            client = redis.Redis.from_url(redis_url, socket_timeout=socket_timeout_s,
                                          socket_connect_timeout=socket_timeout_s)
        self._redis = client
        self._script = client.register_script(_LUA)  # type: ignore[attr-defined]
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.prefix = prefix
        self.window_s = float(window_s)
        self._window_us = int(round(self.window_s * 1_000_000))
        self.on_error: OnError = on_error
        self.retry_interval_s = retry_interval_s
        self._local = MemoryRateLimiter(window_s=window_s)
        self._state_lock = threading.Lock()
        self._down_until: float | None = None  # monotonic; None = Redis believed up
        self.failures = 0  # Redis errors seen (metrics, tests)

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def hit(self, key: str, limit_per_minute: int) -> RateDecision:
        limit = _check_limit(limit_per_minute)
        down_until = self._down_until
        if down_until is not None and time.monotonic() < down_until:
            return self._fallback(key, limit)
        try:
            allowed, remaining, retry_us = self._script(
                keys=[self._key(key)], args=[limit, self._window_us, uuid.uuid4().hex])
        except self._errors as exc:
            self._mark_down(exc)
            return self._fallback(key, limit)
        if down_until is not None:
            with self._state_lock:
                if self._down_until is not None:
                    self._down_until = None
                    log.info("rate limiter: Redis is reachable again; shared limits restored")
        return RateDecision(bool(allowed), int(remaining), int(retry_us) / 1_000_000, limit)

    def _mark_down(self, exc: BaseException) -> None:
        with self._state_lock:
            self.failures += 1
            first = self._down_until is None
            self._down_until = time.monotonic() + self.retry_interval_s
        if first:
            log.warning("rate limiter: Redis unavailable (%s: %s); %s until it is back "
                        "(retrying every %.0fs)", type(exc).__name__, exc,
                        {"local": "enforcing limits per process",
                         "open": "allowing all requests",
                         "closed": "denying all requests"}[self.on_error],
                        self.retry_interval_s)

    def _fallback(self, key: str, limit: int) -> RateDecision:
        if self.on_error == "local":
            return self._local.hit(key, limit)
        if self.on_error == "open":
            return RateDecision(True, limit - 1, 0.0, limit)
        return RateDecision(False, 0, float(self.retry_interval_s), limit)

    def reset(self, key: str) -> None:
        """Forget a key's hits (tests, admin unblock)."""
        self._redis.delete(self._key(key))  # type: ignore[attr-defined]

    def close(self) -> None:
        close = getattr(self._redis, "close", None)
        if close is not None:
            close()


def make_rate_limiter(settings: Settings, *, prefix: str = "facesocial:rl",
                      on_error: OnError = "local") -> RateLimiter:
    """Redis-backed when ``settings.redis_url`` is set, else in-process."""
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, prefix, on_error=on_error)
    return MemoryRateLimiter()
