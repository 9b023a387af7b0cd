from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading

import pytest
import redis

from facesocial.errors import RateLimited
from facesocial.security.ratelimit import (
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RedisRateLimiter,
    enforce,
    make_rate_limiter,
)
from facesocial.settings import Settings

from .conftest import REDIS_URL, FakeClock

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


# --- memory ---------------------------------------------------------------------------------
def test_memory_exact_counts_and_retry_after() -> None:
    clock = FakeClock(1000.0)
    rl = MemoryRateLimiter(clock=clock)
    got = []
    for _ in range(5):
        got.append(rl.hit("k", 5))
        clock.advance(1)
    assert [d.allowed for d in got] == [True] * 5
    assert [d.remaining for d in got] == [4, 3, 2, 1, 0]
    assert all(d.retry_after_s == 0 for d in got)
    denied = rl.hit("k", 5)  # t = 1005, first hit at 1000
    assert denied == RateDecision(False, 0, 55.0, 5)
    assert denied.retry_after_header == 55
    clock.advance(54.5)
    assert not rl.hit("k", 5).allowed
    clock.advance(0.5)  # t = 1060: the hit at 1000 leaves the window
    d = rl.hit("k", 5)
    assert d.allowed and d.remaining == 0
    d = rl.hit("k", 5)
    assert not d.allowed and d.retry_after_s == pytest.approx(1.0)  # next: the hit at 1001
    assert rl.hit("other", 5).remaining == 4  # keys are independent


def test_memory_sliding_window_not_fixed() -> None:
    clock = FakeClock(0.0)
    rl = MemoryRateLimiter(clock=clock)
    for t in (0, 50, 55):
        clock.t = t
        assert rl.hit("k", 3).allowed
    clock.t = 65  # a fixed window would have reset at 60; the sliding one still counts 50, 55
    assert rl.hit("k", 3).allowed  # the hit at 0 has left
    d = rl.hit("k", 3)
    assert not d.allowed and d.retry_after_s == pytest.approx(45.0)


def test_memory_lowered_limit() -> None:
    clock = FakeClock(0.0)
    rl = MemoryRateLimiter(clock=clock)
    for i in range(10):
        clock.t = i
        rl.hit("k", 10)
    clock.t = 10
    d = rl.hit("k", 4)  # 10 hits in the window, limit now 4: wait for 7 of them to leave
    assert not d.allowed and d.retry_after_s == pytest.approx(6 + 60 - 10)


def test_memory_thread_safe_exact_total() -> None:
    rl = MemoryRateLimiter()
    allowed = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        n = sum(rl.hit("shared", 250).allowed for _ in range(100))
        with lock:
            allowed.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 250


def test_memory_sweeps_idle_keys() -> None:
    clock = FakeClock(0.0)
    rl = MemoryRateLimiter(clock=clock, sweep_every=10)
    for i in range(9):
        rl.hit(f"k{i}", 5)
    assert len(rl) == 9
    clock.advance(61)
    rl.hit("fresh", 5)  # the 10th hit triggers a sweep
    assert len(rl) == 1


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        MemoryRateLimiter().hit("k", 0)


def test_enforce_raises_rate_limited() -> None:
    clock = FakeClock(0.0)
    rl = MemoryRateLimiter(clock=clock)
    assert enforce(rl, "k", 1).allowed
    clock.advance(0.4)
    with pytest.raises(RateLimited) as exc:
        enforce(rl, "k", 1)
    err = exc.value
    assert (err.code, err.status, err.retry_after) == ("rate_limited", 429, 60)
    assert err.retry_after_s == pytest.approx(59.6)
    assert err.to_dict()["details"] == {"retry_after": 60, "limit": 1}


def test_make_rate_limiter_picks_backend(redis_prefix) -> None:
    assert isinstance(make_rate_limiter(Settings()), MemoryRateLimiter)
    rl = make_rate_limiter(Settings(redis_url=REDIS_URL), prefix=redis_prefix)
    assert isinstance(rl, RedisRateLimiter) and isinstance(rl, RateLimiter)
    assert rl.hit("k", 3).remaining == 2


