"""The result cache follows its settings: off at size 0 or TTL 0, even with Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

from facesocial.api.cache import MemoryCache, RedisCache, make_cache
from facesocial.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_cache_off_with_size_or_ttl_zero_even_with_redis(tmp_path: Path) -> None:
    prefix = f"fs-cache-{uuid.uuid4().hex[:8]}"
    for off in ({"result_cache_size": 0}, {"result_cache_ttl_s": 0}):
        for redis_url in (None, REDIS_URL):
            cache = make_cache(Settings(data_dir=tmp_path, redis_url=redis_url,
                                        redis_prefix=prefix, **off))
            cache.put("k", {"faces": []})
            assert cache.get("k") is None, (off, redis_url)
    mem = make_cache(Settings(data_dir=tmp_path))
    assert isinstance(mem, MemoryCache)
    mem.put("k", {"faces": [1]})
    assert mem.get("k") == {"faces": [1]}
    shared = make_cache(Settings(data_dir=tmp_path, redis_url=REDIS_URL, redis_prefix=prefix,
                                 result_cache_ttl_s=5))
    assert isinstance(shared, RedisCache)
    shared.put("k2", {"faces": [2]})
    assert shared.get("k2") == {"faces": [2]}
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(f"{prefix}:*"):
        r.delete(key)
