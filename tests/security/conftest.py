"""Fixtures for the security tests: a fresh SQLite database, cheap argon2, a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from facesocial.db.models import Base
from facesocial.security.passwords import Passwords
from facesocial.settings import Settings

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # > 32 bytes
REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'security.db'}")
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def make_session(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def session(make_session: sessionmaker[Session]) -> Iterator[Session]:
    with make_session() as s:
        yield s


@pytest.fixture
def passwords() -> Passwords:
    """argon2id with minimal cost: fast tests, same code path."""
    return Passwords.with_parameters(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def sec_settings() -> Settings:
    return Settings(secret_key=SECRET, env="development", access_token_ttl_s=900,
                    refresh_token_ttl_s=3600)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    import redis

    prefix = f"fs-test:{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