# --- redis ----------------------------------------------------------------------------------
def test_redis_exact_counts_and_retry_after(redis_prefix) -> None:
    rl = RedisRateLimiter(REDIS_URL, redis_prefix)
    got = [rl.hit("k", 5) for _ in range(7)]
    assert [d.allowed for d in got] == [True] * 5 + [False] * 2
    assert [d.remaining for d in got] == [4, 3, 2, 1, 0, 0, 0]
    assert 59.0 < got[5].retry_after_s <= 60.0
    assert got[5].retry_after_header == 60
    assert rl.hit("other", 5).allowed
    ttl = redis.Redis.from_url(REDIS_URL).pttl(f"{redis_prefix}:k")
    assert 0 < ttl <= 61_000  # keys expire on their own
    rl.reset("k")
    assert rl.hit("k", 5).remaining == 4


def test_redis_sliding_window(redis_prefix) -> None:
    import time

    rl = RedisRateLimiter(REDIS_URL, redis_prefix, window_s=0.5)
    assert [rl.hit("k", 2).allowed for _ in range(3)] == [True, True, False]
    d = rl.hit("k", 2)
    assert 0 < d.retry_after_s <= 0.5
    time.sleep(d.retry_after_s + 0.05)
    assert rl.hit("k", 2).allowed


_WORKER = textwrap.dedent("""
    import json, sys, time
    import redis
    from facesocial.security.ratelimit import RedisRateLimiter

    url, prefix, n, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rl = RedisRateLimiter(url, prefix)
    r = redis.Redis.from_url(url)
    r.incr(prefix + ":barrier")
    deadline = time.time() + 30
    while int(r.get(prefix + ":barrier")) < int(sys.argv[5]):  # start together
        if time.time() > deadline:
            sys.exit("barrier timeout")
    allowed = 0
    for _ in range(n):
        allowed += rl.hit("shared", limit).allowed
    print(json.dumps({"allowed": allowed, "failures": rl.failures}))
""")


def test_redis_limit_is_shared_exactly_between_processes(redis_prefix) -> None:
    procs_n, hits, limit = 3, 300, 400
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, REDIS_URL, redis_prefix,
                               str(hits), str(limit), str(procs_n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(procs_n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert all(r["failures"] == 0 for r in results)
    allowed = [r["allowed"] for r in results]
    assert sum(allowed) == limit, allowed  # 900 hits, exactly 400 through
    assert sum(a > 0 for a in allowed) >= 2, allowed  # they really did share the key
    rl = RedisRateLimiter(REDIS_URL, redis_prefix)
    assert not rl.hit("shared", limit).allowed  # and this process sees the same state


def test_redis_down_degrades_to_local_limits(caplog) -> None:
    rl = RedisRateLimiter(DEAD_REDIS, "x", retry_interval_s=60)
    with caplog.at_level(logging.WARNING, logger="facesocial.security.ratelimit"):
        got = [rl.hit("k", 3) for _ in range(5)]
    assert [d.allowed for d in got] == [True, True, True, False, False]
    assert got[3].retry_after_s > 59
    assert rl.degraded and rl.failures == 1  # not retried on every hit
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "enforcing limits per process" in warnings[0].getMessage()


def test_redis_down_open_and_closed() -> None:
    open_rl = RedisRateLimiter(DEAD_REDIS, "x", on_error="open")
    assert all(open_rl.hit("k", 1).allowed for _ in range(5))
    closed = RedisRateLimiter(DEAD_REDIS, "x", on_error="closed", retry_interval_s=7)
    d = closed.hit("k", 100)
    assert not d.allowed and d.retry_after_s == 7
    with pytest.raises(ValueError):
        RedisRateLimiter(DEAD_REDIS, "x", on_error="maybe")  # type: ignore[arg-type]


def test_redis_recovers(redis_prefix, caplog) -> None:
    rl = RedisRateLimiter(REDIS_URL, redis_prefix, retry_interval_s=0)
    real = rl._script
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("simulated outage")
        return real(*args, **kwargs)

    rl._script = flaky
    with caplog.at_level(logging.INFO, logger="facesocial.security.ratelimit"):
        assert rl.hit("k", 2).allowed  # served locally
        assert rl.degraded
        d = rl.hit("k", 2)  # retry_interval 0: Redis tried again and answers
    assert not rl.degraded and d.allowed and d.remaining == 1
    assert "reachable again" in caplog.text
